//! Simulated Microsoft Graph: `GET /v1.0/users/{id}`.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde_json::json;
use time::OffsetDateTime;

use crate::keys::AuthError;
use crate::entra;
use crate::shared::Shared;

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

/// `GET /v1.0/users/{id-or-upn}[?$select=...]`
pub(crate) async fn get_user(
    req: HttpRequest,
    data: Shared,
    path: web::Path<String>,
) -> HttpResponse {
    data.apply_latency().await;
    let id = path.into_inner();
    if let Some(code) = data.st().graph_faults.pop_front() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let name = match code {
            429 => "TooManyRequests",
            503 => "serviceNotAvailable",
            504 => "UnknownError",
            _ => "generalException",
        };
        return graph_error(
            status,
            name,
            &format!("Simulated Graph failure (HTTP {code})."),
        );
    }
    let rotated = data.st().rotated;
    match data.keys.verify_request(&req, entra::GRAPH, rotated) {
        Ok(_) => {}
        Err(AuthError::Missing) => {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token is empty.",
            );
        }
        Err(AuthError::WrongAudience) => {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            );
        }
        Err(AuthError::Invalid(_)) => {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure.",
            );
        }
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
    // $select=a,b: only those properties (and id), as Graph does.
    let select: Option<Vec<String>> =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("$select").cloned())
            .map(|s| s.split(',').map(|p| p.trim().to_string()).collect());
    let body = match select {
        Some(fields) => {
            let mut o = serde_json::Map::new();
            o.insert(
                "@odata.context".into(),
                json!(format!(
                    "https://graph.microsoft.com/v1.0/$metadata#users({})/$entity",
                    fields.join(",")
                )),
            );
            o.insert("id".into(), full["id"].clone());
            for f in fields {
                if let Some(v) = full.get(&f) {
                    o.insert(f, v.clone());
                }
            }
            serde_json::Value::Object(o)
        }
        None => {
            let mut b = full;
            b["@odata.context"] = json!("https://graph.microsoft.com/v1.0/$metadata#users/$entity");
            b
        }
    };
    HttpResponse::Ok().json(body)
}
