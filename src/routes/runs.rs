//! A run by its id: its result (the asynchronous pattern's status URL), and
//! approve / cancel by run id.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::ApiError;
use super::extract::{accepted, authenticate, refuse_if_stopping, status_url};
use crate::auth::{Caller, Need};
use crate::control::{self, ControlError};
use crate::domain::RunId;
use crate::state::ApiState;
use crate::store::RunRecord;

/// A run visible to this caller: one of another tenant does not exist for it.
async fn load_run(api: &ApiState, caller: &Caller, id: &str) -> Result<RunRecord, ApiError> {
    let not_found = || ApiError::not_found("run_not_found", format!("no run {id}"));
    let Ok(run_id) = RunId::parse(id) else {
        return Err(not_found());
    };
    match api.store.run(&run_id).await.map_err(ApiError::internal)? {
        Some(r) if r.tenant == caller.tenant => Ok(r),
        _ => Err(not_found()),
    }
}

pub fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::NotHeld(..) | ControlError::NoLongerHeld(_) => {
            ApiError::conflict("not_held", e.to_string())
        }
        ControlError::AlreadyCancelled(_) => ApiError::conflict("already_cancelled", e.to_string()),
        ControlError::SelfApproval(..) => ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "self_approval",
            e.to_string(),
        ),
        ControlError::KillSwitchEngaged
        | ControlError::EngagedByConfiguration
        | ControlError::EngagedByAnotherTenant => {
            ApiError::conflict("kill_switch_engaged", e.to_string())
        }
        ControlError::Store(e) => ApiError::internal(e),
    }
}

/// `GET /api/v1/runs/{id}`: 202 while work remains, 200 with the result.
pub async fn get_run(
    api: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&api, &req, Need::Read).await?;
    let run = load_run(&api, &caller, &path).await?;
    let report = crate::report::load(&api.store, &run.id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("run {} vanished", run.id)))?;
    if report.done {
        Ok(HttpResponse::Ok().json(report))
    } else {
        Ok(accepted(&api, &run.id, &report))
    }
}

/// `POST /api/v1/runs/{id}/approve`
pub async fn approve(
    api: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    refuse_if_stopping(&api)?;
    let caller = authenticate(&api, &req, Need::Approve).await?;
    let run = load_run(&api, &caller, &path).await?;
    let a = control::approve(&api, &caller, &run)
        .await
        .map_err(control_error)?;
    let mut body = json!(a);
    body["status_url"] = json!(status_url(&api, &run.id));
    Ok(accepted(&api, &run.id, &body))
}

/// `POST /api/v1/runs/{id}/cancel`
pub async fn cancel(
    api: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    refuse_if_stopping(&api)?;
    let caller = authenticate(&api, &req, Need::Approve).await?;
    let run = load_run(&api, &caller, &path).await?;
    let c = control::cancel(&api, &caller, &run)
        .await
        .map_err(control_error)?;
    let mut body = json!(c);
    body["status_url"] = json!(status_url(&api, &run.id));
    Ok(accepted(&api, &run.id, &body))
}
