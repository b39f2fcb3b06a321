//! Simulated Microsoft Graph: `GET /v1.0/users/{id}` and a user search by proxy address.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::entra;
use crate::keys::AuthError;
use crate::shared::Shared;
use crate::state::User;

fn graph_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let date = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut b = HttpResponse::build(status);
    b.insert_header(("request-id", request_id.clone()));
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        b.insert_header(("Retry-After", "1"));
    }
    b.json(json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": { "date": date, "request-id": request_id, "client-request-id": request_id }
        }
    }))
}

/// Injected faults and the bearer token, for every Graph route.
async fn preamble(req: &HttpRequest, data: &Shared) -> Option<HttpResponse> {
    data.apply_latency().await;
    if let Some(code) = data.st().graph_faults.pop_front() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let name = match code {
            429 => "TooManyRequests",
            503 => "serviceNotAvailable",
            504 => "UnknownError",
            _ => "generalException",
        };
        return Some(graph_error(
            status,
            name,
            &format!("Simulated Graph failure (HTTP {code})."),
        ));
    }
    let rotated = data.st().rotated;
    let text = match data.keys.verify_request(req, entra::GRAPH, rotated) {
        Ok(_) => return None,
        Err(AuthError::Missing) => "Access token is empty.",
        Err(AuthError::WrongAudience) => "Access token validation failure. Invalid audience.",
        Err(AuthError::Invalid(_)) => "Access token validation failure.",
    };
    Some(graph_error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        text,
    ))
}

fn query(req: &HttpRequest) -> std::collections::HashMap<String, String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

/// The user resource, reduced to `$select` (plus `id`) when given, as Graph does.
fn user_json(u: &User, select: Option<&str>) -> Value {
    let local = u.upn.split('@').next().unwrap_or(&u.upn).to_string();
    let full = json!({
        "id": u.object_id,
        "userPrincipalName": u.upn,
        "displayName": u.display_name,
        "mail": u.primary_smtp,
        "mailNickname": local,
        "proxyAddresses": u.smtp_addresses().iter().enumerate().map(|(i, a)| if i == 0 { format!("SMTP:{a}") } else { format!("smtp:{a}") }).collect::<Vec<_>>(),
        "businessPhones": [],
        "givenName": null,
        "surname": null,
        "jobTitle": null,
        "mobilePhone": null,
        "officeLocation": null,
        "preferredLanguage": null,
    });
    match select {
        Some(fields) => {
            let mut o = Map::new();
            o.insert("id".into(), full["id"].clone());
            for f in fields.split(',').map(str::trim) {
                if let Some(v) = full.get(f) {
                    o.insert(f.to_string(), v.clone());
                }
            }
            Value::Object(o)
        }
        None => full,
    }
}

/// `GET /v1.0/users/{id-or-upn}[?$select=...]`: by object id or UPN only
/// (Graph does not resolve proxy addresses here).
pub(crate) async fn get_user(
    req: HttpRequest,
    data: Shared,
    path: web::Path<String>,
) -> HttpResponse {
    if let Some(r) = preamble(&req, &data).await {
        return r;
    }
    let id = path.into_inner();
    let user = {
        let st = data.st();
        st.users
            .iter()
            .find(|u| u.object_id.eq_ignore_ascii_case(&id) || u.upn.eq_ignore_ascii_case(&id))
            .cloned()
    };
    let Some(u) = user else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        );
    };
    let q = query(&req);
    let mut body = user_json(&u, q.get("$select").map(String::as_str));
    body["@odata.context"] = json!("https://graph.microsoft.com/v1.0/$metadata#users/$entity");
    HttpResponse::Ok().json(body)
}

/// `GET /v1.0/users?$filter=proxyAddresses/any(p:p eq 'smtp:x')` (the only
/// filter form the sim understands; values compare case-insensitively, as in
/// the directory).
pub(crate) async fn list_users(req: HttpRequest, data: Shared) -> HttpResponse {
    if let Some(r) = preamble(&req, &data).await {
        return r;
    }
    let q = query(&req);
    let Some(filter) = q.get("$filter") else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "The simulated tenant lists users only with a proxyAddresses filter.",
        );
    };
    let value = filter
        .trim()
        .strip_prefix("proxyAddresses/any(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| {
            let (var, cond) = r.split_once(':')?;
            let cond = cond.trim().strip_prefix(var.trim())?.trim();
            let lit = cond.strip_prefix("eq")?.trim();
            Some(
                lit.strip_prefix('\'')?
                    .strip_suffix('\'')?
                    .replace("''", "'"),
            )
        });
    let Some(value) = value else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            &format!("Unsupported filter: {filter}"),
        );
    };
    let Some(address) = value
        .split_once(':')
        .filter(|(k, _)| k.eq_ignore_ascii_case("smtp"))
        .map(|(_, a)| a.to_ascii_lowercase())
    else {
        return HttpResponse::Ok().json(json!({"value": []}));
    };
    let select = q.get("$select").map(String::as_str);
    let found: Vec<Value> = data
        .st()
        .users
        .iter()
        .filter(|u| u.smtp_addresses().contains(&address))
        .map(|u| user_json(u, select))
        .collect();
    HttpResponse::Ok().json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users",
        "value": found,
    }))
}

/// `POST /v1.0/security/incidents/{id}/comments`: a comment on the Defender
/// incident (`alertComment`), appended.
pub(crate) async fn post_incident_comment(
    req: HttpRequest,
    data: Shared,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(r) = preamble(&req, &data).await {
        return r;
    }
    let id = path.into_inner();
    let text = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("comment").and_then(Value::as_str).map(String::from));
    let Some(text) = text else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The request body must be an alertComment with 'comment'.",
        );
    };
    let mut st = data.st();
    let Some(inc) = st
        .incidents
        .iter_mut()
        .find(|i| i.defender_id.as_deref() == Some(id.as_str()))
    else {
        drop(st);
        return graph_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Incident '{id}' was not found."),
        );
    };
    inc.defender_comments.push(text);
    let comments: Vec<Value> = inc
        .defender_comments
        .iter()
        .map(|c| json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": c, "createdByDisplayName": "wipehook"}))
        .collect();
    drop(st);
    HttpResponse::Ok().json(json!({ "value": comments }))
}

/// `GET /v1.0/security/incidents/{id}`: the Defender incident with its comments.
pub(crate) async fn get_incident(
    req: HttpRequest,
    data: Shared,
    path: web::Path<String>,
) -> HttpResponse {
    if let Some(r) = preamble(&req, &data).await {
        return r;
    }
    let id = path.into_inner();
    let st = data.st();
    let Some(inc) = st
        .incidents
        .iter()
        .find(|i| i.defender_id.as_deref() == Some(id.as_str()))
    else {
        drop(st);
        return graph_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Incident '{id}' was not found."),
        );
    };
    let body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#security/incidents/$entity",
        "id": id,
        "displayName": inc.name,
        "comments": inc.defender_comments.iter().map(|c| json!({"comment": c, "createdByDisplayName": "wipehook"})).collect::<Vec<_>>(),
    });
    drop(st);
    HttpResponse::Ok().json(body)
}
