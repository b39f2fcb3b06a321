//! HTTP: authentication, body limits, JSON errors, the asynchronous polling
//! pattern. Handlers parse and record; they never call Exchange.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{
    App as ActixApp, HttpMessage, HttpRequest, HttpResponse, HttpServer, ResponseError, web,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::{AuthError, Caller, Need};
use crate::intake::{self, Delivery, IntakeError, Options};
use crate::sentinel::TriggerError;
use crate::store::{RunRecord, kind, status};

/// The one error type of the API: a status, a stable code, a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    fn internal(e: impl std::fmt::Display) -> ApiError {
        // The cause is logged with the request id; the client sees no internals.
        tracing::error!(error = %e, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; nothing was lost if a 202 was not returned, retry the call",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            r.insert_header((
                "WWW-Authenticate",
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    self.message.replace('"', "'")
                ),
            ));
        } else if self.code == "keys_unavailable" {
            // The token may be fine: say only that bearer auth applies.
            r.insert_header(("WWW-Authenticate", "Bearer realm=\"wipehook\""));
        }
        if let Some(s) = self.retry_after {
            r.insert_header(("Retry-After", s.to_string()));
        }
        r.json(json!({"error": {"code": self.code, "message": self.message}}))
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Unavailable(m) => {
                let mut a = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "keys_unavailable",
                    format!(
                        "cannot verify the caller's token now ({m}); the call was not accepted, retry later"
                    ),
                );
                a.retry_after = Some(30);
                a
            }
            AuthError::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "missing bearer token",
            ),
            AuthError::Invalid(m) => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", m),
        }
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> ApiError {
        match e {
            IntakeError::Trigger(t) => {
                let code = match t {
                    TriggerError::UnknownShape => "unknown_shape",
                    TriggerError::AlertTrigger => "alert_trigger_unsupported",
                    TriggerError::NoIncidentId => "no_incident_id",
                    TriggerError::BadIncidentId(_) => "invalid_incident_id",
                };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, t.to_string())
            }
            IntakeError::WorkspaceNotAllowed(..) => ApiError::new(
                StatusCode::FORBIDDEN,
                "workspace_not_allowed",
                e.to_string(),
            ),
            IntakeError::UnknownTenant(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_not_configured",
                e.to_string(),
            ),
            IntakeError::Store(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

pub fn server(app: Arc<App>, listener: TcpListener) -> anyhow::Result<actix_web::dev::Server> {
    let data = web::Data::from(app);
    let server = HttpServer::new(move || {
        ActixApp::new()
            .app_data(data.clone())
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_query",
                    format!("invalid query string: {e}"),
                )
                .into()
            }))
            .wrap(from_fn(request_id))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .route("/api/v1/sentinel/incidents", web::post().to(post_incident))
            .route(
                "/api/v1/sentinel/incidents/approve",
                web::post().to(post_incident_approve),
            )
            .route(
                "/api/v1/sentinel/incidents/cancel",
                web::post().to(post_incident_cancel),
            )
            .route("/api/v1/runs/{id}", web::get().to(get_run))
            .route("/api/v1/runs/{id}/approve", web::post().to(post_approve))
            .route("/api/v1/runs/{id}/cancel", web::post().to(post_cancel))
            .default_service(web::to(not_found))
    })
    .disable_signals()
    .shutdown_timeout(20)
    .listen(listener)?
    .run();
    Ok(server)
}

/// A request id on every response (`x-request-id`, taken from the caller or
/// made here) and on every log line of the request.
async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 100
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    req.extensions_mut().insert(span.clone());
    let mut res = tracing::Instrument::instrument(next.call(req), span.clone()).await?;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    let _g = span.enter();
    tracing::info!(status = res.status().as_u16(), "request handled");
    Ok(res)
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route",
    ))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(app: web::Data<App>) -> HttpResponse {
    if app.is_shutting_down() {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "shutting_down"}));
    }
    match app.ready().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(e) => {
            HttpResponse::ServiceUnavailable().json(json!({"status": "not_ready", "reason": e}))
        }
    }
}

async fn metrics(app: web::Data<App>) -> HttpResponse {
    let stats = app.store.stats().await.ok();
    for (id, t) in &app.tenants {
        app.metrics
            .exchange_limit(id, app.exchange.limiter(&t.tenant.id).current_limit());
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(app.metrics.render(stats.as_ref()))
}

fn refuse_if_stopping(app: &App) -> Result<(), ApiError> {
    if app.is_shutting_down() {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this instance is shutting down; retry",
        );
        e.retry_after = Some(5);
        return Err(e);
    }
    Ok(())
}

async fn authenticate(app: &App, req: &HttpRequest, need: Need) -> Result<Caller, ApiError> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    app.auth.verify(header, need).await.map_err(|e| {
        app.metrics.intake_rejected("unauthenticated");
        tracing::warn!(reason = %e, "call refused");
        ApiError::from(e)
    })
}

/// Read the body up to the configured limit, then parse it as JSON.
async fn read_json(app: &App, mut payload: web::Payload) -> Result<(Value, Vec<u8>), ApiError> {
    let limit = app.settings.server.body_limit_bytes;
    let mut buf = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read the body: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > limit {
            app.metrics.intake_rejected("too_large");
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds {limit} bytes (server.body_limit_bytes)"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    let v: Value = serde_json::from_slice(&buf).map_err(|e| {
        app.metrics.intake_rejected("malformed_json");
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    Ok((v, buf))
}

#[derive(serde::Deserialize)]
struct IncidentQuery {
    force: Option<bool>,
    mode: Option<String>,
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.len() <= 200)
}

fn accepted(app: &App, run_id: &str, status: &str, deduplicated: bool) -> HttpResponse {
    let location = format!(
        "{}/api/v1/runs/{}",
        app.settings.server.public_url.trim_end_matches('/'),
        run_id
    );
    HttpResponse::Accepted()
        .insert_header(("Location", location.clone()))
        .insert_header(("Retry-After", app.settings.server.poll_after_secs.to_string()))
        .json(json!({"run_id": run_id, "status": status, "status_url": location, "deduplicated": deduplicated}))
}

/// `POST /api/v1/sentinel/incidents`: the playbook's call.
async fn post_incident(
    app: web::Data<App>,
    req: HttpRequest,
    payload: web::Payload,
    q: web::Query<IncidentQuery>,
) -> Result<HttpResponse, ApiError> {
    refuse_if_stopping(&app)?;
    let caller = authenticate(&app, &req, Need::Run).await?;
    let (body, raw) = read_json(&app, payload).await?;
    let dry_run = match q.mode.as_deref() {
        None | Some("enforce") => false,
        Some("dry_run") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_mode",
                format!("mode '{other}' is not enforce or dry_run"),
            ));
        }
    };
    let opts = Options {
        force: q.force.unwrap_or(false),
        dry_run,
    };
    let delivery = Delivery {
        workflow_run_id: header(&req, Delivery::RUN_ID),
        workflow_name: header(&req, Delivery::NAME),
        action_tracking_id: header(&req, Delivery::ACTION),
        client_tracking_id: header(&req, Delivery::CLIENT),
    };
    let (acc, trigger, has_work) = intake::accept(&app, &caller, &body, &raw, &delivery, &opts)
        .await
        .map_err(|e| {
            app.metrics.intake_rejected(match &e {
                IntakeError::Trigger(_) => "bad_trigger",
                IntakeError::WorkspaceNotAllowed(..) | IntakeError::UnknownTenant(_) => "forbidden",
                IntakeError::Store(_) => "store",
            });
            ApiError::from(e)
        })?;
    if acc.created {
        app.metrics.run_accepted(trigger.kind.as_str());
        tracing::info!(run_id = %acc.run_id, incident = trigger.incident_number.unwrap_or(0), tenant = %caller.tenant, "run accepted");
        if has_work {
            app.wake.notify_one(); // work was enqueued: start it now
        }
    } else {
        app.metrics.delivery_deduplicated();
        tracing::info!(run_id = %acc.run_id, "duplicate delivery: same run");
    }
    Ok(accepted(&app, &acc.run_id, &acc.status, !acc.created))
}

async fn load_run(app: &App, caller: &Caller, id: &str) -> Result<RunRecord, ApiError> {
    let run = app.store.run(id).await.map_err(ApiError::internal)?;
    match run {
        // A run of another tenant does not exist for this caller.
        Some(r) if r.tenant_id == caller.tenant.as_str() => Ok(r),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "run_not_found",
            format!("no run {id}"),
        )),
    }
}

/// `GET /api/v1/runs/{id}`: 202 while work remains, 200 with the result.
async fn get_run(
    app: web::Data<App>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, Need::Read).await?;
    let run = load_run(&app, &caller, &path).await?;
    let report = app
        .store
        .report(&run.id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("run vanished"))?;
    if report.done {
        Ok(HttpResponse::Ok().json(report))
    } else {
        let location = format!(
            "{}/api/v1/runs/{}",
            app.settings.server.public_url.trim_end_matches('/'),
            run.id
        );
        Ok(HttpResponse::Accepted()
            .insert_header(("Location", location))
            .insert_header((
                "Retry-After",
                app.settings.server.poll_after_secs.to_string(),
            ))
            .json(report))
    }
}

async fn approve_run(app: &App, caller: &Caller, run: &RunRecord) -> Result<Value, ApiError> {
    if run.status != status::HELD {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_held",
            format!("run {} is {}, not held", run.id, run.status),
        ));
    }
    let n = app
        .store
        .approve(&run.id, &caller.display())
        .await
        .map_err(ApiError::internal)?;
    if n == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_held",
            format!("run {} is no longer held", run.id),
        ));
    }
    tracing::info!(run_id = %run.id, approver = %caller.display(), targets = n, "held run approved");
    app.store
        .enqueue(
            &run.id,
            &run.tenant_id,
            kind::COMMENT,
            "",
            crate::store::now_ms(),
        )
        .await
        .map_err(ApiError::internal)?;
    app.wake.notify_one();
    Ok(
        json!({"run_id": run.id, "status": "running", "approved_by": caller.display(), "targets_released": n}),
    )
}

async fn cancel_run(app: &App, caller: &Caller, run: &RunRecord) -> Result<Value, ApiError> {
    let fresh = app
        .store
        .request_cancel(&run.id, &run.tenant_id, &caller.display())
        .await
        .map_err(ApiError::internal)?;
    if !fresh {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_cancelled",
            format!("run {} was already cancelled", run.id),
        ));
    }
    tracing::info!(run_id = %run.id, by = %caller.display(), "cancellation requested");
    app.wake.notify_one();
    Ok(json!({"run_id": run.id, "cancellation": "requested", "cancelled_by": caller.display()}))
}

async fn post_approve(
    app: web::Data<App>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    refuse_if_stopping(&app)?;
    let caller = authenticate(&app, &req, Need::Approve).await?;
    let run = load_run(&app, &caller, &path).await?;
    let body = approve_run(&app, &caller, &run).await?;
    Ok(accepted_with(&app, &run.id, body))
}

async fn post_cancel(
    app: web::Data<App>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    refuse_if_stopping(&app)?;
    let caller = authenticate(&app, &req, Need::Approve).await?;
    let run = load_run(&app, &caller, &path).await?;
    let body = cancel_run(&app, &caller, &run).await?;
    Ok(accepted_with(&app, &run.id, body))
}

fn accepted_with(app: &App, run_id: &str, mut body: Value) -> HttpResponse {
    let location = format!(
        "{}/api/v1/runs/{}",
        app.settings.server.public_url.trim_end_matches('/'),
        run_id
    );
    body["status_url"] = json!(location);
    HttpResponse::Accepted()
        .insert_header(("Location", location))
        .insert_header((
            "Retry-After",
            app.settings.server.poll_after_secs.to_string(),
        ))
        .json(body)
}

/// The incident a manual approve/cancel playbook was run on.
async fn incident_runs(
    app: &App,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(Caller, Vec<RunRecord>), ApiError> {
    refuse_if_stopping(app)?;
    let caller = authenticate(app, req, Need::Approve).await?;
    let (body, _) = read_json(app, payload).await?;
    let trigger = crate::sentinel::parse_trigger(&body)
        .map_err(|e| ApiError::from(IntakeError::Trigger(e)))?;
    let inc = trigger
        .incident
        .ok_or_else(|| ApiError::from(IntakeError::Trigger(TriggerError::NoIncidentId)))?;
    let runs = app
        .store
        .runs_for_incident(&inc.arm_id())
        .await
        .map_err(ApiError::internal)?;
    let runs: Vec<RunRecord> = runs
        .into_iter()
        .filter(|r| r.tenant_id == caller.tenant.as_str())
        .collect();
    if runs.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "run_not_found",
            format!("no wipehook run for incident {}", inc.name),
        ));
    }
    Ok((caller, runs))
}

/// `POST /api/v1/sentinel/incidents/approve`: approve the incident's held runs.
async fn post_incident_approve(
    app: web::Data<App>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (caller, runs) = incident_runs(&app, &req, payload).await?;
    let held: Vec<&RunRecord> = runs.iter().filter(|r| r.status == status::HELD).collect();
    if held.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_held",
            "no run of this incident is held for approval",
        ));
    }
    let mut out = vec![];
    for r in held {
        out.push(approve_run(&app, &caller, r).await?);
    }
    Ok(HttpResponse::Ok().json(json!({"approved": out})))
}

/// `POST /api/v1/sentinel/incidents/cancel`: undo the incident's latest run that requested wipes.
async fn post_incident_cancel(
    app: web::Data<App>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (caller, runs) = incident_runs(&app, &req, payload).await?;
    // Undo on an incident: every run of it that requested wipes or holds
    // users, not yet cancelled.
    let mut out = vec![];
    for run in runs.iter().filter(|r| r.cancelled_at.is_none()) {
        let devices = app
            .store
            .devices(&run.id)
            .await
            .map_err(ApiError::internal)?;
        let targets = app
            .store
            .targets(&run.id)
            .await
            .map_err(ApiError::internal)?;
        let undoable = devices
            .iter()
            .any(|d| d.outcome == "requested" && d.acked_at.is_none())
            || targets.iter().any(|(_, s)| {
                s == crate::store::target::HELD || s == crate::store::target::PENDING
            });
        if undoable {
            out.push(cancel_run(&app, &caller, run).await?);
        }
    }
    if out.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "nothing_to_cancel",
            "no run of this incident has an unacknowledged wipe request or a held user left to cancel",
        ));
    }
    Ok(HttpResponse::Ok().json(json!({"cancelled": out})))
}
