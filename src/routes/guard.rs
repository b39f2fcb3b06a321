//! The kill switch (read it; engage or lift it with an approver's token) and
//! the audit trail of approvals, refusals, cancels and the switch.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::extract::{authenticate, read_json, refuse_if_stopping};
use super::runs::control_error;
use crate::auth::Need;
use crate::control;
use crate::domain::RunId;
use crate::state::ApiState;

/// `GET /api/v1/kill-switch`
pub async fn get_kill_switch(
    api: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&api, &req, Need::Read).await?;
    let ks = control::kill_switch(&api)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(shown(&ks, &caller.tenant)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetKillSwitch {
    engaged: bool,
    reason: Option<String>,
}

/// `POST /api/v1/kill-switch` `{"engaged": true|false, "reason": "..."}`
pub async fn set_kill_switch(
    api: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    refuse_if_stopping(&api)?;
    let caller = authenticate(&api, &req, Need::Approve).await?;
    let (body, _) = read_json(&api, payload).await?;
    let set: SetKillSwitch = serde_json::from_value(body).map_err(|e| {
        ApiError::new(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "bad_kill_switch",
            format!("expected {{\"engaged\": true|false, \"reason\": \"...\"}}: {e}"),
        )
    })?;
    let reason = set
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().any(char::is_control)) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "bad_kill_switch",
            "the reason must not contain control characters",
        ));
    }
    let change = control::set_kill_switch(&api, &caller, set.engaged, reason)
        .await
        .map_err(control_error)?;
    let mut body = shown(&change.state, &caller.tenant);
    body["changed"] = json!(change.changed);
    Ok(HttpResponse::Ok().json(body))
}

/// The kill switch as the API shows it to a caller of `tenant` (times in
/// RFC 3339): who threw it and why only to that approver's own tenant.
fn shown(ks: &crate::store::KillSwitch, tenant: &crate::domain::TenantId) -> serde_json::Value {
    let own = ks.tenant.as_ref().is_none_or(|t| t == tenant);
    json!({
        "engaged": ks.engaged,
        "by": if own { json!(ks.by) } else { json!("an approver of another tenant") },
        "at": ks.at.map(crate::report::rfc3339),
        "reason": if own { json!(ks.reason) } else { serde_json::Value::Null },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    run: Option<String>,
}

/// `GET /api/v1/audit[?run=<id>]`: the caller's tenant's approvals,
/// refusals and cancels, and the kill switch (service-wide), newest first.
pub async fn audit(api: web::Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&api, &req, Need::Approve).await?;
    // The query string is read only after authentication.
    let q = web::Query::<AuditQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("bad_query", format!("invalid query string: {e}")))?;
    let run = match q.run.as_deref() {
        None => None,
        Some(r) => Some(
            RunId::parse(r)
                .map_err(|_| ApiError::not_found("run_not_found", format!("no run {r}")))?,
        ),
    };
    let entries = control::audit_log(&api, &caller.tenant, run.as_ref())
        .await
        .map_err(ApiError::internal)?;
    let entries: Vec<_> = entries
        .into_iter()
        .map(|e| {
            json!({
                "at": crate::report::rfc3339(e.at),
                "tenant": e.tenant,
                "actor": e.actor,
                "actor_oid": e.actor_oid,
                "action": e.action,
                "run_id": e.run_id,
                "detail": e.detail,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "entries": entries })))
}
