//! What handlers take from a request: the authenticated caller, the body as
//! JSON within the limit, Logic Apps' tracking headers; and the one builder
//! of the asynchronous-pattern answer (`202` + `Location` + `Retry-After`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::Value;

use super::ApiError;
use crate::auth::{Caller, Need};
use crate::domain::RunId;
use crate::intake::Delivery;
use crate::state::ApiState;

/// New calls are refused while the instance stops (503, retry).
pub fn refuse_if_stopping(api: &ApiState) -> Result<(), ApiError> {
    if api.is_shutting_down() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this instance is shutting down; retry",
        )
        .with_retry_after(5));
    }
    Ok(())
}

pub async fn authenticate(
    api: &ApiState,
    req: &HttpRequest,
    need: Need,
) -> Result<Caller, ApiError> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    api.auth.verify(header, need).await.map_err(|e| {
        api.metrics.intake_rejected("unauthenticated");
        tracing::warn!(reason = %e, "call refused");
        ApiError::from(e)
    })
}

/// A body past this size takes a turn of `server.max_large_bodies`.
const LARGE_BODY: usize = 64 * 1024;

/// Read the body up to the configured limit, within
/// `server.body_read_timeout`, then parse it as JSON. A body with a NUL
/// character is refused.
pub async fn read_json(
    api: &ApiState,
    payload: web::Payload,
) -> Result<(Value, Vec<u8>), ApiError> {
    let timeout = api.settings.server.body_read_timeout;
    let buf = match tokio::time::timeout(timeout, read_body(api, payload)).await {
        Ok(r) => r?,
        Err(_) => {
            api.metrics.intake_rejected("body_timeout");
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body was not received within {} (server.body_read_timeout)",
                    crate::config::format_duration(timeout)
                ),
            ));
        }
    };
    let v: Value = serde_json::from_slice(&buf).map_err(|e| {
        api.metrics.intake_rejected("malformed_json");
        ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    if has_nul(&v) {
        api.metrics.intake_rejected("nul_character");
        return Err(ApiError::bad_request(
            "nul_character",
            "the body contains a NUL character (\\u0000): no Sentinel field carries one and PostgreSQL cannot store it; nothing was accepted",
        ));
    }
    Ok((v, buf))
}

async fn read_body(api: &ApiState, mut payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    let limit = api.settings.server.body_limit_bytes;
    let mut buf = Vec::new();
    let mut turn = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request("bad_body", format!("cannot read the body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            api.metrics.intake_rejected("too_large");
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds {limit} bytes (server.body_limit_bytes)"),
            ));
        }
        if turn.is_none() && buf.len() + chunk.len() > LARGE_BODY {
            // Waits for a turn; the body-read timeout bounds the wait.
            turn = Some(
                api.large_bodies
                    .acquire()
                    .await
                    .map_err(|_| ApiError::internal(anyhow::anyhow!("large-body turns closed")))?,
            );
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.len() <= 200)
}

/// Logic Apps' tracking headers, when present.
pub fn delivery(req: &HttpRequest) -> Delivery {
    Delivery {
        workflow_run_id: header(req, Delivery::RUN_ID),
        workflow_name: header(req, Delivery::NAME),
        action_tracking_id: header(req, Delivery::ACTION),
        client_tracking_id: header(req, Delivery::CLIENT),
    }
}

/// The run's status URL.
pub fn status_url(api: &ApiState, run: &RunId) -> String {
    format!(
        "{}/api/v1/runs/{}",
        api.settings.server.public_url.trim_end_matches('/'),
        run
    )
}

/// The asynchronous pattern's answer: `202`, `Location` (the status URL),
/// `Retry-After`, and `body`.
pub fn accepted(api: &ApiState, run: &RunId, body: &impl serde::Serialize) -> HttpResponse {
    let location = status_url(api, run);
    HttpResponse::Accepted()
        .insert_header(("Location", location))
        .insert_header((
            "Retry-After",
            api.settings.server.poll_after_secs.to_string(),
        ))
        .json(body)
}
