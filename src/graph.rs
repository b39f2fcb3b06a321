//! Microsoft Graph: who a person is. Every target is resolved here before any
//! decision: by the entity's object id when it gives one, else by the address
//! it names (as a UPN, then as any of a user's SMTP proxy addresses), so that
//! the policy judges the person and every address they have.

use std::time::Instant;

use serde_json::Value;

use crate::domain::{DirectoryUser, Upn};
use crate::identity::{Resource, TokenProvider};
use crate::metrics::Metrics;
use crate::upstream::{CallError, retry_after};

const SELECT: &str = "id,userPrincipalName,displayName,mail,proxyAddresses";

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    metrics: Metrics,
}

impl GraphClient {
    pub fn new(http: reqwest::Client, graph_url: &str, metrics: Metrics) -> GraphClient {
        GraphClient {
            http,
            base: graph_url.trim_end_matches('/').to_string(),
            metrics,
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
            429 | 500..=599 => Err(CallError::Transient {
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
            429 | 500..=599 => Err(CallError::Transient {
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
