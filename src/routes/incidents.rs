//! The playbooks' calls on an incident: contain (the trigger body), and the
//! manual approve / cancel playbooks run on an incident.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::ApiError;
use super::extract::{accepted, authenticate, delivery, read_json, refuse_if_stopping, status_url};
use super::runs::control_error;
use crate::auth::{Caller, Need};
use crate::control;
use crate::domain::RunStatus;
use crate::intake::{self, IntakeError, Options, Selection};
use crate::sentinel::TriggerError;
use crate::state::ApiState;
use crate::store::RunRecord;

#[derive(serde::Deserialize)]
pub struct IncidentQuery {
    force: Option<bool>,
    mode: Option<String>,
}

/// `POST /api/v1/sentinel/incidents`: the playbook's call.
pub async fn post_incident(
    api: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    contain(api, req, payload, Selection::Incident).await
}

/// `POST /api/v1/sentinel/incidents/accounts`: contain the accounts the
/// incident is tagged with (`wipehook:contain:<address>`), from a playbook
/// run on the incident (the Defender portal runs none on an entity).
pub async fn post_tagged_accounts(
    api: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    contain(api, req, payload, Selection::TaggedAccounts).await
}

async fn contain(
    api: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
    selection: Selection,
) -> Result<HttpResponse, ApiError> {
    refuse_if_stopping(&api)?;
    let caller = authenticate(&api, &req, Need::Run).await?;
    // The query string is read only after authentication: an anonymous
    // caller learns nothing from how a bad one is refused.
    let q = web::Query::<IncidentQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("bad_query", format!("invalid query string: {e}")))?;
    let (body, raw) = read_json(&api, payload).await?;
    let dry_run = match q.mode.as_deref() {
        None | Some("enforce") => false,
        Some("dry_run") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_mode",
                format!("mode '{other}' is not enforce or dry_run"),
            ));
        }
    };
    let opts = Options {
        force: q.force.unwrap_or(false),
        dry_run,
    };
    let (acc, trigger, has_work) = intake::accept(
        &api,
        &caller,
        &body,
        &raw,
        &delivery(&req),
        &opts,
        selection,
    )
    .await
    .map_err(|e| {
        api.metrics.intake_rejected(match &e {
            IntakeError::Trigger(_) => "bad_trigger",
            IntakeError::WorkspaceNotAllowed(..) | IntakeError::UnknownTenant(_) => "forbidden",
            IntakeError::NoAccountTag
            | IntakeError::NotSynchronised(_)
            | IntakeError::NotInIncident(_) => "bad_tag",
            IntakeError::Store(_) => "store",
        });
        ApiError::from(e)
    })?;
    if acc.created {
        api.metrics.run_accepted(trigger.kind.as_str());
        tracing::info!(run_id = %acc.run_id, incident = trigger.incident_number.unwrap_or(0), tenant = %caller.tenant, "run accepted");
        if has_work {
            api.wake.notify_one(); // work was enqueued: start it now
        }
    } else {
        api.metrics.delivery_deduplicated();
        tracing::info!(run_id = %acc.run_id, "duplicate delivery: same run");
    }
    let body = json!({
        "run_id": acc.run_id,
        "status": acc.status,
        "status_url": status_url(&api, &acc.run_id),
        "deduplicated": !acc.created,
    });
    Ok(accepted(&api, &acc.run_id, &body))
}

/// The incident a manual approve/cancel playbook was run on, and its runs
/// visible to this caller.
async fn incident_runs(
    api: &ApiState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(Caller, Vec<RunRecord>), ApiError> {
    refuse_if_stopping(api)?;
    let caller = authenticate(api, req, Need::Approve).await?;
    let (body, _) = read_json(api, payload).await?;
    let trigger = crate::sentinel::parse_trigger(&body)?;
    let inc = trigger
        .incident
        .ok_or_else(|| ApiError::from(TriggerError::NoIncidentId))?;
    let runs: Vec<RunRecord> = api
        .store
        .runs_for_incident(&inc)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|r| r.tenant == caller.tenant)
        .collect();
    if runs.is_empty() {
        return Err(ApiError::not_found(
            "run_not_found",
            format!("no wipehook run for incident {}", inc.name),
        ));
    }
    Ok((caller, runs))
}

/// `POST /api/v1/sentinel/incidents/approve`: approve the incident's held runs.
pub async fn approve(
    api: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (caller, runs) = incident_runs(&api, &req, payload).await?;
    let held: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Held)
        .collect();
    if held.is_empty() {
        return Err(ApiError::conflict(
            "not_held",
            "no run of this incident is held for approval",
        ));
    }
    // Each run on its own: one refused (self-approval, kill switch) does not
    // hide the others approved before it.
    let mut out = vec![];
    let mut refused = vec![];
    let mut first_error = None;
    for r in held {
        match control::approve(&api, &caller, r).await {
            Ok(a) => out.push(json!(a)),
            Err(e) => {
                let e = control_error(e);
                refused.push(json!({"run_id": r.id, "error": e.body()}));
                first_error.get_or_insert(e);
            }
        }
    }
    if out.is_empty()
        && let Some(e) = first_error
    {
        return Err(e);
    }
    let mut body = json!({"approved": out});
    if !refused.is_empty() {
        body["refused"] = json!(refused);
    }
    Ok(HttpResponse::Ok().json(body))
}

/// `POST /api/v1/sentinel/incidents/cancel`: undo every run of the incident
/// that still has something to undo.
pub async fn cancel(
    api: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (caller, runs) = incident_runs(&api, &req, payload).await?;
    let out = control::cancel_incident(&api, &caller, &runs)
        .await
        .map_err(control_error)?;
    if out.is_empty() {
        return Err(ApiError::conflict(
            "nothing_to_cancel",
            "no run of this incident has an unacknowledged wipe request or a held user left to cancel",
        ));
    }
    Ok(HttpResponse::Ok().json(json!({"cancelled": out})))
}
