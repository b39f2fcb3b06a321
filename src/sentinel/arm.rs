//! The Sentinel incident REST API through ARM: list an incident's entities,
//! create or update a comment (PUT with an id we choose, so a retry updates).
//!
//! And three reads for `wipehook doctor` and the canary, none of which
//! writes: the workspace's Sentinel onboarding state (does the workspace
//! resolve, is Sentinel on it), one page of its incident list, and the Azure
//! role assignments that apply to wipehook's identity there.

use serde_json::{Value, json};

use super::{AlertInfo, Candidate, alert_info, candidates_from_entities};
use crate::domain::{IncidentRef, WorkspaceRef};
use crate::identity::{Resource, TokenProvider};
use crate::upstream::{CallError, Lookup, retry_after};

/// Sentinel's limit per comment.
pub const MAX_COMMENT_CHARS: usize = 30_000;

/// api-version of `Microsoft.Authorization/roleAssignments` (Role Assignments - List For Scope).
const AUTHORIZATION_API_VERSION: &str = "2022-04-01";

/// Built-in Azure roles that let wipehook write incident comments
/// (update incident / add comment need Responder or Contributor; Owner and
/// Contributor include everything): their role definition ids, the same in
/// every tenant (Azure built-in roles), and names.
pub const COMMENT_ROLES: [(&str, &str); 4] = [
    (
        "3e150937-b8fe-4cfb-8069-0eaf05ecd056",
        "Microsoft Sentinel Responder",
    ),
    (
        "ab8e14d6-4a74-4a29-9ba8-549422addade",
        "Microsoft Sentinel Contributor",
    ),
    ("b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor"),
    ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner"),
];
/// Roles that read incidents but cannot comment.
pub const READ_ONLY_ROLES: [(&str, &str); 2] = [
    (
        "8d289c81-5878-46d4-8554-54e1e3d8b5cb",
        "Microsoft Sentinel Reader",
    ),
    ("acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader"),
];

/// A role assignment that applies at a scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignmentInfo {
    /// The role definition's GUID (the last segment of `roleDefinitionId`), lower case.
    pub role: String,
    pub scope: String,
}

impl RoleAssignmentInfo {
    /// The built-in role's name, when it is one wipehook knows.
    pub fn role_name(&self) -> Option<&'static str> {
        COMMENT_ROLES
            .iter()
            .chain(READ_ONLY_ROLES.iter())
            .find(|(id, _)| *id == self.role)
            .map(|(_, n)| *n)
    }
    pub fn allows_comments(&self) -> bool {
        COMMENT_ROLES.iter().any(|(id, _)| *id == self.role)
    }
}

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
            incident.url_path(),
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
            incident.url_path(),
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
            incident.url_path(),
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
            incident.url_path(),
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
            incident.url_path(),
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

impl ArmClient {
    /// `GET {workspace}/providers/Microsoft.SecurityInsights/onboardingStates/default`:
    /// the workspace resolves and Sentinel is enabled on it.
    pub async fn onboarding_state(
        &self,
        tokens: &TokenProvider,
        ws: &WorkspaceRef,
    ) -> Result<Lookup<()>, CallError> {
        let url = format!(
            "{}{}/providers/Microsoft.SecurityInsights/onboardingStates/default?api-version={}",
            self.base,
            ws.url_path(),
            self.api_version
        );
        Ok(
            match self
                .get(tokens, &url, "reading the Sentinel onboarding state")
                .await?
            {
                Lookup::Found(_) => Lookup::Found(()),
                Lookup::Missing(m) => Lookup::Missing(m),
                Lookup::Denied(m) => Lookup::Denied(m),
            },
        )
    }

    /// One page (`$top=1`) of the workspace's incident list: how many it held.
    pub async fn incidents_page(
        &self,
        tokens: &TokenProvider,
        ws: &WorkspaceRef,
    ) -> Result<Lookup<usize>, CallError> {
        let url = format!(
            "{}{}/providers/Microsoft.SecurityInsights/incidents?api-version={}&$top=1",
            self.base,
            ws.url_path(),
            self.api_version
        );
        Ok(match self.get(tokens, &url, "listing incidents").await? {
            Lookup::Found(v) => match v.get("value").and_then(Value::as_array) {
                Some(a) => Lookup::Found(a.len()),
                None => {
                    return Err(CallError::permanent(
                        "the incident list has no 'value' array",
                    ));
                }
            },
            Lookup::Missing(m) => Lookup::Missing(m),
            Lookup::Denied(m) => Lookup::Denied(m),
        })
    }

    /// The role assignments of `principal` that apply at the workspace: at it
    /// or above it (`$filter=principalId eq '...'` also lists those below the
    /// scope; they are left out). Assignments through a group are not listed
    /// by this filter.
    pub async fn role_assignments(
        &self,
        tokens: &TokenProvider,
        ws: &WorkspaceRef,
        principal: &uuid::Uuid,
    ) -> Result<Lookup<Vec<RoleAssignmentInfo>>, CallError> {
        let scope = ws.arm_id();
        let url = format!(
            "{}{}/providers/Microsoft.Authorization/roleAssignments?api-version={}&$filter={}",
            self.base,
            ws.url_path(),
            AUTHORIZATION_API_VERSION,
            urlencode(&format!("principalId eq '{}'", principal.hyphenated()))
        );
        let v = match self.get(tokens, &url, "listing role assignments").await? {
            Lookup::Found(v) => v,
            Lookup::Missing(m) => return Ok(Lookup::Missing(m)),
            Lookup::Denied(m) => return Ok(Lookup::Denied(m)),
        };
        let ws_lower = scope.to_ascii_lowercase();
        let list = v
            .get("value")
            .and_then(Value::as_array)
            .ok_or_else(|| CallError::permanent("the role assignment list has no 'value' array"))?
            .iter()
            .filter_map(|a| {
                let p = a.get("properties")?;
                let role = p
                    .get("roleDefinitionId")?
                    .as_str()?
                    .rsplit('/')
                    .next()?
                    .to_ascii_lowercase();
                let scope = p.get("scope")?.as_str()?.trim_end_matches('/').to_string();
                let s = scope.to_ascii_lowercase();
                let applies =
                    s.is_empty() || ws_lower == s || ws_lower.starts_with(&format!("{s}/"));
                applies.then_some(RoleAssignmentInfo { role, scope })
            })
            .collect();
        Ok(Lookup::Found(list))
    }

    /// One GET; 404 and 401/403 kept apart.
    async fn get(
        &self,
        tokens: &TokenProvider,
        url: &str,
        what: &str,
    ) -> Result<Lookup<Value>, CallError> {
        let token = tokens.token(Resource::Arm).await?;
        let resp = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| CallError::from_reqwest(what, e))?;
        let status = resp.status().as_u16();
        if matches!(status, 401 | 403 | 404) {
            let text = resp.text().await.unwrap_or_default();
            let msg = error_text(&text);
            return Ok(if status == 404 {
                Lookup::Missing(msg)
            } else {
                Lookup::Denied(format!("HTTP {status} {msg}"))
            });
        }
        read(resp, tokens, what).await.map(Lookup::Found)
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `error.code: error.message` of an ARM error body, else its start.
fn error_text(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some(format!(
                "{}: {}",
                e.get("code")?.as_str().unwrap_or(""),
                e.get("message").and_then(Value::as_str).unwrap_or("")
            ))
        })
        .unwrap_or_else(|| text.chars().take(300).collect())
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
