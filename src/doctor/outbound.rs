//! wipehook's own identity: the clients the doctor uses, the tenant's
//! credential, and the tokens it obtains with the roles they carry.

use super::Check;
use crate::auth::InboundAuth;
use crate::config::{Config, CredentialSettings, Tenant};
use crate::domain::{AccountStep, TenantId};
use crate::exchange::ExchangeClient;
use crate::graph::GraphClient;
use crate::identity::{Resource, TokenClaims, TokenProvider};
use crate::metrics::Metrics;
use crate::sentinel::arm::ArmClient;
use crate::upstream::HttpClients;

/// The Office 365 Exchange Online and Microsoft Graph resource app ids and
/// the app roles the containment sequence needs of them, with their role
/// ids (the same in every tenant; exchange-online.md §5.1, docs/setup.md
/// step 5). ARM tokens carry no app roles: Azure RBAC is read instead
/// (`sentinel.role`).
pub const EXCHANGE_APP: &str = "00000002-0000-0ff1-ce00-000000000000";
pub const GRAPH_APP: &str = "00000003-0000-0000-c000-000000000000";
pub const NEEDED_ROLES: [(Resource, &str, &str, &str); 2] = [
    (
        Resource::Exchange,
        EXCHANGE_APP,
        "Exchange.ManageAsApp",
        "dc50a0fb-09a3-484d-be87-e023b12c6440",
    ),
    (
        Resource::Graph,
        GRAPH_APP,
        "User.Read.All",
        "df021288-bdef-4463-88db-98f22de89214",
    ),
];
/// Optional: lets the doctor read app registrations and service principals
/// (the inbound checks); never used by a containment.
pub const DOCTOR_ROLE: (&str, &str) = (
    "Application.Read.All",
    "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30",
);

/// The clients the doctor talks through (its own: the doctor is not the service).
pub struct Clients {
    pub exchange: ExchangeClient,
    pub arm: ArmClient,
    pub graph: GraphClient,
    pub auth: InboundAuth,
    http: HttpClients,
}

impl Clients {
    pub fn new(config: &Config) -> anyhow::Result<Clients> {
        let cloud = &config.cloud;
        let http = HttpClients::new(cloud.extra_ca_file.as_deref())?;
        let metrics = Metrics::new();
        let w = &config.settings.worker;
        let ids: Vec<(TenantId, Vec<String>)> = config
            .tenants
            .iter()
            .map(|t| (t.id.clone(), t.allowed_callers.clone()))
            .collect();
        Ok(Clients {
            exchange: ExchangeClient::new(
                http.exchange.clone(),
                &cloud.exchange_url,
                w.exchange_initial_concurrency,
                w.exchange_max_concurrency,
                w.backoff_scale,
                metrics.clone(),
            ),
            arm: ArmClient::new(
                http.arm.clone(),
                &cloud.arm_url,
                &cloud.sentinel_api_version,
            ),
            graph: GraphClient::new(http.graph.clone(), &cloud.graph_url, metrics),
            auth: InboundAuth::new(
                http.entra.clone(),
                &cloud.authority_host,
                &ids,
                &config.settings.inbound,
            ),
            http,
        })
    }
}

/// The tenant's credential, as the service builds it.
pub fn provider(
    config: &Config,
    clients: &Clients,
    tenant: &Tenant,
) -> Result<TokenProvider, String> {
    TokenProvider::new(tenant, &config.cloud, clients.http.entra.clone())
        .map_err(|e| format!("{e:#}"))
}

/// What to do when the credential cannot obtain a token.
pub fn credential_fix(tenant: &Tenant) -> String {
    match &tenant.credential {
        CredentialSettings::ClientSecret {
            client_id,
            client_secret_env,
        } => format!(
            "check client_id {client_id} and the secret in {client_secret_env} (a new one: \
             `az ad app credential reset --id {client_id} --display-name wipehook --years 1 --query password -o tsv`); \
             docs/setup.md, step 3 (c) and step 6.1 (Client secret)"
        ),
        CredentialSettings::ManagedIdentity { .. } => "a managed identity only answers where wipehook runs: run the doctor in the \
             container (`/usr/local/bin/wipehook doctor`, docs/operations.md, Running the CLI); \
             there, check that the app has its system-assigned identity (docs/setup.md, step 3 (a))"
            .to_string(),
        CredentialSettings::WorkloadIdentity { .. } => "check AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE in the pod (the workload identity \
             webhook sets them when the ServiceAccount is annotated) and the federated credential's \
             subject `system:serviceaccount:wipehook:wipehook` (docs/setup.md, step 3 (b))"
            .to_string(),
    }
}

fn grant_line(principal: &str, resource_app: &str, role_id: &str, role: &str) -> String {
    format!(
        "give wipehook's identity the app role {role} (docs/setup.md, steps 3 and 5):\n\
         az rest --method POST --uri \"https://graph.microsoft.com/v1.0/servicePrincipals/{principal}/appRoleAssignments\" \
         --headers \"Content-Type=application/json\" --body \"{{\\\"principalId\\\":\\\"{principal}\\\",\\\"resourceId\\\":\\\"$(az ad sp show --id {resource_app} --query id -o tsv)\\\",\\\"appRoleId\\\":\\\"{role_id}\\\"}}\"\n\
         A managed identity's tokens are cached for about 24 hours: the new role can take that long to appear"
    )
}

/// A token for each upstream with the tenant's credential, and its roles
/// compared with what the containment sequence needs.
pub async fn tokens(tenant: &Tenant, tokens: &TokenProvider, checks: &mut Vec<Check>) {
    for (r, id, name) in [
        (Resource::Exchange, "token.exchange", "Exchange"),
        (Resource::Arm, "token.arm", "ARM"),
        (Resource::Graph, "token.graph", "Graph"),
    ] {
        let resource = tokens.resource(r);
        let c = Check::new(id, format!("a token for {name} and the roles it carries"))
            .tenant(&tenant.id)
            .checked(format!(
                "a token for {resource}/.default with the tenant's credential"
            ));
        let claims = match tokens.claims(r).await {
            Ok(c) => c,
            Err(e) => {
                checks.push(c.fail(e.reason().to_string(), credential_fix(tenant)));
                continue;
            }
        };
        checks.push(judge(tenant, r, &resource, c, &claims));
    }
}

fn judge(tenant: &Tenant, r: Resource, resource: &str, c: Check, claims: &TokenClaims) -> Check {
    let roles = if claims.roles.is_empty() {
        "no app roles".to_string()
    } else {
        format!("roles {}", claims.roles.join(", "))
    };
    let saw = format!(
        "aud {}, tenant {}, object id {}, client id {}, {roles}",
        claims.aud, claims.tid, claims.oid, claims.app_id
    );
    if !claims.tid.eq_ignore_ascii_case(tenant.id.as_str()) {
        return c.fail(
            format!("{saw}: the token is of another tenant"),
            "the credential belongs to another tenant: check the tenant id and the credential's client id",
        );
    }
    if claims.aud.trim_end_matches('/') != resource.trim_end_matches('/') {
        return c.fail(
            format!("{saw}: not the resource asked for"),
            "check cloud.*_resource in the configuration",
        );
    }
    for (res, app, role, role_id) in NEEDED_ROLES {
        if res == r && !claims.roles.iter().any(|x| x == role) {
            return c.fail(
                format!("{saw}: {role} is missing"),
                grant_line(&claims.oid, app, role_id, role),
            );
        }
    }
    let note = match r {
        Resource::Arm => "; Azure roles are not in ARM tokens: see sentinel.role".to_string(),
        Resource::Graph if !claims.roles.iter().any(|x| x == DOCTOR_ROLE.0) => format!(
            "; no {} (optional: only the doctor's inbound checks use it)",
            DOCTOR_ROLE.0
        ),
        _ => String::new(),
    };
    c.pass(format!("{saw}{note}"))
}

/// The Graph application permission the Defender mirror posts with
/// (`POST /security/incidents/{id}/comments`, Microsoft Learn). The role id
/// is unverified (from memory of Graph's permission table, not checked
/// against a source here): the fix line names the permission too, and the
/// check itself compares names.
pub const MIRROR_ROLE: (&str, &str) = (
    "SecurityIncident.ReadWrite.All",
    "34bf0e97-1971-4929-b999-9e2442d941d7",
);

/// The Graph application permission each account step needs (ids as
/// Graph publishes them; from memory of Graph's permission table, not
/// checked against a source here: the fix line names the permission too, and
/// the check itself compares names). Each also accepts the broader
/// permissions Graph documents (User.ReadWrite.All, Directory.ReadWrite.All).
pub fn step_role(step: AccountStep) -> (&'static str, &'static str) {
    match step {
        AccountStep::RevokeSessions => (
            "User.RevokeSessions.All",
            "77f3a031-c388-4f99-b373-dc68676a979e",
        ),
        AccountStep::BlockSignIn => (
            "User.EnableDisableAccount.All",
            "3011c876-62b7-4ada-afa2-506cbbecc68c",
        ),
        AccountStep::ConfirmCompromised => (
            "IdentityRiskyUser.ReadWrite.All",
            "656f6061-f9fe-4807-9708-6a2e0934df76",
        ),
    }
}

/// The Graph permissions of the tenant's account steps (`policy.account_steps`).
pub async fn graph_account_steps(tenant: &Tenant, tokens: &TokenProvider) -> Check {
    let c = Check::new(
        "graph.account_steps",
        "the Graph permissions of the configured account steps",
    )
    .tenant(&tenant.id);
    let steps = &tenant.policy.account_steps;
    if steps.is_empty() {
        return c
            .checked("the tenant's policy.account_steps")
            .skip("no account step is configured: only the wipe (and the block of suspected attacker devices) is done");
    }
    let wanted: Vec<(&str, &str)> = steps.iter().map(|s| step_role(*s)).collect();
    let c = c.checked(format!(
        "the roles of a Graph token: {}",
        wanted.iter().map(|w| w.0).collect::<Vec<_>>().join(", ")
    ));
    match tokens.claims(Resource::Graph).await {
        Err(e) => c.fail(e.reason().to_string(), credential_fix(tenant)),
        Ok(claims) => {
            let broad = ["User.ReadWrite.All", "Directory.ReadWrite.All"];
            let missing: Vec<&(&str, &str)> = wanted
                .iter()
                .filter(|(name, _)| {
                    !claims.roles.iter().any(|r| {
                        r == name
                            || (!name.starts_with("IdentityRiskyUser")
                                && broad.contains(&r.as_str()))
                    })
                })
                .collect();
            if missing.is_empty() {
                c.pass("every permission present".to_string())
            } else {
                c.fail(
                    format!(
                        "the Graph token lacks {} (roles: {})",
                        missing.iter().map(|m| m.0).collect::<Vec<_>>().join(", "),
                        claims.roles.join(", ")
                    ),
                    missing
                        .iter()
                        .map(|(name, id)| grant_line(&claims.oid, GRAPH_APP, id, name))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            }
        }
    }
}

/// Graph security, for a tenant with the Defender incident mirror
/// (`defender_mirror = true`): the Graph token carries SecurityIncident.ReadWrite.All.
pub async fn graph_security(tenant: &Tenant, tokens: &TokenProvider) -> Check {
    let c = Check::new(
        "graph.security",
        "the Graph security permission of the Defender mirror",
    )
    .tenant(&tenant.id);
    if !tenant.defender_mirror {
        return c
            .checked("the tenant's defender_mirror setting")
            .skip("defender_mirror is off for this tenant: the record is only on the Sentinel incident, and no Graph security permission is needed");
    }
    let c = c.checked(format!(
        "the roles of a Graph token: {} (each note is also posted to the Defender incident)",
        MIRROR_ROLE.0
    ));
    match tokens.claims(Resource::Graph).await {
        Err(e) => c.fail(e.reason().to_string(), credential_fix(tenant)),
        Ok(claims) if claims.roles.iter().any(|r| r == MIRROR_ROLE.0) => {
            c.pass(format!("{} present", MIRROR_ROLE.0))
        }
        Ok(claims) => c.fail(
            format!(
                "the Graph token has no {} (roles: {})",
                MIRROR_ROLE.0,
                claims.roles.join(", ")
            ),
            format!(
                "{} (or set defender_mirror = false: the Sentinel comment is the record either way)",
                grant_line(&claims.oid, GRAPH_APP, MIRROR_ROLE.1, MIRROR_ROLE.0)
            ),
        ),
    }
}
