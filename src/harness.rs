//! Wiring wipehook to the simulated tenant, for the integration tests, the
//! demo and the benchmark: the real service, real HTTP(S), real tokens.

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Value, json};

use crate::config::{Config, CredentialSettings, Settings, TenantSettings};
use crate::startup::{Application, Running};
use wipehook_sim::{PrincipalKind, SimOptions, SimTenant};

pub const AUDIENCE: &str = "api://wipehook-demo";
/// Object id of the containment playbook's managed identity.
pub const PLAYBOOK_OID: &str = "0d5f3b1a-7c2e-4e9a-8b6d-1f2e3d4c5b6a";
/// Object id of the approve/cancel playbook's managed identity.
pub const APPROVER_OID: &str = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d";
pub const SECRET_ENV: &str = "WIPEHOOK_SIM_CLIENT_SECRET";

pub struct Harness {
    pub sim: SimTenant,
    pub dir: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Harness {
    pub async fn start(opts: SimOptions) -> Result<Harness> {
        let sim = SimTenant::start(opts).await?;
        let dir = std::env::temp_dir().join(format!("wipehook-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        // SAFETY: every harness in the process sets the same value before any
        // credential reads it; nothing else writes this variable.
        unsafe { std::env::set_var(SECRET_ENV, sim.client_secret()) };
        // The tenant as docs/setup.md steps 1 and 2 leave it: wipehook's API
        // registered with its two app roles, each playbook identity holding one.
        sim.register_api(AUDIENCE, &["Containment.Run", "Containment.Approve"]);
        sim.add_caller(
            PLAYBOOK_OID,
            "Wipehook-Contain-Incident",
            PrincipalKind::ManagedIdentity,
            Some("Containment.Run"),
        );
        sim.add_caller(
            APPROVER_OID,
            "Wipehook-Approve-Run",
            PrincipalKind::ManagedIdentity,
            Some("Containment.Approve"),
        );
        Ok(Harness { sim, dir })
    }

    /// Settings that point every Microsoft endpoint at the simulated tenant.
    pub fn settings(&self) -> Settings {
        let mut s: Settings = toml::from_str("").expect("empty settings");
        let url = self.sim.https_url();
        s.server.listen = "127.0.0.1:0".into();
        s.store.url = format!("sqlite://{}", self.dir.join("wipehook.db").display()).into();
        s.cloud.authority_host = Some(url.clone());
        s.cloud.exchange_url = Some(url.clone());
        s.cloud.arm_url = Some(url.clone());
        s.cloud.graph_url = Some(url);
        s.cloud.extra_ca_file = Some(self.sim.ca_file());
        s.inbound.audiences = vec![AUDIENCE.into()];
        s.inbound.allowed_callers = vec![PLAYBOOK_OID.into(), APPROVER_OID.into()];
        s.inbound.required_role = Some("Containment.Run".into());
        s.inbound.approver_role = Some("Containment.Approve".into());
        s.tenants = vec![TenantSettings {
            id: self.sim.tenant_id(),
            workspaces: vec![self.sim.workspace_arm_id()],
            credential: CredentialSettings::ClientSecret {
                client_id: self.sim.client_id(),
                client_secret_env: SECRET_ENV.into(),
            },
            policy: Default::default(),
            defender_mirror: false,
            canary_upn: None,
            allowed_callers: vec![],
        }];
        s.policy.allowed_domains = vec!["contoso.com".into()];
        s.policy.protected_upns = vec!["breakglass@contoso.com".into()];
        s
    }

    /// Start wipehook with these settings (`server.listen` may be port 0);
    /// `public_url` is set to the bound address.
    pub async fn spawn(&self, mut settings: Settings) -> Result<Running> {
        let listener = TcpListener::bind(&settings.server.listen)?;
        let port = listener.local_addr()?.port();
        settings.server.public_url = format!("http://127.0.0.1:{port}");
        settings.server.listen = format!("127.0.0.1:{port}");
        let config = Config::new(settings).map_err(anyhow::Error::msg)?;
        let app = Application::build_on(config, listener).await?;
        Ok(app.spawn())
    }

    pub fn run_token(&self) -> String {
        self.sim
            .playbook_token(AUDIENCE, PLAYBOOK_OID, &["Containment.Run"])
    }

    pub fn approver_token(&self) -> String {
        self.sim
            .playbook_token(AUDIENCE, APPROVER_OID, &["Containment.Approve"])
    }

    /// An incident-trigger body (`@triggerBody()`) naming these users as Account entities.
    pub fn incident_body(
        &self,
        incident: &str,
        number: i64,
        severity: &str,
        upns: &[&str],
    ) -> Value {
        let entities: Vec<Value> = upns.iter().map(|u| account_entity(u)).collect();
        json!({
            "eventUniqueId": uuid::Uuid::new_v4().to_string(),
            "objectSchemaType": "Incident",
            "objectEventType": "Create",
            "workspaceInfo": {"SubscriptionId": wipehook_sim::SUBSCRIPTION_ID, "ResourceGroupName": "soc-rg", "WorkspaceName": "soc-ws"},
            "object": {
                "id": self.sim.incident_arm_id(incident),
                "name": incident,
                "type": "Microsoft.SecurityInsights/Incidents",
                "properties": {
                    "title": format!("Suspicious sign-in followed by mailbox access ({number})"),
                    "severity": severity,
                    "status": "New",
                    "incidentNumber": number,
                    "relatedEntities": entities,
                }
            }
        })
    }
}

/// An Account entity in the ARM (camelCase) shape, as Sentinel fills it
/// since 1 July 2026: the UPN prefix as the name, and the full UPN in its own field.
pub fn account_entity(upn: &str) -> Value {
    let (name, suffix) = upn.split_once('@').unwrap_or((upn, ""));
    json!({
        "id": format!("/subscriptions/{}/resourceGroups/soc-rg/providers/Microsoft.OperationalInsights/workspaces/soc-ws/providers/Microsoft.SecurityInsights/Entities/{}", wipehook_sim::SUBSCRIPTION_ID, uuid::Uuid::new_v4()),
        "kind": "Account",
        "properties": {"accountName": name, "upnSuffix": suffix, "userPrincipalName": upn, "friendlyName": name}
    })
}
