//! Simulated ARM / Microsoft Sentinel: incident entities and incident comments.

use actix_web::{HttpRequest, HttpResponse, http::Method, http::StatusCode, web};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::directory::role_definition_id;
use crate::entra;
use crate::keys::AuthError;
use crate::shared::{Inner, Shared};
use crate::state::Comment;
use crate::types::{Fault, HttpCall, SUBSCRIPTION_ID, Service};

/// Sentinel's documented per-comment limit (characters).
pub const MAX_COMMENT_CHARS: usize = 30_000;
/// Sentinel's documented per-incident comment limit.
pub const MAX_COMMENTS: usize = 100;

fn arm_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    let mut b = HttpResponse::build(status);
    b.insert_header(("x-ms-request-id", uuid::Uuid::new_v4().to_string()))
        .insert_header((
            "x-ms-correlation-request-id",
            uuid::Uuid::new_v4().to_string(),
        ));
    if status == StatusCode::TOO_MANY_REQUESTS {
        b.insert_header(("Retry-After", "1"));
    }
    if status == StatusCode::UNAUTHORIZED {
        b.insert_header((
            "WWW-Authenticate",
            "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header or an invalid token.\"",
        ));
    }
    b.json(json!({ "error": { "code": code, "message": message } }))
}

fn arm_time(t: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}

/// The part of `path` after `{workspace}/providers/Microsoft.SecurityInsights/Incidents/`
/// (case-insensitive; any workspace the sim serves), with the original case preserved.
fn after_incidents<'a>(inner: &Inner, path: &'a str) -> Option<&'a str> {
    inner.workspaces().into_iter().find_map(|ws| {
        let prefix = format!("{ws}/providers/microsoft.securityinsights/incidents/");
        let head = path.get(..prefix.len())?;
        head.eq_ignore_ascii_case(&prefix)
            .then(|| path.get(prefix.len()..))
            .flatten()
    })
}

/// Incident name from an incident ARM id (any case of the segment names).
pub(crate) fn incident_name_from_id(inner: &Inner, arm_id: &str) -> Option<String> {
    let rest = after_incidents(inner, arm_id.trim_end_matches('/'))?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then(|| name.to_string())
}

fn comment_json(inner: &Inner, incident: &str, c: &Comment) -> Value {
    json!({
        "id": format!(
            "{}/providers/Microsoft.SecurityInsights/Incidents/{incident}/Comments/{}",
            inner.workspace_arm_id(),
            c.id
        ),
        "name": c.id,
        "type": "Microsoft.SecurityInsights/Incidents/Comments",
        "etag": c.etag,
        "properties": {
            "message": c.message,
            "createdTimeUtc": arm_time(c.created),
            "lastModifiedTimeUtc": arm_time(c.modified),
            "author": {
                "objectId": c.author_oid,
                "email": null,
                "userPrincipalName": null,
                "name": "wipehook",
            }
        }
    })
}

/// Catch-all for `/subscriptions/...`; every request is logged.
pub(crate) async fn handle(req: HttpRequest, data: Shared, body: web::Bytes) -> HttpResponse {
    let resp = route(&req, &data, &body).await;
    data.st().arm_calls.push(HttpCall {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        status: resp.status().as_u16(),
    });
    resp
}

/// What a request needs of the caller's Azure role on the workspace.
#[derive(Clone, Copy, PartialEq)]
enum Needs {
    Read,
    Write,
}

fn forbidden(principal: &str, action: &str, scope: &str) -> HttpResponse {
    arm_error(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        &format!(
            "The client '{principal}' with object id '{principal}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
        ),
    )
}

/// Azure RBAC as ARM enforces it, for the built-in roles the sim knows.
fn authorize(
    data: &Inner,
    ws: &str,
    principal: &str,
    needs: Needs,
    action: &str,
) -> Option<HttpResponse> {
    let st = data.st();
    let roles = st.dir.azure_roles_at(principal, &ws);
    let ok = match needs {
        Needs::Read => roles.iter().any(|r| r.2),
        Needs::Write => roles.iter().any(|r| r.3),
    };
    drop(st);
    (!ok).then(|| forbidden(principal, action, &ws))
}

async fn route(req: &HttpRequest, data: &Shared, body: &web::Bytes) -> HttpResponse {
    data.apply_latency().await;
    let drawn = crate::faults::draw(&mut data.st(), Service::Arm, req.path(), "", "");
    let mut fault = None;
    match drawn {
        Some(Fault::Hang { ms }) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
        Some(Fault::Dropped) => return crate::faults::dropped(),
        Some(Fault::Status(c) | Fault::PlainStatus(c)) => fault = Some(c),
        Some(Fault::Throttle429 { .. } | Fault::ConcurrencyMessage) => fault = Some(429),
        Some(Fault::Unauthorized401) => fault = Some(401),
        Some(Fault::CmdletError { status, .. }) => fault = Some(status),
        None => {}
    }
    let fault = fault.or_else(|| data.st().arm_faults.pop_front());
    if let Some(code) = fault {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let name = match code {
            429 => "TooManyRequests",
            500 => "InternalServerError",
            502 => "BadGateway",
            503 => "ServiceUnavailable",
            504 => "GatewayTimeout",
            409 => "Conflict",
            _ => "SimulatedFault",
        };
        return arm_error(
            status,
            name,
            &format!("Simulated ARM failure (HTTP {code})."),
        );
    }

    let query = req.query_string();
    if !query
        .split('&')
        .any(|kv| kv.starts_with("api-version=") && kv.len() > "api-version=".len())
    {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    }

    let rotated = data.st().rotated;
    let claims = match data.keys.verify_request(req, entra::ARM, rotated) {
        Ok(c) => c,
        Err(AuthError::Missing) => {
            return arm_error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            );
        }
        Err(AuthError::WrongAudience) => {
            return arm_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationTokenAudience",
                "The access token has been obtained for wrong audience or resource. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'.",
            );
        }
        Err(AuthError::Invalid(_)) => {
            return arm_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            );
        }
    };
    let principal = claims
        .get("oid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();

    let path = req.path().trim_end_matches('/');
    let method = req.method().clone();
    let lower = path.to_ascii_lowercase();
    if let Some(scope) = lower.strip_suffix("/providers/microsoft.authorization/roleassignments") {
        if method != Method::GET {
            return arm_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The sim only lists role assignments.",
            );
        }
        let scope = &path[..scope.len()];
        return role_assignments(data, &principal, scope, req);
    }
    // The workspace the path is under: the sim's own or a hosted tenant's.
    let served = data.workspace_of(path);
    let ws = served.clone().unwrap_or_else(|| data.workspace_arm_id());
    let Some(under_ws) = served.as_ref().map(|ws| &path[ws.len()..]) else {
        let rg_workspaces = format!(
            "/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/soc-rg/providers/Microsoft.OperationalInsights/workspaces/"
        );
        if let Some(rest) = path
            .get(..rg_workspaces.len())
            .filter(|h| h.eq_ignore_ascii_case(&rg_workspaces))
            .map(|_| &path[rg_workspaces.len()..])
        {
            let name = rest.split('/').next().unwrap_or_default();
            return arm_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!(
                    "The Resource 'Microsoft.OperationalInsights/workspaces/{name}' under resource group 'soc-rg' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
                ),
            );
        }
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The Resource '{path}' was not found in the simulated tenant."),
        );
    };
    let under = under_ws.to_ascii_lowercase();
    if under == "/providers/microsoft.securityinsights/onboardingstates/default"
        && method == Method::GET
    {
        if let Some(r) = authorize(
            data,
            &ws,
            &principal,
            Needs::Read,
            "Microsoft.SecurityInsights/onboardingStates/read",
        ) {
            return r;
        }
        return HttpResponse::Ok().json(json!({
            "id": format!("{ws}/providers/Microsoft.SecurityInsights/onboardingStates/default"),
            "name": "default",
            "type": "Microsoft.SecurityInsights/onboardingStates",
            "properties": { "customerManagedKey": false },
        }));
    }
    if under == "/providers/microsoft.securityinsights/incidents" && method == Method::GET {
        if let Some(r) = authorize(
            data,
            &ws,
            &principal,
            Needs::Read,
            "Microsoft.SecurityInsights/incidents/read",
        ) {
            return r;
        }
        return list_incidents(data, req);
    }
    let Some(rest) = after_incidents(data, path) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The Resource '{path}' was not found in the simulated tenant."),
        );
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let needs = if method == Method::PUT {
        Needs::Write
    } else {
        Needs::Read
    };
    let action = if needs == Needs::Write {
        "Microsoft.SecurityInsights/incidents/comments/write"
    } else {
        "Microsoft.SecurityInsights/incidents/read"
    };
    if let Some(r) = authorize(data, &ws, &principal, needs, action) {
        return r;
    }
    match (segs.as_slice(), method) {
        ([incident, e], Method::POST) if e.eq_ignore_ascii_case("entities") => {
            entities(data, incident)
        }
        ([incident, a], Method::POST) if a.eq_ignore_ascii_case("alerts") => alerts(data, incident),
        ([incident, c], Method::GET) if c.eq_ignore_ascii_case("comments") => {
            list_comments(data, incident)
        }
        ([incident, c, id], Method::PUT) if c.eq_ignore_ascii_case("comments") => {
            put_comment(data, incident, id, body, &claims)
        }
        ([incident, c, id], Method::GET) if c.eq_ignore_ascii_case("comments") => {
            get_comment(data, incident, id)
        }
        _ => arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "The sim does not implement {} {}.",
                req.method(),
                req.path()
            ),
        ),
    }
}

fn query_map(req: &HttpRequest) -> std::collections::HashMap<String, String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

/// `GET {scope}/providers/Microsoft.Authorization/roleAssignments`: without a
/// filter, every assignment at, above or below the scope; `atScope()`: at or
/// above; `principalId eq '{id}'`: at, above or below, for that principal
/// (the documented filters). Reading needs `Microsoft.Authorization/*/read`,
/// which every built-in role the sim knows has.
fn role_assignments(data: &Inner, principal: &str, scope: &str, req: &HttpRequest) -> HttpResponse {
    let st = data.st();
    if st.dir.azure_roles_at(principal, scope).is_empty()
        && st
            .dir
            .azure_roles_at(principal, &data.workspace_arm_id())
            .is_empty()
    {
        drop(st);
        return forbidden(
            principal,
            "Microsoft.Authorization/roleAssignments/read",
            scope,
        );
    }
    let q = query_map(req);
    let filter = q.get("$filter").map(|f| f.trim().to_string());
    let wanted: Option<String> = match filter.as_deref() {
        None | Some("") | Some("atScope()") => None,
        Some(f) => match f
            .strip_prefix("principalId eq ")
            .map(|v| v.trim().trim_matches('\'').to_string())
        {
            Some(id) => Some(id),
            None => {
                drop(st);
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "UnsupportedQuery",
                    &format!("The filter '{f}' is not supported."),
                );
            }
        },
    };
    let at_scope_only = filter.as_deref() == Some("atScope()");
    let s = scope.trim_end_matches('/').to_ascii_lowercase();
    let value: Vec<Value> = st
        .dir
        .role_assignments
        .iter()
        .filter(|a| {
            wanted
                .as_deref()
                .is_none_or(|w| a.principal_id.eq_ignore_ascii_case(w))
        })
        .filter(|a| {
            let a_scope = a.scope.trim_end_matches('/').to_ascii_lowercase();
            let above_or_at = s == a_scope || s.starts_with(&format!("{a_scope}/"));
            let below = a_scope.starts_with(&format!("{s}/"));
            above_or_at || (!at_scope_only && below)
        })
        .map(|a| {
            json!({
                "properties": {
                    "roleDefinitionId": role_definition_id(&a.role_definition),
                    "principalId": a.principal_id,
                    "principalType": "ServicePrincipal",
                    "scope": a.scope,
                    "condition": null,
                    "conditionVersion": null,
                    "createdOn": "2026-01-05T10:00:00.0000000Z",
                    "updatedOn": "2026-01-05T10:00:00.0000000Z",
                    "createdBy": null,
                    "updatedBy": null,
                    "delegatedManagedIdentityResourceId": null,
                    "description": null,
                },
                "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", a.scope, a.name),
                "type": "Microsoft.Authorization/roleAssignments",
                "name": a.name,
            })
        })
        .collect();
    drop(st);
    HttpResponse::Ok().json(json!({ "value": value }))
}

/// `GET {workspace}/providers/Microsoft.SecurityInsights/incidents[?$top=n]`.
fn list_incidents(data: &Inner, req: &HttpRequest) -> HttpResponse {
    let top = query_map(req)
        .get("$top")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(50);
    let ws = data.workspace_arm_id();
    let st = data.st();
    let all: Vec<Value> = st
        .incidents
        .iter()
        .enumerate()
        .map(|(i, inc)| {
            json!({
                "id": format!("{ws}/providers/Microsoft.SecurityInsights/Incidents/{}", inc.name),
                "name": inc.name,
                "etag": "\"0300bf09-0000-0000-0000-5c37296e0000\"",
                "type": "Microsoft.SecurityInsights/Incidents",
                "properties": {
                    "title": format!("Simulated incident {}", inc.name),
                    "severity": "High",
                    "status": "New",
                    "incidentNumber": i + 1,
                    "createdTimeUtc": "2026-01-05T10:00:00.0000000Z",
                    "lastModifiedTimeUtc": "2026-01-05T10:00:00.0000000Z",
                    "providerName": "Azure Sentinel",
                    "providerIncidentId": (i + 1).to_string(),
                    "additionalData": { "alertsCount": inc.alerts.len(), "commentsCount": inc.comments.len() },
                },
            })
        })
        .collect();
    drop(st);
    let mut body = json!({ "value": all.iter().take(top).cloned().collect::<Vec<_>>() });
    if all.len() > top {
        body["nextLink"] = json!(format!(
            "{}{ws}/providers/Microsoft.SecurityInsights/incidents?api-version=2025-09-01&$skipToken={top}",
            data.base_url(req)
        ));
    }
    HttpResponse::Ok().json(body)
}

/// `POST {incident}/alerts`: `{"value": [SecurityAlert...]}`.
fn alerts(data: &Inner, incident: &str) -> HttpResponse {
    let st = data.st();
    let Some(inc) = st.incident(incident) else {
        drop(st);
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Incident '{incident}' was not found in workspace 'soc-ws'."),
        );
    };
    let body = json!({ "value": inc.alerts });
    drop(st);
    HttpResponse::Ok().json(body)
}

fn entities(data: &Inner, incident: &str) -> HttpResponse {
    let st = data.st();
    let Some(inc) = st.incident(incident) else {
        drop(st);
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Incident '{incident}' was not found in workspace 'soc-ws'."),
        );
    };
    let mut meta: Vec<(String, usize)> = Vec::new();
    for e in &inc.entities {
        let kind = e
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("Unknown")
            .to_string();
        match meta.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => meta.push((kind, 1)),
        }
    }
    let body = json!({
        "entities": inc.entities,
        "metaData": meta
            .into_iter()
            .map(|(k, n)| json!({"entityKind": k, "count": n}))
            .collect::<Vec<_>>(),
    });
    drop(st);
    HttpResponse::Ok().json(body)
}

fn list_comments(data: &Inner, incident: &str) -> HttpResponse {
    let st = data.st();
    let value: Vec<Value> = st
        .incident(incident)
        .map(|i| {
            i.comments
                .iter()
                .map(|c| comment_json(data, &i.name, c))
                .collect()
        })
        .unwrap_or_default();
    drop(st);
    HttpResponse::Ok().json(json!({ "value": value }))
}

fn get_comment(data: &Inner, incident: &str, id: &str) -> HttpResponse {
    let st = data.st();
    let found = st.incident(incident).and_then(|i| {
        i.comments
            .iter()
            .find(|c| c.id.eq_ignore_ascii_case(id))
            .map(|c| comment_json(data, &i.name, c))
    });
    drop(st);
    match found {
        Some(v) => HttpResponse::Ok().json(v),
        None => arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Comment '{id}' was not found on incident '{incident}'."),
        ),
    }
}

fn put_comment(
    data: &Inner,
    incident: &str,
    id: &str,
    body: &[u8],
    claims: &Value,
) -> HttpResponse {
    data.st().comment_puts += 1;
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let Some(message) = parsed
        .as_ref()
        .and_then(|v| v.pointer("/properties/message"))
        .and_then(Value::as_str)
    else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The request body is invalid: 'properties.message' is required.",
        );
    };
    let len = message.chars().count();
    if len > MAX_COMMENT_CHARS {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "The comment message length ({len} characters) exceeds the maximum allowed length of {MAX_COMMENT_CHARS} characters."
            ),
        );
    }
    let author = claims
        .get("oid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let now = OffsetDateTime::now_utc();
    let mut st = data.st();
    let inc = st.incident_mut_or_create(incident);
    let inc_name = inc.name.clone();
    let (status, comment) = if let Some(c) = inc
        .comments
        .iter_mut()
        .find(|c| c.id.eq_ignore_ascii_case(id))
    {
        c.message = message.to_string();
        c.modified = now;
        c.puts += 1;
        c.etag = uuid::Uuid::new_v4().to_string();
        (StatusCode::OK, c.clone())
    } else if inc.comments.len() >= MAX_COMMENTS {
        drop(st);
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Incident '{incident}' already has the maximum number of comments ({MAX_COMMENTS}); adding a new comment exceeds the limit."
            ),
        );
    } else {
        let c = Comment {
            id: id.to_string(),
            message: message.to_string(),
            first_message: message.to_string(),
            puts: 1,
            created: now,
            modified: now,
            etag: uuid::Uuid::new_v4().to_string(),
            author_oid: author,
        };
        inc.comments.push(c.clone());
        (StatusCode::CREATED, c)
    };
    drop(st);
    HttpResponse::build(status).json(comment_json(data, &inc_name, &comment))
}
