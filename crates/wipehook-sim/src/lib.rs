//! Simulated Microsoft tenant: an in-process network fake of the endpoints wipehook talks to.
//!
//! One actix-web server, two listeners on 127.0.0.1 (plain HTTP and HTTPS with the committed
//! test CA, see `certs/README.md`), serving the same routes:
//!
//! * Entra ID: `POST /{tenant}/oauth2/v2.0/token`, OIDC metadata (v1 and v2) and JWKS;
//! * App Service managed identity: `GET /msi/token`;
//! * Exchange Online Admin API: `POST /adminapi/beta/{tenant}/InvokeCommand`;
//! * ARM / Sentinel: incident entities and comments under `/subscriptions/...`;
//! * Microsoft Graph: `GET /v1.0/users/{id}`, and the directory reads (`applications`,
//!   `servicePrincipals`, their app role assignments);
//! * ARM role assignments, the Sentinel onboarding state and incident list.
//!
//! Who may do what is modelled (`directory.rs`): the `roles` claim of issued tokens, Graph's
//! app permissions, Azure RBAC on the workspace and Exchange RBAC. The defaults are a tenant
//! set up as wipehook's guide says; the knobs below take pieces away.
//!
//! Everything is observable and fault-injectable through [`SimTenant`]. Nothing here is used by
//! wipehook's production code paths; it exists for integration tests, `wipehook demo` and the
//! benchmark.

mod arm;
mod directory;
mod entra;
mod exchange;
mod faults;
mod graph;
mod keys;
mod shared;
mod state;
mod tls;
mod types;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;

use keys::Keys;
use shared::{Inner, Shared};
use state::State;
pub use types::{
    DEFAULT_CLIENT_ID, DEFAULT_MANAGED_IDENTITY_CLIENT_ID, DEFAULT_TENANT_ID, DefenderComment,
    DeviceSpec, ExchangeCall, Fault, FaultRule, HttpCall, InjectedFault, PrincipalKind,
    SUBSCRIPTION_ID, Service, SimComment, SimDevice, SimOptions, TokenRequest,
};

struct StopGuard {
    handle: actix_web::dev::ServerHandle,
    dir: PathBuf,
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        // The stop command is sent eagerly; the returned future only waits for completion.
        drop(self.handle.stop(false));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Handle on a running simulated tenant. Cheap to clone; the server stops when the last clone
/// is dropped.
#[derive(Clone)]
pub struct SimTenant {
    inner: Shared,
    _guard: Arc<StopGuard>,
}

impl std::fmt::Debug for SimTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTenant")
            .field("tenant_id", &self.inner.tenant_id)
            .field("http_url", &self.inner.http_url)
            .field("https_url", &self.inner.https_url)
            .finish()
    }
}

fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({
        "error": {
            "code": "NotFound",
            "message": format!("The sim has no route for {} {}", req.method(), req.path()),
        }
    }))
}

fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/msi/token", web::get().to(entra::managed_identity_token))
        .route(
            "/v1.0/security/incidents/{id}/comments",
            web::post().to(graph::post_incident_comment),
        )
        .route(
            "/v1.0/security/incidents/{id}",
            web::get().to(graph::get_incident),
        )
        .route("/v1.0/users", web::get().to(graph::list_users))
        .route("/v1.0/users/{id}", web::get().to(graph::get_user))
        .route("/v1.0/users/{id}", web::patch().to(graph::patch_user))
        .route(
            "/v1.0/users/{id}/revokeSignInSessions",
            web::post().to(graph::revoke_sessions),
        )
        .route(
            "/v1.0/identityProtection/riskyUsers/confirmCompromised",
            web::post().to(graph::confirm_compromised),
        )
        .route("/v1.0/{tail:.*}", web::route().to(graph::directory))
        .route(
            "/adminapi/beta/{tenant}/InvokeCommand",
            web::post().to(exchange::invoke_command),
        )
        .route("/{tenant}/oauth2/v2.0/token", web::post().to(entra::token))
        .route(
            "/{tenant}/.well-known/openid-configuration",
            web::get().to(entra::openid_configuration_v1),
        )
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            web::get().to(entra::openid_configuration_v2),
        )
        .route("/{tenant}/discovery/v2.0/keys", web::get().to(entra::jwks))
        .route("/{tenant}/discovery/keys", web::get().to(entra::jwks));
}

async fn fallback(req: HttpRequest, data: Shared, body: web::Bytes) -> HttpResponse {
    if req.path().starts_with("/subscriptions/") {
        arm::handle(req, data, body).await
    } else {
        not_found(req)
    }
}

impl SimTenant {
    /// Binds 127.0.0.1:0 twice (plain HTTP and HTTPS) and serves the same routes on both.
    /// Must be called inside a Tokio runtime.
    pub async fn start(opts: SimOptions) -> anyhow::Result<SimTenant> {
        let keys = Keys::load().context("loading the sim's embedded signing keys")?;
        let tls = tls::server_config().context("building the sim's TLS config")?;

        let http_lst = std::net::TcpListener::bind("127.0.0.1:0").context("binding HTTP")?;
        let https_lst = std::net::TcpListener::bind("127.0.0.1:0").context("binding HTTPS")?;
        http_lst.set_nonblocking(true)?;
        https_lst.set_nonblocking(true)?;
        let http_url = format!("http://127.0.0.1:{}", http_lst.local_addr()?.port());
        let https_url = format!("https://127.0.0.1:{}", https_lst.local_addr()?.port());

        let dir = std::env::temp_dir().join(format!("wipehook-sim-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).context("creating the sim's temp dir")?;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, tls::CA_PEM).context("writing the sim's ca.pem")?;

        let msi_header = format!("sim-identity-header-{}", uuid::Uuid::new_v4().simple());
        let inner = Inner {
            tenant_id: opts.tenant_id.clone(),
            client_id: opts.client_id.clone(),
            client_secret: opts.client_secret.clone(),
            msi_header,
            http_url,
            https_url,
            ca_file,
            keys,
            state: Mutex::new(State::new(&opts)),
        };
        let data: Shared = web::Data::new(inner);

        let app_data = data.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_data.clone())
                .app_data(web::PayloadConfig::new(8 * 1024 * 1024))
                .configure(configure)
                .default_service(web::to(fallback))
        })
        .workers(opts.workers.max(1))
        .disable_signals()
        .shutdown_timeout(1)
        .listen(http_lst)
        .context("listening on HTTP")?
        .listen_rustls_0_23(https_lst, tls)
        .context("listening on HTTPS")?
        .run();
        let handle = server.handle();
        tokio::spawn(server);

        Ok(SimTenant {
            inner: data,
            _guard: Arc::new(StopGuard { handle, dir }),
        })
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.inner.st()
    }

    /// "http://127.0.0.1:PORT"
    pub fn http_url(&self) -> String {
        self.inner.http_url.clone()
    }
    /// "https://127.0.0.1:PORT"
    pub fn https_url(&self) -> String {
        self.inner.https_url.clone()
    }
    /// PEM file of the test CA that signed the HTTPS listener's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.inner.ca_file.clone()
    }
    pub fn tenant_id(&self) -> String {
        self.inner.tenant_id.clone()
    }
    pub fn client_id(&self) -> String {
        self.inner.client_id.clone()
    }
    pub fn client_secret(&self) -> String {
        self.inner.client_secret.clone()
    }
    /// "/subscriptions/<sub>/resourceGroups/soc-rg/providers/Microsoft.OperationalInsights/workspaces/soc-ws"
    pub fn workspace_arm_id(&self) -> String {
        self.inner.workspace_arm_id()
    }
    /// workspace_arm_id + "/providers/Microsoft.SecurityInsights/Incidents/" + name
    pub fn incident_arm_id(&self, incident_name: &str) -> String {
        format!(
            "{}/providers/Microsoft.SecurityInsights/Incidents/{incident_name}",
            self.inner.workspace_arm_id()
        )
    }
    /// App Service style `IDENTITY_ENDPOINT`: http_url + "/msi/token".
    pub fn managed_identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.inner.http_url)
    }
    /// App Service style `IDENTITY_HEADER` (expected `x-identity-header` value).
    pub fn managed_identity_header(&self) -> String {
        self.inner.msi_header.clone()
    }

    // --- inbound tokens -------------------------------------------------------------------

    /// RS256 with the current signing key (header kid set); claims given verbatim.
    pub fn sign_token(&self, claims: serde_json::Value) -> String {
        let rotated = self.st().rotated;
        self.inner.keys.sign(&claims, rotated)
    }
    /// Signs with signing2.key under a kid that is never in the JWKS
    /// (`keys::UNKNOWN_KID`).
    pub fn sign_token_with_unknown_key(&self, claims: serde_json::Value) -> String {
        self.inner.keys.sign_unknown(&claims)
    }
    /// Publish OpenID metadata and keys for another tenant id too (an MSSP's
    /// customers): tokens from `playbook_token_in` verify for it. Identity
    /// only: it has no directory, mailboxes or workspace of its own.
    pub fn add_foreign_tenant(&self, tenant_id: &str) {
        self.st().foreign_tenants.push(tenant_id.to_string());
    }
    /// Serve another tenant from this sim too (an MSSP's customer, for the
    /// benchmark of tenants storming at once): Entra issues tokens in it and
    /// publishes its keys (as `add_foreign_tenant`), Exchange answers its
    /// `/adminapi/beta/{tenant}/InvokeCommand` under its own concurrency cap,
    /// and ARM serves its own workspace `workspace_name` (in the sim's
    /// resource group), where wipehook's identities are Microsoft Sentinel
    /// Responders. Users, mailboxes and incidents share the sim's one
    /// namespace: give each tenant its own names. Returns the workspace's ARM id.
    pub fn host_tenant(
        &self,
        tenant_id: &str,
        workspace_name: &str,
        exchange_cap: Option<usize>,
    ) -> String {
        let ws = format!(
            "/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/soc-rg/providers/Microsoft.OperationalInsights/workspaces/{workspace_name}"
        );
        let principals = self.wipehook_principals();
        let mut st = self.st();
        st.foreign_tenants.push(tenant_id.to_string());
        st.hosted.push(state::HostedTenant {
            tenant_id: tenant_id.to_string(),
            workspace: ws.clone(),
            cap: exchange_cap,
            in_flight: 0,
            next_throttle_is_message: false,
        });
        for p in principals {
            st.dir.role_assignments.push(directory::RoleAssignment {
                name: uuid::Uuid::new_v4().to_string(),
                scope: ws.clone(),
                role_definition: directory::SENTINEL_RESPONDER.into(),
                principal_id: p,
            });
        }
        ws
    }
    /// An incident's ARM id in a given workspace (`host_tenant`'s).
    pub fn incident_arm_id_in(&self, workspace_arm_id: &str, incident_name: &str) -> String {
        format!("{workspace_arm_id}/providers/Microsoft.SecurityInsights/Incidents/{incident_name}")
    }
    /// A realistic v1 app-only token as a Logic App's managed identity presents it.
    pub fn playbook_token(&self, audience: &str, caller_oid: &str, roles: &[&str]) -> String {
        let tid = self.inner.tenant_id.clone();
        self.playbook_token_in(&tid, audience, caller_oid, roles)
    }
    /// `playbook_token`, issued in another tenant (`add_foreign_tenant`).
    pub fn playbook_token_in(
        &self,
        tid: &str,
        audience: &str,
        caller_oid: &str,
        roles: &[&str],
    ) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let appid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, caller_oid.as_bytes());
        let mut claims = serde_json::json!({
            "aud": audience,
            "iss": format!("https://sts.windows.net/{tid}/"),
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + 3600,
            "aio": "k2BgYGiZ3sim",
            "appid": appid.to_string(),
            "appidacr": "2",
            "idp": format!("https://sts.windows.net/{tid}/"),
            "idtyp": "app",
            "oid": caller_oid,
            "rh": "0.AAAAsim.",
            "sub": caller_oid,
            "tid": tid,
            "uti": uuid::Uuid::new_v4().simple().to_string(),
            "ver": "1.0",
            "xms_mirid": format!(
                "/subscriptions/{SUBSCRIPTION_ID}/resourcegroups/soc-rg/providers/Microsoft.Logic/workflows/wipe-playbook"
            ),
        });
        if !roles.is_empty() {
            claims["roles"] = serde_json::json!(roles);
        }
        self.sign_token(claims)
    }
    /// Afterwards the JWKS publishes signing2 too and `sign_token` (and issued tokens) use it.
    pub fn rotate_signing_key(&self) {
        self.st().rotated = true;
    }
    /// false -> OIDC metadata and JWKS answer 503.
    pub fn set_oidc_available(&self, up: bool) {
        self.st().oidc_up = up;
    }
    /// Number of JWKS requests received (including those answered 503).
    pub fn oidc_fetch_count(&self) -> usize {
        self.st().jwks_fetches
    }

    // --- directory and mailboxes -----------------------------------------------------------

    /// Adds a Graph user and its mailbox.
    pub fn add_user(&self, upn: &str, aad_object_id: &str) {
        self.st().add_user(upn, aad_object_id);
    }
    /// Adds an SMTP proxy address to the mailbox of `upn` (created if missing).
    pub fn add_proxy_address(&self, upn: &str, address: &str) {
        let mut st = self.st();
        let u = st.user_mut(upn);
        let a = address.trim().to_ascii_lowercase();
        if !u.proxies.contains(&a) {
            u.proxies.push(a);
        }
    }
    /// Makes `address` the primary SMTP address of the mailbox of `upn`; the
    /// UPN stays an address of it.
    pub fn set_primary_smtp(&self, upn: &str, address: &str) {
        let mut st = self.st();
        let u = st.user_mut(upn);
        let old = std::mem::replace(&mut u.primary_smtp, address.trim().to_ascii_lowercase());
        if !u.proxies.contains(&old) {
            u.proxies.push(old);
        }
    }
    pub fn set_display_name(&self, upn: &str, name: &str) {
        self.st().user_mut(upn).display_name = name.to_string();
    }
    /// Sets the mailbox alias (also its Name); devices added later carry it in their Identity.
    pub fn set_alias(&self, upn: &str, alias: &str) {
        self.st().user_mut(upn).alias = alias.trim().to_ascii_lowercase();
    }
    /// Adds a device to the mailbox of `upn` (the mailbox is created if missing); returns its Guid.
    pub fn add_device(&self, upn: &str, dev: DeviceSpec) -> String {
        self.st().add_device(upn, dev)
    }
    /// Entities (array in ARM shape) returned by `POST {incident}/entities`.
    pub fn add_incident(&self, incident_name: &str, entities: serde_json::Value) {
        self.st().add_incident(incident_name, entities);
    }

    /// Adds an alert to the incident (created if missing), as ARM lists it:
    /// a `SecurityAlert` entity with `systemAlertId`, `alertDisplayName`, `productName`.
    pub fn add_incident_alert(
        &self,
        incident_name: &str,
        system_alert_id: &str,
        name: &str,
        product: &str,
    ) {
        let alert = serde_json::json!({
            "id": format!("{}/providers/Microsoft.SecurityInsights/Entities/{system_alert_id}", self.inner.workspace_arm_id()),
            "name": system_alert_id,
            "type": "Microsoft.SecurityInsights/Entities",
            "kind": "SecurityAlert",
            "properties": {
                "systemAlertId": system_alert_id,
                "alertDisplayName": name,
                "productName": product,
                "severity": "High",
                "status": "New",
                "friendlyName": name,
            }
        });
        self.st()
            .incident_mut_or_create(incident_name)
            .alerts
            .push(alert);
    }

    // --- observation -----------------------------------------------------------------------

    pub fn exchange_calls(&self) -> Vec<ExchangeCall> {
        self.st().exchange_calls.clone()
    }
    /// Current comments on the incident (one per comment id), in creation order.
    pub fn comments(&self, incident_arm_id: &str) -> Vec<SimComment> {
        let Some(name) = arm::incident_name_from_id(&self.inner, incident_arm_id) else {
            return Vec::new();
        };
        let st = self.st();
        st.incident(&name)
            .map(|i| {
                i.comments
                    .iter()
                    .map(|c| SimComment {
                        id: c.id.clone(),
                        message: c.message.clone(),
                        first_message: c.first_message.clone(),
                        puts: c.puts,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    /// The incident as an analyst in the Defender portal reads it: every
    /// Sentinel comment as it was first written (edits are not shown there),
    /// then the comments posted to the Defender incident through Graph.
    pub fn defender_view(&self, incident_arm_id: &str) -> Vec<DefenderComment> {
        let Some(name) = arm::incident_name_from_id(&self.inner, incident_arm_id) else {
            return Vec::new();
        };
        let st = self.st();
        st.incident(&name)
            .map(|i| {
                i.comments
                    .iter()
                    .map(|c| DefenderComment {
                        source: "sentinel",
                        text: c.first_message.clone(),
                    })
                    .chain(i.defender_comments.iter().map(|t| DefenderComment {
                        source: "graph",
                        text: t.clone(),
                    }))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Gives the incident a Defender incident id (its `providerIncidentId`).
    pub fn set_defender_id(&self, incident_name: &str, id: &str) {
        self.st().incident_mut_or_create(incident_name).defender_id = Some(id.to_string());
    }
    /// Adds `n` comments by someone else (an analyst) to the incident.
    pub fn add_analyst_comments(&self, incident_name: &str, n: usize) {
        let now = time::OffsetDateTime::now_utc();
        let mut st = self.st();
        let inc = st.incident_mut_or_create(incident_name);
        for i in 0..n {
            inc.comments.push(crate::state::Comment {
                id: uuid::Uuid::new_v4().to_string(),
                message: format!("analyst note {i}"),
                first_message: format!("analyst note {i}"),
                puts: 1,
                created: now,
                modified: now,
                etag: uuid::Uuid::new_v4().to_string(),
                author_oid: "analyst".into(),
            });
        }
    }
    /// Total comment PUTs received (including rejected ones).
    pub fn comment_puts(&self) -> usize {
        self.st().comment_puts
    }
    pub fn device(&self, guid: &str) -> Option<SimDevice> {
        self.st().device_by_guid(guid).cloned()
    }
    /// Change how a device appears in `Get-MobileDeviceStatistics` (acknowledgement fields,
    /// Guid), or what Exchange remembers of its wipe.
    pub fn update_device(&self, guid: &str, f: impl FnOnce(&mut SimDevice)) {
        let mut st = self.st();
        if let Some(d) = st
            .devices
            .iter_mut()
            .find(|d| d.guid.eq_ignore_ascii_case(guid.trim()))
        {
            f(d);
        }
    }
    /// The phone connects: a pending wipe is sent and acknowledged now,
    /// unless Exchange refuses the phone (its device id is blocked for the
    /// mailbox, or the account's sessions were revoked or the account
    /// disabled: Continuous Access Evaluation, applied at once here).
    pub fn sync_device(&self, guid: &str) {
        self.st().sync_device(guid);
    }
    /// Syncs Exchange refused so far.
    pub fn refused_syncs(&self) -> usize {
        self.st().refused_syncs
    }
    /// The account as Graph would show it: (accountEnabled, sessions
    /// revoked, confirmed compromised).
    pub fn account(&self, upn: &str) -> Option<(bool, bool, bool)> {
        self.st()
            .users
            .iter()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
            .map(|u| {
                (
                    u.enabled,
                    u.sessions_revoked_at.is_some(),
                    u.confirmed_compromised,
                )
            })
    }
    /// Set `accountEnabled` (an administrator, or Defender's attack disruption).
    pub fn set_account_enabled(&self, upn: &str, enabled: bool) {
        if let Some(u) = self
            .st()
            .users
            .iter_mut()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
        {
            u.enabled = enabled;
        }
    }
    /// The account is synchronised from on-premises AD.
    pub fn set_on_premises_synced(&self, upn: &str) {
        if let Some(u) = self
            .st()
            .users
            .iter_mut()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
        {
            u.on_premises_synced = true;
        }
    }
    /// Whether the tenant has Entra ID P2 (default: yes).
    pub fn set_p2(&self, p2: bool) {
        self.st().p2 = p2;
    }
    /// `CASMailbox.ActiveSyncBlockedDeviceIDs` of a mailbox.
    pub fn blocked_device_ids(&self, upn: &str) -> Vec<String> {
        self.st()
            .users
            .iter()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
            .map(|u| u.blocked_device_ids.clone())
            .unwrap_or_default()
    }
    /// Set `ActiveSyncBlockedDeviceIDs` directly (an administrator's own blocks).
    pub fn set_blocked_device_ids(&self, upn: &str, ids: &[&str]) {
        if let Some(u) = self
            .st()
            .users
            .iter_mut()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
        {
            u.blocked_device_ids = ids.iter().map(|s| s.to_string()).collect();
        }
    }
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.st().token_requests.clone()
    }
    /// Throttle responses sent (concurrency cap and injected Throttle429/ConcurrencyMessage).
    pub fn throttled_count(&self) -> usize {
        self.st().throttled
    }

    // --- directory and permissions ---------------------------------------------------------

    /// Registers wipehook's inbound API: an app registration with this App ID URI exposing
    /// these app roles (for applications), and its service principal (assignment required).
    /// Returns its application (client) id.
    pub fn register_api(&self, identifier_uri: &str, roles: &[&str]) -> String {
        use directory::{AppRole, Application, ServicePrincipal};
        let v5 =
            |s: String| uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, s.as_bytes()).to_string();
        let app_id = v5(format!("appid:{identifier_uri}"));
        let app_roles: Vec<AppRole> = roles
            .iter()
            .map(|r| AppRole {
                id: v5(format!("role:{identifier_uri}:{r}")),
                value: r.to_string(),
                allowed_member_types: vec!["Application".into()],
                is_enabled: true,
            })
            .collect();
        let mut st = self.st();
        st.dir.applications.retain(|a| a.app_id != app_id);
        st.dir.service_principals.retain(|s| s.app_id != app_id);
        st.dir.applications.push(Application {
            object_id: v5(format!("app:{identifier_uri}")),
            app_id: app_id.clone(),
            display_name: "wipehook".into(),
            identifier_uris: vec![identifier_uri.to_string()],
            app_roles: app_roles.clone(),
            token_version: None,
        });
        st.dir.service_principals.push(ServicePrincipal {
            object_id: v5(format!("sp:{identifier_uri}")),
            app_id: app_id.clone(),
            display_name: "wipehook".into(),
            sp_type: "Application".into(),
            app_roles,
            assignment_required: true,
        });
        app_id
    }
    /// `api.requestedAccessTokenVersion` of the registered APIs (None: v1 tokens).
    pub fn set_api_token_version(&self, version: Option<i64>) {
        for a in &mut self.st().dir.applications {
            a.token_version = version;
        }
    }
    /// Adds a calling identity with `object_id` (a playbook's managed identity, or an app
    /// registration's service principal) holding app role `role` of the registered API.
    pub fn add_caller(&self, object_id: &str, name: &str, kind: PrincipalKind, role: Option<&str>) {
        let app_id =
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, object_id.as_bytes()).to_string();
        let mut st = self.st();
        st.dir
            .service_principals
            .retain(|s| !s.object_id.eq_ignore_ascii_case(object_id));
        st.dir.service_principals.push(directory::ServicePrincipal {
            object_id: object_id.to_ascii_lowercase(),
            app_id,
            display_name: name.to_string(),
            sp_type: match kind {
                PrincipalKind::ManagedIdentity => "ManagedIdentity".into(),
                PrincipalKind::Application => "Application".into(),
            },
            app_roles: vec![],
            assignment_required: false,
        });
        st.dir
            .app_role_assignments
            .retain(|a| !a.principal_id.eq_ignore_ascii_case(object_id));
        if let Some(role) = role {
            let api = st
                .dir
                .service_principals
                .iter()
                .find(|s| s.assignment_required && s.app_roles.iter().any(|r| r.value == role))
                .map(|s| {
                    let id = s
                        .app_roles
                        .iter()
                        .find(|r| r.value == role)
                        .map(|r| r.id.clone());
                    (s.object_id.clone(), id.unwrap_or_default())
                });
            if let Some((resource, role_id)) = api {
                st.dir
                    .grant(&object_id.to_ascii_lowercase(), &resource, &role_id);
            }
        }
    }
    /// Object ids of wipehook's own service principals: the app registration whose secret
    /// the sim accepts, and the default managed identity.
    pub fn wipehook_principals(&self) -> Vec<String> {
        [DEFAULT_CLIENT_ID, DEFAULT_MANAGED_IDENTITY_CLIENT_ID]
            .iter()
            .map(|a| directory::principal_of(a))
            .collect()
    }
    /// Takes app role `value` (`Exchange.ManageAsApp`, `User.Read.All`,
    /// `Application.Read.All`) away from wipehook's identities: later tokens lack it.
    pub fn revoke_app_role(&self, value: &str) {
        let principals = self.wipehook_principals();
        let mut st = self.st();
        for p in &principals {
            st.dir.revoke(p, value);
        }
    }
    /// Takes the Azure role `role_name` (e.g. "Microsoft Sentinel Responder") away from
    /// wipehook's identities, at every scope.
    pub fn revoke_azure_role(&self, role_name: &str) {
        let principals = self.wipehook_principals();
        let Some(id) = directory::AZURE_ROLES
            .iter()
            .find(|r| r.1.eq_ignore_ascii_case(role_name))
            .map(|r| r.0)
        else {
            return;
        };
        self.st().dir.role_assignments.retain(|a| {
            !(principals
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&a.principal_id))
                && a.role_definition.eq_ignore_ascii_case(id))
        });
    }
    /// Gives wipehook's identities the Azure role `role_name` at `scope`.
    pub fn grant_azure_role(&self, role_name: &str, scope: &str) {
        let Some(id) = directory::AZURE_ROLES
            .iter()
            .find(|r| r.1.eq_ignore_ascii_case(role_name))
            .map(|r| r.0)
        else {
            return;
        };
        let principals = self.wipehook_principals();
        let mut st = self.st();
        for p in principals {
            st.dir.role_assignments.push(directory::RoleAssignment {
                name: uuid::Uuid::new_v4().to_string(),
                scope: scope.to_string(),
                role_definition: id.to_string(),
                principal_id: p,
            });
        }
    }
    /// Removes `cmdlet` from the Exchange management role the setup guide builds
    /// ("wipehook Mobile Wipe"): Exchange then no longer runs it for wipehook.
    pub fn remove_exchange_role_entry(&self, cmdlet: &str) {
        for r in &mut self.st().dir.exo_roles {
            if r.name == directory::WIPE_ROLE {
                r.entries.retain(|(c, _)| !c.eq_ignore_ascii_case(cmdlet));
            }
        }
    }
    /// Removes the read-only role that lets wipehook read its own Exchange RBAC
    /// (`Get-ManagementRoleAssignment`, `Get-ManagementRoleEntry`).
    pub fn remove_exchange_rbac_read(&self) {
        self.st()
            .dir
            .exo_assignments
            .retain(|a| a.role != directory::RBAC_READ_ROLE);
    }
    /// From now on Exchange names the field `from` of `cmdlet`'s rows `to` (a changed API).
    pub fn rename_exchange_field(&self, cmdlet: &str, from: &str, to: &str) {
        self.st().renamed_fields.push((
            cmdlet.to_ascii_lowercase(),
            from.to_string(),
            to.to_string(),
        ));
    }
    /// Undo every `rename_exchange_field`.
    pub fn restore_exchange_fields(&self) {
        self.st().renamed_fields.clear();
    }
    /// `cloud_instance_name` of the tenant's OpenID configuration ("microsoftonline.com" in
    /// the public cloud; another value: the tenant lives in another cloud).
    pub fn set_cloud_instance_name(&self, name: &str) {
        self.st().cloud_instance_name = name.to_string();
    }
    /// Entra's `Date` header runs this many seconds ahead (negative: behind).
    pub fn set_clock_offset(&self, secs: i64) {
        self.st().clock_offset_secs = secs;
    }
    /// Every ARM request received, in order.
    pub fn arm_calls(&self) -> Vec<HttpCall> {
        self.st().arm_calls.clone()
    }
    /// Every Graph request received, in order.
    pub fn graph_calls(&self) -> Vec<HttpCall> {
        self.st().graph_calls.clone()
    }

    // --- fault injection -------------------------------------------------------------------

    pub fn fail_next_exchange(&self, n: usize, fault: Fault) {
        let mut st = self.st();
        for _ in 0..n {
            st.exchange_faults.push_back(fault.clone());
        }
    }
    /// Fail the next `n` calls of one cmdlet (others answer normally).
    pub fn fail_next_cmdlet(&self, cmdlet: &str, n: usize, fault: Fault) {
        let mut st = self.st();
        for _ in 0..n {
            st.cmdlet_faults
                .push_back((cmdlet.to_string(), fault.clone()));
        }
    }
    pub fn fail_next_arm(&self, n: usize, status: u16) {
        let mut st = self.st();
        for _ in 0..n {
            st.arm_faults.push_back(status);
        }
    }
    pub fn fail_next_graph(&self, n: usize, status: u16) {
        let mut st = self.st();
        for _ in 0..n {
            st.graph_faults.push_back(status);
        }
    }
    pub fn set_latency(&self, d: Duration) {
        self.st().latency = d;
    }

    /// The seed of every [`FaultRule`]'s draws (0 until set). Setting it
    /// restarts the draws: the same seed and rules give the same faults.
    pub fn set_fault_seed(&self, seed: u64) {
        let mut st = self.st();
        st.fault_seed = seed;
        st.fault_counts.clear();
    }
    /// Add a seeded fault rule; returns its id (for [`Self::remove_fault_rule`]).
    pub fn add_fault_rule(&self, rule: FaultRule) -> usize {
        let mut st = self.st();
        st.next_fault_rule += 1;
        let id = st.next_fault_rule;
        st.fault_rules.push((id, rule, 0));
        id
    }
    pub fn remove_fault_rule(&self, id: usize) {
        self.st().fault_rules.retain(|(i, _, _)| *i != id);
    }
    pub fn clear_fault_rules(&self) {
        self.st().fault_rules.clear();
    }
    /// Every fault the rules injected, in order.
    pub fn injected_faults(&self) -> Vec<InjectedFault> {
        self.st().fault_log.clone()
    }
}
