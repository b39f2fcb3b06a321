//! Inbound authentication: the playbook presents an Entra access token issued
//! to its managed identity. RS256 only; issuers and keys come from each
//! configured tenant's OpenID configuration (v1 and v2) under the configured
//! authority; keys are cached and refetched on an unknown `kid` at most once
//! a minute per tenant. When keys cannot be had, calls are refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::InboundSettings;
use crate::domain::TenantId;

/// Who called, from a verified token.
#[derive(Clone, Debug)]
pub struct Caller {
    pub oid: String,
    pub tenant: TenantId,
    pub app_id: Option<String>,
    /// A human name when the token has one (delegated tokens).
    pub name: Option<String>,
    pub roles: Vec<String>,
}

impl Caller {
    /// How the caller is named in comments and the audit record.
    pub fn display(&self) -> String {
        match (&self.name, &self.app_id) {
            (Some(n), _) => format!("{n} (oid {})", self.oid),
            (None, Some(a)) => format!("managed identity oid {} (app {a})", self.oid),
            (None, None) => format!("oid {}", self.oid),
        }
    }
}

/// What the call needs beyond a valid token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Run,
    Approve,
    /// Reading a run: either role will do.
    Read,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("{0}")]
    Invalid(String),
    /// Signing keys could not be fetched: refused (fail closed), retry later.
    #[error("cannot verify tokens now: {0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct Claims {
    oid: Option<String>,
    tid: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
    upn: Option<String>,
    unique_name: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
struct OidcConfig {
    issuer: String,
    jwks_uri: String,
    /// The cloud the tenant lives in ("microsoftonline.com" in the public cloud).
    #[serde(default)]
    cloud_instance_name: Option<String>,
}

/// What a tenant's OpenID configuration and keys look like from here
/// (`wipehook doctor`).
#[derive(Clone, Debug)]
pub struct Discovery {
    /// The v1 and v2 issuers.
    pub issuers: Vec<String>,
    pub jwks_uris: Vec<String>,
    /// Usable signing keys across the key sets.
    pub keys: usize,
    /// `cloud_instance_name` of the v1 configuration, when given.
    pub cloud_instance_name: Option<String>,
    /// The issuer's clock (`Date` of the v1 configuration answer) minus ours
    /// at the middle of the request, in seconds; None without a `Date`.
    pub clock_skew_secs: Option<f64>,
}

struct TenantKeys {
    issuers: Vec<String>,
    keys: HashMap<String, DecodingKey>,
}

#[derive(Default)]
struct Cache {
    tenants: HashMap<String, TenantKeys>,
    last_fetch: HashMap<String, Instant>,
}

pub struct InboundAuth {
    http: reqwest::Client,
    authority: String,
    /// Each configured tenant and the object ids that may call for it.
    tenants: HashMap<String, Vec<String>>,
    settings: InboundSettings,
    cache: Arc<Mutex<Cache>>,
    fetch_lock: Mutex<()>,
    min_refresh: Duration,
}

impl InboundAuth {
    pub fn new(
        http: reqwest::Client,
        authority: &str,
        tenants: &[(TenantId, Vec<String>)],
        settings: &InboundSettings,
    ) -> InboundAuth {
        InboundAuth {
            http,
            authority: authority.trim_end_matches('/').to_string(),
            tenants: tenants
                .iter()
                .map(|(t, callers)| (t.to_string(), callers.clone()))
                .collect(),
            settings: settings.clone(),
            cache: Arc::default(),
            fetch_lock: Mutex::new(()),
            min_refresh: settings.key_refresh_interval,
        }
    }

    /// Verify an `Authorization` header value.
    pub async fn verify(&self, header: Option<&str>, need: Need) -> Result<Caller, AuthError> {
        // The scheme is case-insensitive (RFC 9110, 11.1).
        let token = header
            .map(str::trim_start)
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let head = decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        if head.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid(format!(
                "token algorithm {:?} is not accepted (RS256 only)",
                head.alg
            )));
        }
        let kid = head
            .kid
            .ok_or_else(|| AuthError::Invalid("token has no kid".into()))?;
        // The tenant decides which keys and issuers apply; it is checked
        // against the signed claims below (iss is per tenant).
        let unverified: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token claims: {e}")))?;
        let tid = unverified
            .tid
            .as_deref()
            .and_then(|t| TenantId::parse(t).ok())
            .ok_or_else(|| AuthError::Invalid("token has no valid tid".into()))?;
        if !self.tenants.contains_key(tid.as_str()) {
            return Err(AuthError::Invalid(format!(
                "tenant {tid} is not configured"
            )));
        }
        let (key, issuers) = self.key(&tid, &kid).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        v.validate_nbf = true;
        v.validate_exp = true;
        v.leeway = self.settings.leeway_secs;
        v.set_issuer(&issuers);
        v.set_audience(&self.settings.audiences);
        let data = decode::<Claims>(token, &key, &v)
            .map_err(|e| AuthError::Invalid(format!("token rejected: {e}")))?;
        let c = data.claims;
        let oid = c
            .oid
            .ok_or_else(|| AuthError::Invalid("token has no oid".into()))?
            .to_ascii_lowercase();
        // A caller is allowed for its own tenant only: the tenant that issued
        // the token (tid, checked against the signed issuer above).
        if !self
            .tenants
            .get(tid.as_str())
            .is_some_and(|callers| callers.iter().any(|a| a.eq_ignore_ascii_case(&oid)))
        {
            return Err(AuthError::Invalid(format!(
                "caller oid {oid} is not an allowed caller of tenant {tid} (tenants[].allowed_callers, or inbound.allowed_callers with one tenant)"
            )));
        }
        let run_role = self.settings.required_role.as_ref();
        let approve_role = self.settings.approver_role.as_ref().or(run_role);
        let accepted: Vec<&String> = match need {
            Need::Run => run_role.into_iter().collect(),
            Need::Approve => approve_role.into_iter().collect(),
            Need::Read => run_role.into_iter().chain(approve_role).collect(),
        };
        if !accepted.is_empty()
            && !accepted
                .iter()
                .any(|role| c.roles.iter().any(|r| r == *role))
        {
            let names: Vec<&str> = accepted.iter().map(|s| s.as_str()).collect();
            return Err(AuthError::Invalid(format!(
                "token lacks the app role {}",
                names.join(" or ")
            )));
        }
        Ok(Caller {
            oid,
            tenant: tid,
            app_id: c.appid.or(c.azp),
            name: c.upn.or(c.unique_name),
            roles: c.roles,
        })
    }

    async fn key(
        &self,
        tid: &TenantId,
        kid: &str,
    ) -> Result<(DecodingKey, Vec<String>), AuthError> {
        // Known keys never wait for a fetch.
        if let Some(hit) = self.cached(tid, kid).await {
            return Ok(hit);
        }
        // One fetch at a time; whoever waited here finds the keys it brought.
        let _fetching = self.fetch_lock.lock().await;
        if let Some(hit) = self.cached(tid, kid).await {
            return Ok(hit);
        }
        {
            let mut cache = self.cache.lock().await;
            let recently = cache
                .last_fetch
                .get(tid.as_str())
                .is_some_and(|t| t.elapsed() < self.min_refresh);
            if recently {
                return match cache.tenants.get(tid.as_str()) {
                    Some(_) => Err(AuthError::Invalid(format!("unknown signing key {kid}"))),
                    None => Err(AuthError::Unavailable(
                        "signing keys could not be fetched recently".into(),
                    )),
                };
            }
            cache.last_fetch.insert(tid.to_string(), Instant::now());
        }
        match self.fetch(tid).await {
            Ok(t) => {
                let found = t.keys.get(kid).cloned();
                let issuers = t.issuers.clone();
                self.cache.lock().await.tenants.insert(tid.to_string(), t);
                found
                    .map(|k| (k, issuers))
                    .ok_or_else(|| AuthError::Invalid(format!("unknown signing key {kid}")))
            }
            Err(e) => {
                tracing::error!(tenant = %tid, error = %e, "cannot fetch OpenID configuration or signing keys");
                Err(AuthError::Unavailable(e))
            }
        }
    }

    async fn cached(&self, tid: &TenantId, kid: &str) -> Option<(DecodingKey, Vec<String>)> {
        let cache = self.cache.lock().await;
        let t = cache.tenants.get(tid.as_str())?;
        Some((t.keys.get(kid)?.clone(), t.issuers.clone()))
    }

    async fn fetch(&self, tid: &TenantId) -> Result<TenantKeys, String> {
        let mut issuers = vec![];
        let mut keys = HashMap::new();
        let mut uris: Vec<String> = vec![];
        for path in [
            ".well-known/openid-configuration",
            "v2.0/.well-known/openid-configuration",
        ] {
            let url = format!("{}/{}/{}", self.authority, tid, path);
            let cfg: OidcConfig = self.get_json(&url).await?;
            issuers.push(cfg.issuer);
            if !uris.contains(&cfg.jwks_uri) {
                uris.push(cfg.jwks_uri);
            }
        }
        for uri in uris {
            let set: JwkSet = self.get_json(&uri).await?;
            for jwk in &set.keys {
                if let (Some(kid), Ok(k)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
                {
                    keys.insert(kid, k);
                }
            }
        }
        if keys.is_empty() {
            return Err("the JWKS holds no usable key".into());
        }
        Ok(TenantKeys { issuers, keys })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status().as_u16()));
        }
        resp.json::<T>()
            .await
            .map_err(|e| format!("GET {url}: {e}"))
    }

    /// Fetch a tenant's OpenID configurations (v1 and v2) and key sets as
    /// verification does, and report what they say (`wipehook doctor`).
    pub async fn discover(&self, tid: &TenantId) -> Result<Discovery, String> {
        let url = format!(
            "{}/{}/.well-known/openid-configuration",
            self.authority, tid
        );
        let sent = time::OffsetDateTime::now_utc();
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let received = time::OffsetDateTime::now_utc();
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status().as_u16()));
        }
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let v1: OidcConfig = resp.json().await.map_err(|e| format!("GET {url}: {e}"))?;
        let half: time::Duration = (received - sent) / 2;
        let middle = sent + half;
        let clock_skew_secs = date.map(|d: time::OffsetDateTime| {
            let skew: time::Duration = d - middle;
            skew.as_seconds_f64()
        });
        let keys = self.fetch(tid).await?;
        let v2_url = format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            self.authority, tid
        );
        let v2: OidcConfig = self.get_json(&v2_url).await?;
        let mut jwks_uris = vec![v1.jwks_uri.clone()];
        if !jwks_uris.contains(&v2.jwks_uri) {
            jwks_uris.push(v2.jwks_uri);
        }
        Ok(Discovery {
            issuers: keys.issuers,
            jwks_uris,
            keys: keys.keys.len(),
            cloud_instance_name: v1.cloud_instance_name,
            clock_skew_secs,
        })
    }

    /// For readiness: are keys cached for every tenant (fetching if not)?
    pub async fn warm(&self) -> Result<(), String> {
        for t in self.tenants.keys() {
            let tid = TenantId::parse(t)?;
            let have = self.cache.lock().await.tenants.contains_key(t);
            if !have {
                let keys = self.fetch(&tid).await?;
                let mut c = self.cache.lock().await;
                c.last_fetch.insert(t.clone(), Instant::now());
                c.tenants.insert(t.clone(), keys);
            }
        }
        Ok(())
    }
}

/// An HTTP `Date` (IMF-fixdate, RFC 9110 §5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT").
pub fn parse_http_date(s: &str) -> Option<time::OffsetDateTime> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(s.trim(), &fmt)
        .ok()
        .map(|t| t.assume_utc())
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates_parse() {
        let t = super::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.unix_timestamp(), 784111777);
        assert!(super::parse_http_date("yesterday").is_none());
    }
}
