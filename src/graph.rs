//! Microsoft Graph: resolve an Account entity that carries only `aadUserId`.

use std::time::Instant;

use serde_json::Value;

use crate::domain::Upn;
use crate::identity::{Resource, TokenProvider};
use crate::metrics::Metrics;
use crate::upstream::{CallError, retry_after};

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

    /// `GET /v1.0/users/{id}?$select=userPrincipalName`. `Ok(None)`: no such user.
    pub async fn user_principal_name(
        &self,
        tokens: &TokenProvider,
        object_id: &str,
    ) -> Result<Option<Upn>, CallError> {
        let id = uuid::Uuid::parse_str(object_id)
            .map_err(|_| CallError::permanent(format!("'{object_id}' is not an object id")))?;
        let url = format!("{}/v1.0/users/{}", self.base, id.hyphenated());
        let token = tokens.token(Resource::Graph).await?;
        let started = Instant::now();
        let resp = self
            .http
            .get(&url)
            .query(&[("$select", "userPrincipalName")])
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| CallError::from_reqwest("Graph user", e))?;
        let status = resp.status().as_u16();
        self.metrics
            .upstream_latency("graph", "get-user", status, started.elapsed());
        let ra = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        match status {
            200 => {
                let v: Value = serde_json::from_str(&text).map_err(|_| {
                    CallError::transient("Graph answered 200 with a body that is not JSON")
                })?;
                let upn = v
                    .get("userPrincipalName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Upn::parse(upn).map(Some).map_err(|e| {
                    CallError::permanent(format!(
                        "Graph returned an unusable userPrincipalName: {e}"
                    ))
                })
            }
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
