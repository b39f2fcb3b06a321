//! Microsoft Graph: who a person is. Every target is resolved here before any
//! decision: by the entity's object id when it gives one, else by the address
//! it names (as a UPN, then as any of a user's SMTP proxy addresses), so that
//! the policy judges the person and every address they have.
//!
//! And, for `wipehook doctor` only, read-only directory reads (they need
//! `Application.Read.All`): the app registration behind an inbound audience,
//! a caller's service principal, and who holds which app role on it.

use std::time::Instant;

use serde_json::Value;

use crate::domain::{DirectoryUser, Upn};
use crate::identity::{Resource, TokenProvider};
use crate::metrics::Metrics;
use crate::upstream::{CallError, Lookup, retry_after};

const SELECT: &str = "id,userPrincipalName,displayName,mail,proxyAddresses";

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    metrics: Metrics,
    /// A tenant Graph throttled (429 with `Retry-After`): its account-step
    /// writes wait until then, like Exchange's pause.
    paused: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>>,
}

/// What `confirmCompromised` came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmed {
    Done,
    /// The tenant has no Entra ID P2 (Identity Protection): a clear skip.
    NoLicence(String),
}

/// A person's account, as the sign-in block needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    pub enabled: bool,
    /// Synchronised from on-premises AD: sync re-enables a cloud-only disable.
    pub on_premises_synced: bool,
}

/// Statuses that say Graph did not do the work yet and may on a retry: a
/// request timeout (a front end or proxy that gave up reading it) and any
/// server error. 429 is answered by each call on its own (the account steps
/// pause the tenant).
fn busy(status: u16) -> bool {
    matches!(status, 408 | 500..=599)
}

impl GraphClient {
    pub fn new(http: reqwest::Client, graph_url: &str, metrics: Metrics) -> GraphClient {
        GraphClient {
            http,
            base: graph_url.trim_end_matches('/').to_string(),
            metrics,
            paused: Default::default(),
        }
    }

    fn user_url(&self, object_id: &str, tail: &str) -> Result<String, CallError> {
        let id = uuid::Uuid::parse_str(object_id)
            .map_err(|_| CallError::permanent(format!("'{object_id}' is not an object id")))?;
        Ok(format!(
            "{}/v1.0/users/{}{tail}",
            self.base,
            id.hyphenated()
        ))
    }

    /// Wait out the tenant's Graph pause, if any.
    async fn honour_pause(&self, tokens: &TokenProvider) {
        let until = self
            .paused
            .lock()
            .expect("graph pause lock")
            .get(tokens.tenant())
            .copied();
        if let Some(u) = until {
            let now = Instant::now();
            if u > now {
                tokio::time::sleep(u - now).await;
            }
        }
    }

    /// One account-step write: 2xx is done; 429 pauses the tenant for its
    /// `Retry-After` and is retried; 403 names the permission.
    async fn write(
        &self,
        tokens: &TokenProvider,
        method: reqwest::Method,
        url: &str,
        body: &Value,
        op: &'static str,
        permission: &str,
    ) -> Result<(u16, String), CallError> {
        self.honour_pause(tokens).await;
        let token = tokens.token(Resource::Graph).await?;
        let started = Instant::now();
        let resp = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::from_reqwest("Graph account step", e))?;
        let status = resp.status().as_u16();
        self.metrics
            .upstream_latency("graph", op, status, started.elapsed());
        let ra = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        match status {
            200..=299 => Ok((status, text)),
            401 => {
                tokens.invalidate();
                Err(CallError::transient("Graph answered 401"))
            }
            429 => {
                let wait = ra.unwrap_or(std::time::Duration::from_secs(5));
                self.paused
                    .lock()
                    .expect("graph pause lock")
                    .insert(tokens.tenant().to_string(), Instant::now() + wait);
                self.metrics.retry("graph", "throttled");
                Err(CallError::Transient {
                    reason: "Graph answered 429 (throttled)".into(),
                    retry_after: Some(wait),
                })
            }
            s if busy(s) => Err(CallError::Transient {
                reason: format!("Graph answered {status}"),
                retry_after: ra,
            }),
            403 => Err(CallError::Permanent {
                reason: format!(
                    "Graph answered 403: {} (does wipehook's identity have {permission}?)",
                    graph_message(&text)
                ),
            }),
            _ => Err(CallError::Permanent {
                reason: format!("Graph answered {status}: {}", graph_message(&text)),
            }),
        }
    }

    /// `POST /v1.0/users/{id}/revokeSignInSessions` (User.RevokeSessions.All).
    pub async fn revoke_sessions(
        &self,
        tokens: &TokenProvider,
        object_id: &str,
    ) -> Result<(), CallError> {
        let url = self.user_url(object_id, "/revokeSignInSessions")?;
        self.write(
            tokens,
            reqwest::Method::POST,
            &url,
            &serde_json::json!({}),
            "revoke-sessions",
            "User.RevokeSessions.All",
        )
        .await
        .map(|_| ())
    }

    /// `GET /v1.0/users/{id}?$select=accountEnabled,onPremisesSyncEnabled`.
    pub async fn account_state(
        &self,
        tokens: &TokenProvider,
        object_id: &str,
    ) -> Result<Option<AccountState>, CallError> {
        let url = self.user_url(object_id, "")?;
        let v = self
            .get(
                tokens,
                &url,
                &[("$select", "id,accountEnabled,onPremisesSyncEnabled")],
                "get-account",
            )
            .await?;
        Ok(v.map(|v| AccountState {
            enabled: v
                .get("accountEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            on_premises_synced: v
                .get("onPremisesSyncEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }))
    }

    /// `PATCH /v1.0/users/{id}` `{"accountEnabled": ...}` (User.EnableDisableAccount.All).
    pub async fn set_account_enabled(
        &self,
        tokens: &TokenProvider,
        object_id: &str,
        enabled: bool,
    ) -> Result<(), CallError> {
        let url = self.user_url(object_id, "")?;
        self.write(
            tokens,
            reqwest::Method::PATCH,
            &url,
            &serde_json::json!({"accountEnabled": enabled}),
            "set-account-enabled",
            "User.EnableDisableAccount.All",
        )
        .await
        .map(|_| ())
    }

    /// `POST /v1.0/identityProtection/riskyUsers/confirmCompromised`
    /// (IdentityRiskyUser.ReadWrite.All; Entra ID P2). A tenant without P2
    /// is a clear skip, not a failure.
    pub async fn confirm_compromised(
        &self,
        tokens: &TokenProvider,
        object_id: &str,
    ) -> Result<Confirmed, CallError> {
        let id = uuid::Uuid::parse_str(object_id)
            .map_err(|_| CallError::permanent(format!("'{object_id}' is not an object id")))?;
        let url = format!(
            "{}/v1.0/identityProtection/riskyUsers/confirmCompromised",
            self.base
        );
        match self
            .write(
                tokens,
                reqwest::Method::POST,
                &url,
                &serde_json::json!({"userIds": [id.hyphenated().to_string()]}),
                "confirm-compromised",
                "IdentityRiskyUser.ReadWrite.All",
            )
            .await
        {
            Ok(_) => Ok(Confirmed::Done),
            Err(CallError::Permanent { reason }) if no_p2(&reason) => {
                Ok(Confirmed::NoLicence(reason))
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /v1.0/users/{id}`. `Ok(None)`: no such user.
    pub async fn user_by_id(
        &self,
        tokens: &TokenProvider,
        object_id: &str,
    ) -> Result<Option<DirectoryUser>, CallError> {
        let id = uuid::Uuid::parse_str(object_id)
            .map_err(|_| CallError::permanent(format!("'{object_id}' is not an object id")))?;
        let url = format!("{}/v1.0/users/{}", self.base, id.hyphenated());
        match self
            .get(tokens, &url, &[("$select", SELECT)], "get-user")
            .await?
        {
            Some(v) => parse_user(&v).map(Some),
            None => Ok(None),
        }
    }

    /// The user an address belongs to: as a UPN (`GET /v1.0/users/{upn}`),
    /// else as an SMTP proxy address (`$filter=proxyAddresses/any(...)`).
    /// `Ok(None)`: nobody; more than one user: refused.
    pub async fn user_by_address(
        &self,
        tokens: &TokenProvider,
        address: &Upn,
    ) -> Result<Option<DirectoryUser>, CallError> {
        // One path segment, percent-encoded (a guest UPN has '#').
        let mut url = reqwest::Url::parse(&format!("{}/v1.0/users", self.base))
            .map_err(|e| CallError::permanent(format!("graph URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| CallError::permanent("graph URL cannot take a path"))?
            .push(address.as_str());
        let url = url.to_string();
        if let Some(v) = self
            .get(tokens, &url, &[("$select", SELECT)], "get-user")
            .await?
        {
            return parse_user(&v).map(Some);
        }
        // A quote in the address is doubled inside the OData literal.
        let filter = format!(
            "proxyAddresses/any(p:p eq 'smtp:{}')",
            address.as_str().replace('\'', "''")
        );
        let url = format!("{}/v1.0/users", self.base);
        let Some(v) = self
            .get(
                tokens,
                &url,
                &[("$filter", filter.as_str()), ("$select", SELECT)],
                "find-user",
            )
            .await?
        else {
            return Ok(None);
        };
        let found = v
            .get("value")
            .and_then(Value::as_array)
            .ok_or_else(|| CallError::transient("Graph answered a user search without 'value'"))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => parse_user(one).map(Some),
            many => Err(CallError::permanent(format!(
                "{} users answer to the address {address} in Microsoft Graph; refusing to act on any",
                many.len()
            ))),
        }
    }

    /// The UPN of the user with this object id. `Ok(None)`: no such user.
    pub async fn user_principal_name(
        &self,
        tokens: &TokenProvider,
        object_id: &str,
    ) -> Result<Option<Upn>, CallError> {
        Ok(self.user_by_id(tokens, object_id).await?.map(|u| u.upn))
    }

    /// `POST /v1.0/security/incidents/{id}/comments`: add a comment to the
    /// Defender incident (`SecurityIncident.ReadWrite.All`). Not idempotent:
    /// the caller checks `incident_has_comment` before a retry.
    pub async fn post_incident_comment(
        &self,
        tokens: &TokenProvider,
        incident_id: &str,
        text: &str,
    ) -> Result<(), CallError> {
        let url = self.incident_url(incident_id, "/comments")?;
        let token = tokens.token(Resource::Graph).await?;
        let started = Instant::now();
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&serde_json::json!({
                "@odata.type": "microsoft.graph.security.alertComment",
                "comment": text,
            }))
            .send()
            .await
            .map_err(|e| CallError::from_reqwest("Graph incident comment", e))?;
        let status = resp.status().as_u16();
        self.metrics
            .upstream_latency("graph", "incident-comment", status, started.elapsed());
        let ra = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        match status {
            200..=299 => Ok(()),
            401 => {
                tokens.invalidate();
                Err(CallError::transient("Graph answered 401"))
            }
            s if s == 429 || busy(s) => Err(CallError::Transient {
                reason: format!("Graph answered {status}"),
                retry_after: ra,
            }),
            403 => Err(CallError::permanent(
                "Graph answered 403 (does wipehook's identity have SecurityIncident.ReadWrite.All?)",
            )),
            _ => Err(CallError::permanent(format!(
                "Graph answered {status}: {}",
                text.chars().take(200).collect::<String>()
            ))),
        }
    }

    /// Does the Defender incident carry a comment containing `marker`?
    pub async fn incident_has_comment(
        &self,
        tokens: &TokenProvider,
        incident_id: &str,
        marker: &str,
    ) -> Result<bool, CallError> {
        let url = self.incident_url(incident_id, "")?;
        let Some(v) = self.get(tokens, &url, &[], "get-incident").await? else {
            return Ok(false);
        };
        Ok(v.get("comments")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.get("comment")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.contains(marker))
                })
            }))
    }

    fn incident_url(&self, incident_id: &str, tail: &str) -> Result<String, CallError> {
        if incident_id.is_empty()
            || !incident_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(CallError::permanent(format!(
                "'{incident_id}' is not a Defender incident id"
            )));
        }
        Ok(format!(
            "{}/v1.0/security/incidents/{incident_id}{tail}",
            self.base
        ))
    }

    /// One GET; `Ok(None)` on 404.
    async fn get(
        &self,
        tokens: &TokenProvider,
        url: &str,
        query: &[(&str, &str)],
        op: &'static str,
    ) -> Result<Option<Value>, CallError> {
        let token = tokens.token(Resource::Graph).await?;
        let started = Instant::now();
        let resp = self
            .http
            .get(url)
            .query(query)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| CallError::from_reqwest("Graph user", e))?;
        let status = resp.status().as_u16();
        self.metrics
            .upstream_latency("graph", op, status, started.elapsed());
        let ra = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        match status {
            200 => serde_json::from_str(&text).map(Some).map_err(|_| {
                CallError::transient("Graph answered 200 with a body that is not JSON")
            }),
            404 => Ok(None),
            401 => {
                tokens.invalidate();
                Err(CallError::transient("Graph answered 401"))
            }
            s if s == 429 || busy(s) => Err(CallError::Transient {
                reason: format!("Graph answered {status}"),
                retry_after: ra,
            }),
            403 => Err(CallError::Transient {
                reason: "Graph answered 403 (does wipehook's identity have User.Read.All?)".into(),
                retry_after: None,
            }),
            _ => Err(CallError::permanent(format!(
                "Graph answered {status}: {}",
                text.chars().take(200).collect::<String>()
            ))),
        }
    }
}

/// Graph's error message (`error.message`), else the body's start.
fn graph_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or_else(|| text.chars().take(200).collect())
}

/// Identity Protection refuses a tenant without Entra ID P2 (the message
/// names the licence; the exact wording is unverified, so several are read).
fn no_p2(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("p2") || r.contains("premium") || r.contains("licen")
}

/// An app role an app registration or service principal defines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRoleDef {
    pub id: String,
    pub value: String,
    /// `allowedMemberTypes` includes "Application" (assignable to a managed identity).
    pub for_applications: bool,
    pub enabled: bool,
}

/// An app registration (`application`), as far as wipehook cares.
#[derive(Clone, Debug)]
pub struct AppRegistration {
    pub app_id: String,
    pub display_name: String,
    pub identifier_uris: Vec<String>,
    pub app_roles: Vec<AppRoleDef>,
    /// `api.requestedAccessTokenVersion` (None: v1 tokens).
    pub token_version: Option<i64>,
}

/// A service principal: an app's instance in the tenant, or a managed identity.
#[derive(Clone, Debug)]
pub struct ServicePrincipalInfo {
    pub object_id: String,
    pub app_id: String,
    pub display_name: String,
    /// `servicePrincipalType`: "ManagedIdentity", "Application", "Legacy", ...
    pub kind: String,
    pub app_roles: Vec<AppRoleDef>,
}

/// `appRoleAssignment`: `principal_id` holds app role `app_role_id` of `resource_id`.
#[derive(Clone, Debug)]
pub struct AppRoleGrant {
    pub principal_id: String,
    pub resource_id: String,
    pub app_role_id: String,
}

impl GraphClient {
    /// The app registration whose App ID URI is `uri` (`$filter=identifierUris/any(...)`).
    pub async fn application_by_uri(
        &self,
        tokens: &TokenProvider,
        uri: &str,
    ) -> Result<Lookup<AppRegistration>, CallError> {
        let filter = format!("identifierUris/any(x:x eq '{}')", uri.replace('\'', "''"));
        let url = format!("{}/v1.0/applications", self.base);
        match self
            .lookup(
                tokens,
                &url,
                &[("$filter", filter.as_str())],
                "find-application",
            )
            .await?
        {
            Lookup::Found(v) => Ok(match first(&v) {
                Some(app) => Lookup::Found(parse_application(app)?),
                None => Lookup::Missing(format!("no app registration has the App ID URI {uri}")),
            }),
            Lookup::Missing(m) => Ok(Lookup::Missing(m)),
            Lookup::Denied(m) => Ok(Lookup::Denied(m)),
        }
    }

    /// The app registration with application (client) id `app_id`.
    pub async fn application_by_app_id(
        &self,
        tokens: &TokenProvider,
        app_id: &uuid::Uuid,
    ) -> Result<Lookup<AppRegistration>, CallError> {
        let url = format!(
            "{}/v1.0/applications(appId='{}')",
            self.base,
            app_id.hyphenated()
        );
        match self.lookup(tokens, &url, &[], "get-application").await? {
            Lookup::Found(v) => Ok(Lookup::Found(parse_application(&v)?)),
            Lookup::Missing(m) => Ok(Lookup::Missing(m)),
            Lookup::Denied(m) => Ok(Lookup::Denied(m)),
        }
    }

    /// The service principal of application `app_id` in this tenant.
    pub async fn service_principal_by_app_id(
        &self,
        tokens: &TokenProvider,
        app_id: &str,
    ) -> Result<Lookup<ServicePrincipalInfo>, CallError> {
        let id = uuid::Uuid::parse_str(app_id)
            .map_err(|_| CallError::permanent(format!("'{app_id}' is not an application id")))?;
        let url = format!(
            "{}/v1.0/servicePrincipals(appId='{}')",
            self.base,
            id.hyphenated()
        );
        match self
            .lookup(tokens, &url, &[], "get-service-principal")
            .await?
        {
            Lookup::Found(v) => Ok(Lookup::Found(parse_service_principal(&v)?)),
            Lookup::Missing(m) => Ok(Lookup::Missing(m)),
            Lookup::Denied(m) => Ok(Lookup::Denied(m)),
        }
    }

    /// The service principal with this object id.
    pub async fn service_principal(
        &self,
        tokens: &TokenProvider,
        object_id: &uuid::Uuid,
    ) -> Result<Lookup<ServicePrincipalInfo>, CallError> {
        let url = format!(
            "{}/v1.0/servicePrincipals/{}",
            self.base,
            object_id.hyphenated()
        );
        match self
            .lookup(tokens, &url, &[], "get-service-principal")
            .await?
        {
            Lookup::Found(v) => Ok(Lookup::Found(parse_service_principal(&v)?)),
            Lookup::Missing(m) => Ok(Lookup::Missing(m)),
            Lookup::Denied(m) => Ok(Lookup::Denied(m)),
        }
    }

    /// Who holds app roles of the service principal `resource` (`appRoleAssignedTo`, every page).
    pub async fn role_grants_on(
        &self,
        tokens: &TokenProvider,
        resource: &uuid::Uuid,
    ) -> Result<Lookup<Vec<AppRoleGrant>>, CallError> {
        let mut url = format!(
            "{}/v1.0/servicePrincipals/{}/appRoleAssignedTo",
            self.base,
            resource.hyphenated()
        );
        let mut out = vec![];
        for _ in 0..100 {
            let v = match self
                .lookup(tokens, &url, &[], "list-app-role-assignments")
                .await?
            {
                Lookup::Found(v) => v,
                Lookup::Missing(m) => return Ok(Lookup::Missing(m)),
                Lookup::Denied(m) => return Ok(Lookup::Denied(m)),
            };
            for g in v
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let s = |k: &str| {
                    g.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_ascii_lowercase()
                };
                out.push(AppRoleGrant {
                    principal_id: s("principalId"),
                    resource_id: s("resourceId"),
                    app_role_id: s("appRoleId"),
                });
            }
            match v.get("@odata.nextLink").and_then(Value::as_str) {
                Some(next) if next.starts_with(&self.base) => url = next.to_string(),
                _ => break,
            }
        }
        Ok(Lookup::Found(out))
    }

    /// One directory GET: 404 and 401/403 kept apart from other failures.
    async fn lookup(
        &self,
        tokens: &TokenProvider,
        url: &str,
        query: &[(&str, &str)],
        op: &'static str,
    ) -> Result<Lookup<Value>, CallError> {
        let token = tokens.token(Resource::Graph).await?;
        let started = Instant::now();
        let resp = self
            .http
            .get(url)
            .query(query)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| CallError::from_reqwest("Graph", e))?;
        let status = resp.status().as_u16();
        self.metrics
            .upstream_latency("graph", op, status, started.elapsed());
        let text = resp.text().await.unwrap_or_default();
        let message = || {
            serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    let e = v.get("error")?;
                    Some(format!(
                        "{}: {}",
                        e.get("code")?.as_str().unwrap_or(""),
                        e.get("message").and_then(Value::as_str).unwrap_or("")
                    ))
                })
                .unwrap_or_else(|| format!("HTTP {status}"))
        };
        match status {
            200 => serde_json::from_str(&text).map(Lookup::Found).map_err(|_| {
                CallError::transient("Graph answered 200 with a body that is not JSON")
            }),
            404 => Ok(Lookup::Missing(message())),
            401 | 403 => Ok(Lookup::Denied(format!("HTTP {status} {}", message()))),
            _ => Err(CallError::transient(format!(
                "Graph answered {status}: {}",
                message()
            ))),
        }
    }
}

fn first(v: &Value) -> Option<&Value> {
    v.get("value")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
}

fn parse_roles(v: &Value) -> Vec<AppRoleDef> {
    v.get("appRoles")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| AppRoleDef {
            id: r
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase(),
            value: r
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            for_applications: r
                .get("allowedMemberTypes")
                .and_then(Value::as_array)
                .is_some_and(|t| t.iter().any(|m| m == "Application")),
            enabled: r.get("isEnabled").and_then(Value::as_bool).unwrap_or(false),
        })
        .collect()
}

fn parse_application(v: &Value) -> Result<AppRegistration, CallError> {
    let app_id = v.get("appId").and_then(Value::as_str).unwrap_or("");
    if uuid::Uuid::parse_str(app_id).is_err() {
        return Err(CallError::permanent(
            "Graph returned an application without an appId",
        ));
    }
    Ok(AppRegistration {
        app_id: app_id.to_ascii_lowercase(),
        display_name: v
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        identifier_uris: v
            .get("identifierUris")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        app_roles: parse_roles(v),
        token_version: v
            .pointer("/api/requestedAccessTokenVersion")
            .and_then(Value::as_i64),
    })
}

fn parse_service_principal(v: &Value) -> Result<ServicePrincipalInfo, CallError> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if uuid::Uuid::parse_str(&s("id")).is_err() {
        return Err(CallError::permanent(
            "Graph returned a service principal without an id",
        ));
    }
    Ok(ServicePrincipalInfo {
        object_id: s("id").to_ascii_lowercase(),
        app_id: s("appId").to_ascii_lowercase(),
        display_name: s("displayName"),
        kind: s("servicePrincipalType"),
        app_roles: parse_roles(v),
    })
}

/// A Graph user as a `DirectoryUser`.
fn parse_user(v: &Value) -> Result<DirectoryUser, CallError> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("")
    };
    let upn = Upn::parse(s("userPrincipalName")).map_err(|e| {
        CallError::permanent(format!("Graph returned an unusable userPrincipalName: {e}"))
    })?;
    let object_id = uuid::Uuid::parse_str(s("id"))
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| CallError::permanent("Graph returned a user without a valid id"))?;
    let mail = Some(s("mail").to_ascii_lowercase()).filter(|m| !m.is_empty());
    let mut addresses: Vec<String> = v
        .get("proxyAddresses")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        // "SMTP:primary", "smtp:proxy"; other kinds (SIP:, SPO:, X500:) are not mail addresses.
        .filter_map(|a| {
            let (kind, addr) = a.split_once(':')?;
            kind.eq_ignore_ascii_case("smtp")
                .then(|| addr.trim().to_ascii_lowercase())
        })
        .collect();
    if let Some(m) = &mail
        && !addresses.contains(m)
    {
        addresses.push(m.clone());
    }
    addresses.sort();
    addresses.dedup();
    Ok(DirectoryUser {
        upn,
        display_name: s("displayName").chars().take(256).collect(),
        object_id,
        mail,
        addresses,
    })
}
