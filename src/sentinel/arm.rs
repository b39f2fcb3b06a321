//! The Sentinel incident REST API through ARM: list an incident's entities,
//! create or update a comment (PUT with an id we choose, so a retry updates).

use serde_json::{Value, json};

use super::{AlertInfo, Candidate, alert_info, candidates_from_entities};
use crate::domain::IncidentRef;
use crate::identity::{Resource, TokenProvider};
use crate::upstream::{CallError, retry_after};

/// Sentinel's limit per comment.
pub const MAX_COMMENT_CHARS: usize = 30_000;

#[derive(Clone, Debug)]
pub struct ArmClient {
    http: reqwest::Client,
    base: String,
    api_version: String,
}

impl ArmClient {
    pub fn new(http: reqwest::Client, arm_url: &str, api_version: &str) -> ArmClient {
        ArmClient {
            http,
            base: arm_url.trim_end_matches('/').to_string(),
            api_version: api_version.to_string(),
        }
    }

    /// `POST {incident}/entities`: the incident's entities as candidates.
    /// `Ok(None)`: ARM does not know the incident (yet: a Defender incident
    /// can reach Sentinel minutes after its automation ran).
    pub async fn incident_entities(
        &self,
        tokens: &TokenProvider,
        incident: &IncidentRef,
    ) -> Result<Option<Vec<Candidate>>, CallError> {
        let url = format!(
            "{}{}/entities?api-version={}",
            self.base,
            incident.arm_id(),
            self.api_version
        );
        let token = tokens.token(Resource::Arm).await?;
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await
            .map_err(|e| CallError::from_reqwest("ARM entities", e))?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let body = read(resp, tokens, "listing the incident's entities").await?;
        parse_entities_response(&body)
            .map(Some)
            .map_err(CallError::permanent)
    }

    /// `POST {incident}/alerts`: the incident's alerts (names, products).
    pub async fn incident_alerts(
        &self,
        tokens: &TokenProvider,
        incident: &IncidentRef,
    ) -> Result<Vec<AlertInfo>, CallError> {
        let url = format!(
            "{}{}/alerts?api-version={}",
            self.base,
            incident.arm_id(),
            self.api_version
        );
        let token = tokens.token(Resource::Arm).await?;
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await
            .map_err(|e| CallError::from_reqwest("ARM alerts", e))?;
        let body = read(resp, tokens, "listing the incident's alerts").await?;
        Ok(body
            .get("value")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(alert_info).collect())
            .unwrap_or_default())
    }

    /// `GET {incident}/comments/{id}`: is this comment on the incident?
    pub async fn comment_exists(
        &self,
        tokens: &TokenProvider,
        incident: &IncidentRef,
        comment_id: &str,
    ) -> Result<bool, CallError> {
        let url = format!(
            "{}{}/comments/{}?api-version={}",
            self.base,
            incident.arm_id(),
            comment_id,
            self.api_version
        );
        let token = tokens.token(Resource::Arm).await?;
        let resp = self
            .http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| CallError::from_reqwest("ARM comment", e))?;
        if resp.status().as_u16() == 404 {
            return Ok(false);
        }
        read(resp, tokens, "reading the incident comment").await?;
        Ok(true)
    }

    /// `GET {incident}/comments`: how many comments the incident has (every
    /// page; Sentinel allows 100).
    pub async fn count_comments(
        &self,
        tokens: &TokenProvider,
        incident: &IncidentRef,
    ) -> Result<usize, CallError> {
        let mut url = format!(
            "{}{}/comments?api-version={}",
            self.base,
            incident.arm_id(),
            self.api_version
        );
        let mut n = 0;
        for _ in 0..20 {
            let token = tokens.token(Resource::Arm).await?;
            let resp = self
                .http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| CallError::from_reqwest("ARM comments", e))?;
            let body = read(resp, tokens, "counting the incident's comments").await?;
            n += body
                .get("value")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            match body.get("nextLink").and_then(Value::as_str) {
                Some(next) if next.starts_with(&self.base) => url = next.to_string(),
                _ => break,
            }
        }
        Ok(n)
    }

    /// `PUT {incident}/comments/{id}`: create or update the run's comment.
    pub async fn put_comment(
        &self,
        tokens: &TokenProvider,
        incident: &IncidentRef,
        comment_id: &str,
        html: &str,
    ) -> Result<(), CallError> {
        let url = format!(
            "{}{}/comments/{}?api-version={}",
            self.base,
            incident.arm_id(),
            comment_id,
            self.api_version
        );
        let token = tokens.token(Resource::Arm).await?;
        let resp = self
            .http
            .put(&url)
            .bearer_auth(token)
            .json(&json!({"properties": {"message": html}}))
            .send()
            .await
            .map_err(|e| CallError::from_reqwest("ARM comment", e))?;
        read(resp, tokens, "writing the incident comment")
            .await
            .map(|_| ())
    }
}

async fn read(
    resp: reqwest::Response,
    tokens: &TokenProvider,
    what: &str,
) -> Result<Value, CallError> {
    let status = resp.status();
    let ra = retry_after(resp.headers());
    let text = resp
        .text()
        .await
        .map_err(|e| CallError::from_reqwest(what, e))?;
    if status.is_success() {
        return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
    }
    let msg = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some(format!(
                "{}: {}",
                e.get("code")?.as_str().unwrap_or(""),
                e.get("message").and_then(Value::as_str).unwrap_or("")
            ))
        })
        .unwrap_or_else(|| text.chars().take(300).collect());
    let reason = format!("ARM answered {} {what}: {msg}", status.as_u16());
    match status.as_u16() {
        401 => {
            tokens.invalidate();
            Err(CallError::Transient {
                reason,
                retry_after: None,
            })
        }
        408 | 409 | 429 | 500..=599 => Err(CallError::Transient {
            reason,
            retry_after: ra,
        }),
        // 403 is usually a missing role assignment fixed by an operator: keep trying.
        403 => Err(CallError::Transient {
            reason: format!(
                "{reason} (does wipehook's identity have Microsoft Sentinel Responder?)"
            ),
            retry_after: None,
        }),
        _ => Err(CallError::permanent(reason)),
    }
}

/// Parse `{"entities": [...]}` (IncidentEntitiesResponse).
pub fn parse_entities_response(v: &Value) -> Result<Vec<Candidate>, String> {
    let arr = v
        .get("entities")
        .or_else(|| v.get("Entities"))
        .and_then(Value::as_array)
        .ok_or("the entities response has no 'entities' array")?;
    Ok(candidates_from_entities(arr))
}
