//! Outbound identity: one azure_identity credential per tenant (managed
//! identity, workload identity, or client secret). Tokens are requested for
//! the resource identifier (`https://outlook.office365.com/.default`), never
//! for the URL a request goes to; azure_identity caches them and refreshes
//! five minutes before expiry.

use std::sync::{Arc, RwLock};

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use crate::config::{Cloud, CredentialSettings, Tenant};
use crate::upstream::CallError;

/// Which upstream a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Exchange,
    Arm,
    Graph,
}

/// What an access token says about the identity it was issued to. Read
/// for diagnosis only (`wipehook doctor`, the canary): nothing is authorised
/// on it, so its signature is not checked (it came from Entra over TLS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenClaims {
    pub aud: String,
    pub tid: String,
    /// The object id of wipehook's service principal (or managed identity).
    pub oid: String,
    /// `appid` (v1) or `azp` (v2): the client id.
    pub app_id: String,
    /// App roles the identity holds on the resource (`Exchange.ManageAsApp`, `User.Read.All`, ...).
    pub roles: Vec<String>,
}

impl TokenClaims {
    /// The claims of a JWT, unverified.
    pub fn of(token: &str) -> Result<TokenClaims, String> {
        #[derive(serde::Deserialize)]
        struct Raw {
            #[serde(default)]
            aud: serde_json::Value,
            #[serde(default)]
            tid: String,
            #[serde(default)]
            oid: String,
            appid: Option<String>,
            azp: Option<String>,
            #[serde(default)]
            roles: Vec<String>,
        }
        let raw: Raw = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| format!("the token is not a readable JWT: {e}"))?;
        let aud = match raw.aud {
            serde_json::Value::String(s) => s,
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        Ok(TokenClaims {
            aud,
            tid: raw.tid,
            oid: raw.oid.to_ascii_lowercase(),
            app_id: raw.appid.or(raw.azp).unwrap_or_default(),
            roles: raw.roles,
        })
    }
}

pub struct TokenProvider {
    tenant: String,
    settings: CredentialSettings,
    cloud: Cloud,
    http: reqwest::Client,
    cred: RwLock<Arc<dyn TokenCredential>>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    pub fn new(
        tenant: &Tenant,
        cloud: &Cloud,
        http: reqwest::Client,
    ) -> anyhow::Result<TokenProvider> {
        let cred = build(tenant.id.as_str(), &tenant.credential, cloud, &http)?;
        Ok(TokenProvider {
            tenant: tenant.id.to_string(),
            settings: tenant.credential.clone(),
            cloud: cloud.clone(),
            http,
            cred: RwLock::new(cred),
        })
    }

    pub fn scope(&self, r: Resource) -> String {
        let base = match r {
            Resource::Exchange => &self.cloud.exchange_resource,
            Resource::Arm => &self.cloud.arm_resource,
            Resource::Graph => &self.cloud.graph_resource,
        };
        format!("{}/.default", base.trim_end_matches('/'))
    }

    /// The resource identifier tokens for `r` are requested for (no `/.default`).
    pub fn resource(&self, r: Resource) -> String {
        self.scope(r).trim_end_matches("/.default").to_string()
    }

    /// The claims of a token for the resource (diagnosis only; see `TokenClaims`).
    pub async fn claims(&self, r: Resource) -> Result<TokenClaims, CallError> {
        let token = self.token(r).await?;
        TokenClaims::of(&token).map_err(CallError::permanent)
    }

    /// A bearer token for the resource. The token string never reaches a log.
    pub async fn token(&self, r: Resource) -> Result<String, CallError> {
        let cred = self
            .cred
            .read()
            .map(|c| c.clone())
            .map_err(|_| CallError::transient("token cache poisoned"))?;
        let scope = self.scope(r);
        match cred.get_token(&[scope.as_str()], None).await {
            Ok(t) => Ok(t.token.secret().to_string()),
            Err(e) => {
                let mut msg = format!("cannot obtain a token for {scope}: {e}");
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                Err(CallError::transient(msg))
            }
        }
    }

    /// After a 401: drop cached tokens by building the credential anew.
    /// The tenant this provider gets tokens in.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn invalidate(&self) {
        match build(&self.tenant, &self.settings, &self.cloud, &self.http) {
            Ok(c) => {
                if let Ok(mut g) = self.cred.write() {
                    *g = c;
                }
            }
            Err(e) => {
                tracing::warn!(tenant = %self.tenant, error = %e, "could not rebuild credential")
            }
        }
    }
}

fn client_options(cloud: &Cloud, http: &reqwest::Client) -> ClientOptions {
    let mut custom = CustomConfiguration::default();
    custom.authority_host = cloud.authority_host.clone();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http.clone()))),
        cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
        // Our worker retries with its own backoff and records attempts.
        retry: RetryOptions::none(),
        ..Default::default()
    }
}

fn build(
    tenant: &str,
    s: &CredentialSettings,
    cloud: &Cloud,
    http: &reqwest::Client,
) -> anyhow::Result<Arc<dyn TokenCredential>> {
    let opts = client_options(cloud, http);
    Ok(match s {
        CredentialSettings::ClientSecret {
            client_id,
            client_secret_env,
        } => {
            let secret = std::env::var(client_secret_env).map_err(|_| {
                anyhow::anyhow!(
                    "tenant {tenant}: the client secret variable {client_secret_env} is not set"
                )
            })?;
            ClientSecretCredential::new(
                tenant,
                client_id.clone(),
                Secret::new(secret),
                Some(ClientSecretCredentialOptions {
                    client_options: opts,
                }),
            )?
        }
        CredentialSettings::ManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: opts,
            }))?
        }
        CredentialSettings::WorkloadIdentity {
            client_id,
            token_file,
        } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: opts,
            },
            client_id: client_id.clone(),
            tenant_id: Some(tenant.to_string()),
            token_file_path: token_file.clone(),
            ..Default::default()
        }))?,
    })
}
