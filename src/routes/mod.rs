//! HTTP: the route table, request ids, and the handlers, which
//! authenticate, parse, decide through the layer below and write to the
//! store. They hold `ApiState`, which has no Exchange, ARM or Graph client:
//! no handler can call an upstream.

mod error;
mod extract;
mod guard;
mod incidents;
mod ops;
mod runs;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpMessage, HttpResponse, HttpServer, web};

pub use error::ApiError;

use crate::state::ApiState;

/// The route table: `(method, path, handler)`, the one place a route is
/// declared. `ROUTES` lists it for the OpenAPI conformance test.
macro_rules! route_table {
    ($($method:ident $path:literal => $handler:path),+ $(,)?) => {
        /// Every route served, as `(method, path)`.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),+];

        fn register(cfg: &mut web::ServiceConfig) {
            $(cfg.route($path, web::$method().to($handler));)+
        }
    };
}

route_table! {
    get "/healthz" => ops::healthz,
    head "/healthz" => ops::healthz,
    get "/readyz" => ops::readyz,
    get "/metrics" => ops::metrics,
    post "/api/v1/sentinel/incidents" => incidents::post_incident,
    post "/api/v1/sentinel/incidents/accounts" => incidents::post_tagged_accounts,
    post "/api/v1/sentinel/incidents/approve" => incidents::approve,
    post "/api/v1/sentinel/incidents/cancel" => incidents::cancel,
    get "/api/v1/runs/{id}" => runs::get_run,
    post "/api/v1/runs/{id}/approve" => runs::approve,
    post "/api/v1/runs/{id}/cancel" => runs::cancel,
    get "/api/v1/kill-switch" => guard::get_kill_switch,
    post "/api/v1/kill-switch" => guard::set_kill_switch,
    get "/api/v1/audit" => guard::audit,
}

pub fn server(api: Arc<ApiState>, listener: TcpListener) -> anyhow::Result<actix_web::dev::Server> {
    let data = web::Data::from(api);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                ApiError::bad_request("bad_query", format!("invalid query string: {e}")).into()
            }))
            .wrap(from_fn(request_id))
            .configure(register)
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
    Err(ApiError::not_found("not_found", "no such route"))
}
