//! Simulated ARM / Microsoft Sentinel: incident entities and incident comments.

use actix_web::{HttpRequest, HttpResponse, http::Method, http::StatusCode, web};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::entra;
use crate::keys::AuthError;
use crate::shared::{Inner, Shared};
use crate::state::Comment;

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

fn incidents_prefix(inner: &Inner) -> String {
    format!(
        "{}/providers/microsoft.securityinsights/incidents/",
        inner.workspace_arm_id()
    )
    .to_ascii_lowercase()
}

/// The part of `path` after `.../Microsoft.SecurityInsights/Incidents/` (case-insensitive),
/// with the original case preserved.
fn after_incidents<'a>(inner: &Inner, path: &'a str) -> Option<&'a str> {
    let prefix = incidents_prefix(inner);
    let head = path.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(&prefix) {
        path.get(prefix.len()..)
    } else {
        None
    }
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

/// Catch-all for `/subscriptions/...`.
pub(crate) async fn handle(req: HttpRequest, data: Shared, body: web::Bytes) -> HttpResponse {
    data.apply_latency().await;
    let fault = data.st().arm_faults.pop_front();
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
    let claims = match data.keys.verify_request(&req, entra::ARM, rotated) {
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

    let path = req.path().trim_end_matches('/');
    let Some(rest) = after_incidents(&data, path) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The Resource '{path}' was not found in the simulated tenant."),
        );
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let method = req.method().clone();
    match (segs.as_slice(), method) {
        ([incident, e], Method::POST) if e.eq_ignore_ascii_case("entities") => {
            entities(&data, incident)
        }
        ([incident, a], Method::POST) if a.eq_ignore_ascii_case("alerts") => {
            alerts(&data, incident)
        }
        ([incident, c], Method::GET) if c.eq_ignore_ascii_case("comments") => {
            list_comments(&data, incident)
        }
        ([incident, c, id], Method::PUT) if c.eq_ignore_ascii_case("comments") => {
            put_comment(&data, incident, id, &body, &claims)
        }
        ([incident, c, id], Method::GET) if c.eq_ignore_ascii_case("comments") => {
            get_comment(&data, incident, id)
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
