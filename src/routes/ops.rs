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
        // only stop the calls that still work. So does the kill switch: calls
        // are still accepted (and held), nothing is lost.
        Ok(()) => {
            let failing = api.canary.failing();
            let ks = crate::control::kill_switch(&api)
                .await
                .ok()
                .filter(|k| k.engaged);
            let mut body = json!({"status": "ready"});
            if !failing.is_empty() {
                body["status"] = json!("degraded");
                body["degraded"] = json!(
                    failing
                        .iter()
                        .map(|e| json!({
                            "tenant": e.tenant,
                            "check": e.check,
                            "since": crate::report::rfc3339(e.since_ms),
                            "reason": e.reason,
                        }))
                        .collect::<Vec<_>>()
                );
            }
            if let Some(ks) = ks {
                body["status"] = json!("degraded");
                // Unauthenticated: the state and its time, not who or why.
                body["kill_switch"] = json!({
                    "engaged": true,
                    "at": ks.at.map(crate::report::rfc3339),
                });
            }
            HttpResponse::Ok().json(body)
        }
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
    match crate::control::kill_switch(&api).await {
        Ok(ks) => api.metrics.set_kill_switch(ks.engaged),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "kill switch unreadable for /metrics"),
    }
    for id in api.tenants.keys() {
        api.metrics.exchange_limit(
            id.as_str(),
            api.exchange_limits.current(id),
            api.exchange_limits.in_flight(id),
        );
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(api.metrics.render(stats.as_ref()))
}
