//! Inbound: the tenant's OpenID configuration and keys, the clock against
//! the issuer's, the app registration behind the configured audiences and
//! the playbooks' identities (Graph reads; they need Application.Read.All).

use super::Check;
use super::outbound::{Clients, DOCTOR_ROLE};
use crate::auth::Discovery;
use crate::config::{Config, Tenant, cloud_instance_names};
use crate::graph::{AppRegistration, AppRoleDef};
use crate::identity::TokenProvider;
use crate::upstream::Lookup;

/// The app registration the audiences name, and its service principal.
pub struct ApiApp {
    pub app_id: String,
    pub sp: Option<uuid::Uuid>,
    pub roles: Vec<AppRoleDef>,
}

pub async fn openid(
    config: &Config,
    clients: &Clients,
    tenant: &Tenant,
    checks: &mut Vec<Check>,
) -> Option<Discovery> {
    let authority = &config.cloud.authority_host;
    let c = Check::new(
        "inbound.openid",
        "the tenant's OpenID configuration and signing keys are reachable",
    )
    .tenant(&tenant.id)
    .checked(format!(
        "GET {authority}/{}/.well-known/openid-configuration, its v2.0 twin, and their key sets",
        tenant.id
    ));
    let d = match clients.auth.discover(&tenant.id).await {
        Ok(d) => d,
        Err(e) => {
            checks.push(c.fail(
                e,
                format!(
                    "wipehook cannot verify any playbook token without these: check that \
                     {authority} is reachable from here (proxy, firewall, DNS), that the tenant id is \
                     right, and cloud.authority_host for a sovereign cloud; by hand: \
                     curl -s {authority}/{}/.well-known/openid-configuration",
                    tenant.id
                ),
            ));
            return None;
        }
    };
    let saw = format!(
        "issuers {}; {} signing key(s); cloud_instance_name {}",
        d.issuers.join(", "),
        d.keys,
        d.cloud_instance_name.as_deref().unwrap_or("(none)")
    );
    let expected = cloud_instance_names(&config.cloud.name);
    match &d.cloud_instance_name {
        Some(found) if !expected.is_empty() && !expected.contains(&found.as_str()) => {
            let other: Vec<&str> = ["public", "usgov", "usgov-dod", "china"]
                .into_iter()
                .filter(|c| cloud_instance_names(c).contains(&found.as_str()))
                .collect();
            checks.push(c.fail(
                format!(
                    "{saw}: the tenant lives in another cloud than cloud.name = '{}' (expected {})",
                    config.cloud.name,
                    expected.join(" or ")
                ),
                format!(
                    "set cloud.name = \"{}\" and drop per-URL overrides of the other cloud \
                     (docs/config.example.toml, [cloud]; docs/setup.md, Notes: Sovereign clouds)",
                    other.first().copied().unwrap_or("<the tenant's cloud>")
                ),
            ));
        }
        _ => checks.push(c.pass(saw)),
    }
    Some(d)
}

pub fn clock(config: &Config, tenant: &Tenant, d: Option<&Discovery>) -> Check {
    let leeway = config.settings.inbound.leeway_secs as f64;
    let c = Check::new(
        "clock.skew",
        "this machine's clock agrees with the token issuer's",
    )
    .tenant(&tenant.id)
    .checked("the Date header of the OpenID configuration answer against this clock");
    let fix = format!(
        "synchronise this machine's clock (NTP: `timedatectl set-ntp true`, or the platform's time \
         service): tokens are checked against it with inbound.leeway_secs = {leeway} s, and task \
         leases compare wall-clock times across replicas"
    );
    match d.and_then(|d| d.clock_skew_secs) {
        None => c.skip("no Date header to compare with (or the issuer was not reachable)"),
        Some(s) if s.abs() > leeway => c.fail(
            format!("{s:+.0} s off: beyond the {leeway} s tokens are allowed"),
            fix,
        ),
        Some(s) if s.abs() > 10.0 => c.warn(format!("{s:+.0} s off"), fix),
        Some(s) => c.pass(format!(
            "{s:+.1} s off (the Date header has 1 s resolution)"
        )),
    }
}

fn graph_denied_fix(what: &str, by_hand: &str) -> String {
    format!(
        "wipehook's identity may not read {what}: give it the read-only Graph app role {} \
         (role id {}; the same az rest line as docs/setup.md step 5, with that role id) to let the \
         doctor check this, or check by hand: {by_hand}",
        DOCTOR_ROLE.0, DOCTOR_ROLE.1
    )
}

/// Each configured audience must be an app registration's App ID URI (or
/// client id) that exposes the configured app roles to applications.
pub async fn audiences(
    config: &Config,
    clients: &Clients,
    tenant: &Tenant,
    tokens: Option<&TokenProvider>,
    checks: &mut Vec<Check>,
) -> Option<ApiApp> {
    let inbound = &config.settings.inbound;
    let roles: Vec<&String> = inbound
        .required_role
        .iter()
        .chain(inbound.approver_role.iter())
        .collect();
    let base = |aud: &str| {
        Check::new(
            "inbound.audience",
            "the audience is an app registration exposing the configured app roles",
        )
        .tenant(&tenant.id)
        .subject(aud.to_string())
    };
    if inbound.audiences.is_empty() {
        checks.push(base("(none)").checked("inbound.audiences").fail(
            "inbound.audiences is empty: every playbook call is refused",
            "put the App ID URI of wipehook's app registration (api://<client-id>) in \
             inbound.audiences, exactly as the playbooks' WipehookAudience (docs/setup.md, step 1 and 6.1)",
        ));
        return None;
    }
    let Some(tokens) = tokens else {
        for aud in &inbound.audiences {
            checks.push(
                base(aud)
                    .checked("Graph applications")
                    .skip("no Graph token: the tenant's credential cannot be built (see token.*)"),
            );
        }
        return None;
    };
    let mut api: Option<ApiApp> = None;
    for aud in &inbound.audiences {
        let by_id = uuid::Uuid::parse_str(aud).ok();
        let (how, found) = match &by_id {
            Some(id) => (
                format!("GET /v1.0/applications(appId='{id}')"),
                clients.graph.application_by_app_id(tokens, id).await,
            ),
            None => (
                format!("GET /v1.0/applications?$filter=identifierUris/any(x:x eq '{aud}')"),
                clients.graph.application_by_uri(tokens, aud).await,
            ),
        };
        let c = base(aud).checked(how);
        let app = match found {
            Err(e) => {
                checks.push(c.fail(
                    e.reason().to_string(),
                    "Graph did not answer; run the doctor again",
                ));
                continue;
            }
            Ok(Lookup::Denied(m)) => {
                checks.push(c.warn(
                    m,
                    graph_denied_fix(
                        "app registrations",
                        "the `az ad app show` check of docs/setup.md step 1",
                    ),
                ));
                continue;
            }
            Ok(Lookup::Missing(m)) => {
                let near = if aud.ends_with('/') {
                    aud.trim_end_matches('/').to_string()
                } else {
                    format!("{aud}/")
                };
                checks.push(c.fail(
                    format!("no app registration answers to {aud} ({m})"),
                    format!(
                        "the audience must be exactly the App ID URI of wipehook's app registration (or \
                         its client id), as the playbooks request it (their WipehookAudience, trailing \
                         slash included; `{near}` is a different audience). See it with \
                         `az ad app list --display-name wipehook --query \"[].{{uri:identifierUris, id:appId}}\"`, \
                         then correct inbound.audiences (docs/setup.md, step 1 and 6.1)"
                    ),
                ));
                continue;
            }
            Ok(Lookup::Found(app)) => app,
        };
        checks.push(judge_app(config, &app, &roles, c));
        if api.is_none() {
            let sp = match clients
                .graph
                .service_principal_by_app_id(tokens, &app.app_id)
                .await
            {
                Ok(Lookup::Found(sp)) => uuid::Uuid::parse_str(&sp.object_id).ok(),
                _ => None,
            };
            api = Some(ApiApp {
                app_id: app.app_id.clone(),
                sp,
                roles: app.app_roles.clone(),
            });
        }
    }
    api
}

fn judge_app(config: &Config, app: &AppRegistration, roles: &[&String], c: Check) -> Check {
    let listed: Vec<String> = app
        .app_roles
        .iter()
        .map(|r| {
            let mut s = r.value.clone();
            if !r.for_applications {
                s.push_str(" (not for applications)");
            }
            if !r.enabled {
                s.push_str(" (disabled)");
            }
            s
        })
        .collect();
    let saw = format!(
        "app registration '{}' (client id {}), App ID URIs {}; app roles {}; tokens v{}",
        app.display_name,
        app.app_id,
        app.identifier_uris.join(", "),
        if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        },
        app.token_version.unwrap_or(1)
    );
    let unusable: Vec<&str> = roles
        .iter()
        .filter(|want| {
            !app.app_roles
                .iter()
                .any(|r| r.value == ***want && r.enabled && r.for_applications)
        })
        .map(|r| r.as_str())
        .collect();
    if !unusable.is_empty() {
        return c.fail(
            format!("{saw}: no enabled app role for applications named {}", unusable.join(", ")),
            format!(
                "add the app role(s) {} to the registration (Entra admin center > App registrations > \
                 {} > App roles > Create app role: Allowed member types Applications, Value as \
                 configured), or run the PowerShell of docs/setup.md step 1; the values must match \
                 inbound.required_role and inbound.approver_role exactly",
                unusable.join(", "),
                app.display_name
            ),
        );
    }
    let audiences = &config.settings.inbound.audiences;
    if app.token_version == Some(2)
        && !audiences
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&app.app_id))
    {
        return c.fail(
            format!("{saw}: v2 tokens carry the client id as their audience, which inbound.audiences lacks"),
            format!(
                "add \"{}\" to inbound.audiences, or set the registration's api.requestedAccessTokenVersion \
                 back to null (docs/setup.md, step 1)",
                app.app_id
            ),
        );
    }
    c.pass(saw)
}

/// Each allowed caller: a service principal holding one of the configured
/// app roles on the API, and a managed identity (a warning otherwise).
pub async fn callers(
    config: &Config,
    clients: &Clients,
    tenant: &Tenant,
    tokens: Option<&TokenProvider>,
    api: Option<&ApiApp>,
    checks: &mut Vec<Check>,
) {
    let inbound = &config.settings.inbound;
    let wanted: Vec<&String> = inbound
        .required_role
        .iter()
        .chain(inbound.approver_role.iter())
        .collect();
    let base = |oid: &str| {
        Check::new(
            "inbound.caller",
            "the caller is a managed identity holding a configured app role",
        )
        .tenant(&tenant.id)
        .subject(oid.to_string())
    };
    if tenant.allowed_callers.is_empty() {
        checks.push(base("(none)").checked("tenants[].allowed_callers").fail(
            "no allowed caller for this tenant (tenants[].allowed_callers, or inbound.allowed_callers with one tenant): every playbook call is refused",
            "list the object ids of the playbooks' managed identities (template output \
             PlaybookPrincipalId; docs/setup.md, step 2 and 6.1)",
        ));
        return;
    }
    let Some(tokens) = tokens else {
        for oid in &tenant.allowed_callers {
            checks.push(
                base(oid)
                    .checked("Graph servicePrincipals")
                    .skip("no Graph token: the tenant's credential cannot be built (see token.*)"),
            );
        }
        return;
    };
    let grants = match api.and_then(|a| a.sp) {
        Some(sp) => Some(clients.graph.role_grants_on(tokens, &sp).await),
        None => None,
    };
    for oid in &tenant.allowed_callers {
        let Ok(id) = uuid::Uuid::parse_str(oid) else {
            checks.push(base(oid).checked("tenants[].allowed_callers").fail(
                format!("'{oid}' is not an object id"),
                "use the managed identity's object (principal) id, a GUID",
            ));
            continue;
        };
        let c = base(oid).checked(format!(
            "GET /v1.0/servicePrincipals/{id}, and who holds app roles of the API's service principal (appRoleAssignedTo)"
        ));
        let sp = match clients.graph.service_principal(tokens, &id).await {
            Err(e) => {
                checks.push(c.fail(
                    e.reason().to_string(),
                    "Graph did not answer; run the doctor again",
                ));
                continue;
            }
            Ok(Lookup::Denied(m)) => {
                checks.push(c.warn(
                    m,
                    graph_denied_fix(
                        "service principals",
                        "the Get-MgServicePrincipalAppRoleAssignedTo check of docs/setup.md step 2",
                    ),
                ));
                continue;
            }
            Ok(Lookup::Missing(_)) => {
                checks.push(c.fail(
                    format!("no service principal has the object id {oid}"),
                    "allowed_callers takes the object (principal) id of the playbook's managed identity, \
                     not its client id or the Logic App's resource id: `az resource show -g <playbook-rg> \
                     -n <playbook> --resource-type Microsoft.Logic/workflows --query identity.principalId -o tsv` \
                     (or the template output PlaybookPrincipalId); docs/setup.md, step 2",
                ));
                continue;
            }
            Ok(Lookup::Found(sp)) => sp,
        };
        let kind = if sp.kind == "ManagedIdentity" {
            "managed identity".to_string()
        } else {
            format!("service principal of type {}", sp.kind)
        };
        let Some(api) = api else {
            checks.push(c.warn(
                format!("'{}' ({kind}); its app role cannot be checked: no audience resolved to an app registration", sp.display_name),
                "fix inbound.audience first",
            ));
            continue;
        };
        let held: Vec<String> = match &grants {
            Some(Ok(Lookup::Found(g))) => g
                .iter()
                .filter(|g| g.principal_id.eq_ignore_ascii_case(&sp.object_id))
                .filter_map(|g| api.roles.iter().find(|r| r.id == g.app_role_id))
                .map(|r| r.value.clone())
                .collect(),
            Some(Ok(Lookup::Denied(m))) | Some(Ok(Lookup::Missing(m))) => {
                checks.push(c.warn(
                    format!(
                        "'{}' ({kind}); its app roles cannot be read: {m}",
                        sp.display_name
                    ),
                    graph_denied_fix("app role assignments", "docs/setup.md step 2's check"),
                ));
                continue;
            }
            Some(Err(e)) => {
                checks.push(c.fail(
                    e.reason().to_string(),
                    "Graph did not answer; run the doctor again",
                ));
                continue;
            }
            None => {
                checks.push(c.warn(
                    format!(
                        "'{}' ({kind}); the API's service principal was not found",
                        sp.display_name
                    ),
                    format!(
                        "the app registration {} has no service principal in this tenant: \
                         `az ad sp create --id {}` (docs/setup.md, step 1)",
                        api.app_id, api.app_id
                    ),
                ));
                continue;
            }
        };
        let holds: Vec<&String> = wanted
            .iter()
            .copied()
            .filter(|w| held.contains(w))
            .collect();
        let saw = format!(
            "'{}' ({kind}) holds {}",
            sp.display_name,
            if held.is_empty() {
                "no app role of the API".to_string()
            } else {
                held.join(", ")
            }
        );
        if holds.is_empty() && !wanted.is_empty() {
            let role = wanted[0];
            let role_id = api
                .roles
                .iter()
                .find(|r| &r.value == role)
                .map(|r| r.id.clone())
                .unwrap_or_else(|| "<app role id>".into());
            let resource = api
                .sp
                .map(|s| s.hyphenated().to_string())
                .unwrap_or_default();
            checks.push(c.fail(
                format!("{saw}: its tokens will be refused (\"token lacks the app role\")"),
                format!(
                    "assign it {} (or {} for the approve/cancel playbooks; docs/setup.md, step 2):\n\
                     az rest --method POST --uri \"https://graph.microsoft.com/v1.0/servicePrincipals/{oid}/appRoleAssignments\" \
                     --headers \"Content-Type=application/json\" --body \"{{\\\"principalId\\\":\\\"{oid}\\\",\\\"resourceId\\\":\\\"{resource}\\\",\\\"appRoleId\\\":\\\"{role_id}\\\"}}\"\n\
                     Managed-identity tokens are cached for about 24 hours: a playbook can keep presenting \
                     a token without the role that long",
                    role,
                    wanted.get(1).map(|s| s.as_str()).unwrap_or(role),
                ),
            ));
            continue;
        }
        if sp.kind != "ManagedIdentity" {
            checks.push(c.warn(
                format!("{saw}; not a managed identity"),
                "a caller that is an app registration can be impersonated by whoever holds its secret or \
                 certificate; the playbook templates use the Logic App's system-assigned managed identity \
                 (docs/setup.md, step 2)",
            ));
            continue;
        }
        checks.push(c.pass(saw));
    }
}
