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
        // A failing canary check degrades, never fails, readiness: every
        // replica sees the same tenant, so taking them out of rotation would
        // only stop the calls that still work.
        Ok(()) => match api.canary.failing() {
            failing if failing.is_empty() => HttpResponse::Ok().json(json!({"status": "ready"})),
            failing => HttpResponse::Ok().json(json!({
                "status": "degraded",
                "degraded": failing.iter().map(|e| json!({
                    "tenant": e.tenant,
                    "check": e.check,
                    "since": crate::report::rfc3339(e.since_ms),
                    "reason": e.reason,
                })).collect::<Vec<_>>(),
            })),
        },
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
