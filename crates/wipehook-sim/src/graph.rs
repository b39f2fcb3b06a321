//! Simulated Microsoft Graph: `GET /v1.0/users/{id}` and a user search by proxy address.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::directory::{AppRole, Application, ServicePrincipal};
use crate::entra;
use crate::keys::AuthError;
use crate::shared::Shared;
use crate::state::User;
use crate::types::{Fault, HttpCall, Service};

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

/// Graph application permissions that allow a kind of read.
const READ_USERS: [&str; 3] = ["User.Read.All", "User.ReadWrite.All", "Directory.Read.All"];
const REVOKE: [&str; 3] = [
    "User.RevokeSessions.All",
    "User.ReadWrite.All",
    "Directory.ReadWrite.All",
];
const ENABLE_DISABLE: [&str; 3] = [
    "User.EnableDisableAccount.All",
    "User.ReadWrite.All",
    "Directory.ReadWrite.All",
];
const RISKY_USERS: [&str; 1] = ["IdentityRiskyUser.ReadWrite.All"];
const READ_APPS: [&str; 3] = [
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Directory.Read.All",
];

/// Injected faults, the bearer token and its app roles, for every Graph route.
async fn preamble(req: &HttpRequest, data: &Shared, needs: &[&str]) -> Option<HttpResponse> {
    data.apply_latency().await;
    let drawn = crate::faults::draw(&mut data.st(), Service::Graph, req.path(), "", "");
    let mut fault = None;
    match drawn {
        Some(Fault::Hang { ms }) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
        Some(Fault::Dropped) => return Some(crate::faults::dropped()),
        Some(Fault::Status(c) | Fault::PlainStatus(c)) => fault = Some(c),
        Some(Fault::Throttle429 { .. } | Fault::ConcurrencyMessage) => fault = Some(429),
        Some(Fault::Unauthorized401) => fault = Some(401),
        Some(Fault::CmdletError { status, .. }) => fault = Some(status),
        None => {}
    }
    if let Some(code) = fault.or_else(|| data.st().graph_faults.pop_front()) {
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
        Ok(claims) => {
            let roles: Vec<&str> = claims
                .get("roles")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if needs.iter().any(|n| roles.contains(n)) {
                return None;
            }
            return Some(graph_error(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ));
        }
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

fn log(data: &Shared, req: &HttpRequest, resp: HttpResponse) -> HttpResponse {
    data.st().graph_calls.push(HttpCall {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        status: resp.status().as_u16(),
    });
    resp
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
        "accountEnabled": u.enabled,
        "onPremisesSyncEnabled": if u.on_premises_synced { json!(true) } else { Value::Null },
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
    let resp = user_by_id(&req, &data, path.into_inner()).await;
    log(&data, &req, resp)
}

async fn user_by_id(req: &HttpRequest, data: &Shared, id: String) -> HttpResponse {
    let req = req.clone();
    if let Some(r) = preamble(&req, data, &READ_USERS).await {
        return r;
    }
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

fn user_missing(id: &str) -> HttpResponse {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// `POST /v1.0/users/{id}/revokeSignInSessions` -> `200 {"value": true}`.
pub(crate) async fn revoke_sessions(
    req: HttpRequest,
    data: Shared,
    path: web::Path<String>,
) -> HttpResponse {
    let resp = async {
        if let Some(r) = preamble(&req, &data, &REVOKE).await {
            return r;
        }
        let id = path.into_inner();
        let mut st = data.st();
        match st
            .users
            .iter_mut()
            .find(|u| u.object_id.eq_ignore_ascii_case(&id) || u.upn.eq_ignore_ascii_case(&id))
        {
            Some(u) => {
                u.sessions_revoked_at = Some(OffsetDateTime::now_utc());
                HttpResponse::Ok().json(json!({
                    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean",
                    "value": true
                }))
            }
            None => user_missing(&id),
        }
    }
    .await;
    log(&data, &req, resp)
}

/// `PATCH /v1.0/users/{id}` with `accountEnabled` -> `204`.
pub(crate) async fn patch_user(
    req: HttpRequest,
    data: Shared,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> HttpResponse {
    let resp = async {
        if let Some(r) = preamble(&req, &data, &ENABLE_DISABLE).await {
            return r;
        }
        let id = path.into_inner();
        let Some(enabled) = body.get("accountEnabled").and_then(Value::as_bool) else {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                "The sim only updates accountEnabled.",
            );
        };
        let mut st = data.st();
        match st
            .users
            .iter_mut()
            .find(|u| u.object_id.eq_ignore_ascii_case(&id) || u.upn.eq_ignore_ascii_case(&id))
        {
            Some(u) => {
                u.enabled = enabled;
                HttpResponse::NoContent().finish()
            }
            None => user_missing(&id),
        }
    }
    .await;
    log(&data, &req, resp)
}

/// `POST /v1.0/identityProtection/riskyUsers/confirmCompromised`
/// `{"userIds": [...]}` -> `204`; a tenant without Entra ID P2 is refused
/// (403; the exact error Graph gives is unverified: the sim names the licence).
pub(crate) async fn confirm_compromised(
    req: HttpRequest,
    data: Shared,
    body: web::Json<Value>,
) -> HttpResponse {
    let resp = async {
        if let Some(r) = preamble(&req, &data, &RISKY_USERS).await {
            return r;
        }
        let mut st = data.st();
        if !st.p2 {
            return graph_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Your tenant is not licensed for this feature: Microsoft Entra ID P2 is required.",
            );
        }
        let ids: Vec<String> = body
            .get("userIds")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            if let Some(u) = st
                .users
                .iter_mut()
                .find(|u| u.object_id.eq_ignore_ascii_case(&id))
            {
                u.confirmed_compromised = true;
            }
        }
        HttpResponse::NoContent().finish()
    }
    .await;
    log(&data, &req, resp)
}

/// `GET /v1.0/users?$filter=proxyAddresses/any(p:p eq 'smtp:x')` (the only
/// filter form the sim understands; values compare case-insensitively, as in
/// the directory).
pub(crate) async fn list_users(req: HttpRequest, data: Shared) -> HttpResponse {
    let resp = find_users(&req, &data).await;
    log(&data, &req, resp)
}

async fn find_users(req: &HttpRequest, data: &Shared) -> HttpResponse {
    let req = req.clone();
    if let Some(r) = preamble(&req, data, &READ_USERS).await {
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
    if let Some(r) = preamble(&req, &data, &["SecurityIncident.ReadWrite.All"]).await {
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
    if let Some(r) = preamble(
        &req,
        &data,
        &[
            "SecurityIncident.Read.All",
            "SecurityIncident.ReadWrite.All",
        ],
    )
    .await
    {
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

// ------------------------------------------------------------------ directory

fn app_roles_json(roles: &[AppRole]) -> Value {
    json!(
        roles
            .iter()
            .map(|r| json!({
                "id": r.id,
                "value": r.value,
                "displayName": r.value,
                "description": r.value,
                "allowedMemberTypes": r.allowed_member_types,
                "isEnabled": r.is_enabled,
                "origin": "Application",
            }))
            .collect::<Vec<_>>()
    )
}

fn application_json(a: &Application) -> Value {
    json!({
        "id": a.object_id,
        "appId": a.app_id,
        "displayName": a.display_name,
        "signInAudience": "AzureADMyOrg",
        "identifierUris": a.identifier_uris,
        "appRoles": app_roles_json(&a.app_roles),
        "api": {
            "requestedAccessTokenVersion": a.token_version,
            "oauth2PermissionScopes": [],
        },
    })
}

fn service_principal_json(s: &ServicePrincipal) -> Value {
    json!({
        "id": s.object_id,
        "appId": s.app_id,
        "displayName": s.display_name,
        "servicePrincipalType": s.sp_type,
        "accountEnabled": true,
        "appRoleAssignmentRequired": s.assignment_required,
        "servicePrincipalNames": [s.app_id],
        "appRoles": app_roles_json(&s.app_roles),
    })
}

/// The value of `key eq 'value'`, or of `identifierUris/any(x:x eq 'value')`.
fn filter_value<'a>(filter: &'a str, key: &str) -> Option<&'a str> {
    let f = filter.trim();
    let lit = if key == "identifierUris" {
        let inner = f.strip_prefix("identifierUris/any(")?.strip_suffix(')')?;
        let (var, cond) = inner.split_once(':')?;
        cond.trim()
            .strip_prefix(var.trim())?
            .trim()
            .strip_prefix("eq")?
            .trim()
    } else {
        f.strip_prefix(key)?.trim().strip_prefix("eq")?.trim()
    };
    lit.strip_prefix('\'')?.strip_suffix('\'')
}

fn not_found(what: &str) -> HttpResponse {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{what}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// `applications`, `servicePrincipals` and their app role assignments: the
/// reads `wipehook doctor` makes (Application.Read.All).
pub(crate) async fn directory(req: HttpRequest, data: Shared) -> HttpResponse {
    let resp = directory_read(&req, &data).await;
    log(&data, &req, resp)
}

async fn directory_read(req: &HttpRequest, data: &Shared) -> HttpResponse {
    let path = req
        .path()
        .replace("%27", "'")
        .replace("%28", "(")
        .replace("%29", ")");
    let tail = path.strip_prefix("/v1.0/").unwrap_or_default().to_string();
    let known = tail.starts_with("applications") || tail.starts_with("servicePrincipals");
    if !known {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{tail}'."),
        );
    }
    if req.method() != actix_web::http::Method::GET {
        return graph_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "The simulated directory is read-only.",
        );
    }
    if let Some(r) = preamble(req, data, &READ_APPS).await {
        return r;
    }
    let q = query(req);
    let filter = q.get("$filter").map(String::as_str);
    let st = data.st();
    let dir = &st.dir;
    let by_app_key = |t: &str, prefix: &str| -> Option<String> {
        t.strip_prefix(prefix)?
            .strip_prefix("(appId='")?
            .strip_suffix("')")
            .map(str::to_string)
    };
    let collection = |kind: &str, value: Vec<Value>| {
        HttpResponse::Ok().json(json!({
            "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{kind}"),
            "value": value,
        }))
    };
    if tail == "applications" {
        let found: Vec<Value> = dir
            .applications
            .iter()
            .filter(|a| match filter {
                None => true,
                Some(f) => {
                    if let Some(uri) = filter_value(f, "identifierUris") {
                        a.identifier_uris.iter().any(|u| u == uri)
                    } else if let Some(id) = filter_value(f, "appId") {
                        a.app_id.eq_ignore_ascii_case(id)
                    } else {
                        false
                    }
                }
            })
            .map(application_json)
            .collect();
        return collection("applications", found);
    }
    if let Some(app_id) = by_app_key(&tail, "applications") {
        return match dir
            .applications
            .iter()
            .find(|a| a.app_id.eq_ignore_ascii_case(&app_id))
        {
            Some(a) => HttpResponse::Ok().json(application_json(a)),
            None => not_found(&app_id),
        };
    }
    if tail == "servicePrincipals" {
        let found: Vec<Value> = dir
            .service_principals
            .iter()
            .filter(|s| {
                filter
                    .and_then(|f| filter_value(f, "appId"))
                    .is_none_or(|id| s.app_id.eq_ignore_ascii_case(id))
            })
            .map(service_principal_json)
            .collect();
        return collection("servicePrincipals", found);
    }
    if let Some(app_id) = by_app_key(&tail, "servicePrincipals") {
        return match dir.sp_by_app(&app_id) {
            Some(s) => HttpResponse::Ok().json(service_principal_json(s)),
            None => not_found(&app_id),
        };
    }
    let parts: Vec<&str> = tail.split('/').collect();
    match parts.as_slice() {
        ["servicePrincipals", id] => match dir.sp(id) {
            Some(s) => HttpResponse::Ok().json(service_principal_json(s)),
            None => not_found(id),
        },
        [
            "servicePrincipals",
            id,
            rel @ ("appRoleAssignments" | "appRoleAssignedTo"),
        ] => {
            let Some(sp) = dir.sp(id) else {
                return not_found(id);
            };
            let held = *rel == "appRoleAssignments";
            let value: Vec<Value> = dir
                .app_role_assignments
                .iter()
                .filter(|a| {
                    if held {
                        a.principal_id.eq_ignore_ascii_case(&sp.object_id)
                    } else {
                        a.resource_id.eq_ignore_ascii_case(&sp.object_id)
                    }
                })
                .map(|a| {
                    let name = |id: &str| dir.sp(id).map(|s| s.display_name.clone());
                    json!({
                        "id": a.id,
                        "deletedDateTime": null,
                        "appRoleId": a.app_role_id,
                        "createdDateTime": "2026-01-05T10:00:00Z",
                        "principalDisplayName": name(&a.principal_id),
                        "principalId": a.principal_id,
                        "principalType": "ServicePrincipal",
                        "resourceDisplayName": name(&a.resource_id),
                        "resourceId": a.resource_id,
                    })
                })
                .collect();
            collection(&format!("servicePrincipals('{id}')/{rel}"), value)
        }
        _ => graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{tail}'."),
        ),
    }
}
