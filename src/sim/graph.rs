//! Simulated Microsoft Graph: `GET /v1.0/users/{id}`.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde_json::json;
use time::OffsetDateTime;

use super::keys::AuthError;
use super::{Shared, entra};

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
    let selected = req.query_string().contains("select=");
    let local = u.upn.split('@').next().unwrap_or(&u.upn).to_string();
    let body = if selected {
        json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(userPrincipalName)/$entity",
            "id": u.object_id,
            "userPrincipalName": u.upn,
        })
    } else {
        json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
            "id": u.object_id,
            "userPrincipalName": u.upn,
            "displayName": local,
            "mail": u.upn,
            "businessPhones": [],
            "givenName": null,
            "surname": null,
            "jobTitle": null,
            "mobilePhone": null,
            "officeLocation": null,
            "preferredLanguage": null,
        })
    };
    HttpResponse::Ok().json(body)
}
