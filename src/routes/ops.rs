//! Liveness, readiness and metrics.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::ApiState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(api: web::Data<ApiState>) -> HttpResponse {
    if api.is_shutting_down() {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "shutting_down"}));
    }
    match api.ready().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(e) => {
            HttpResponse::ServiceUnavailable().json(json!({"status": "not_ready", "reason": e}))
        }
    }
}

pub async fn metrics(api: web::Data<ApiState>) -> HttpResponse {
    let stats = match api.store.stats().await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "store figures unavailable for /metrics");
            None
        }
    };
    for id in api.tenants.keys() {
        api.metrics
            .exchange_limit(id.as_str(), api.exchange_limits.current(id));
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(api.metrics.render(stats.as_ref()))
}
