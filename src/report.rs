//! The read model: the result of a run as `GET /api/v1/runs/{id}` returns
//! it and the incident comment shows it, built from the store's records.
//! The API answer and the comment are the same report, so they cannot
//! disagree.

use anyhow::Result;
use serde::Serialize;

use crate::domain::{
    DeviceOutcome, Mode, RunId, RunStatus, TargetState, TriggerKind, Verification,
};
use crate::store::{DeviceRecord, RunRecord, Store, TargetRecord, Unresolved};

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: RunId,
    pub status: RunStatus,
    /// Why the run is in this status, in words.
    pub reason: Option<String>,
    pub done: bool,
    pub tenant_id: String,
    pub trigger: TriggerKind,
    pub mode: Mode,
    pub force: bool,
    pub caller: String,
    pub incident: Option<IncidentInfo>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub approved: Option<Actor>,
    pub cancelled: Option<Actor>,
    pub summary: Summary,
    pub users: Vec<UserResult>,
    pub unresolved: Vec<UnresolvedEntity>,
    /// Work that was given up after retries, with the last error.
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct IncidentInfo {
    pub arm_id: String,
    pub number: Option<i64>,
    pub title: Option<String>,
    pub severity: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Actor {
    pub by: String,
    pub at: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub users: usize,
    pub devices: usize,
    /// Wipes requested by this run.
    pub wipes_requested: usize,
    /// Dry run: wipes that would have been requested.
    pub would_request: usize,
    pub acknowledged: usize,
    pub already_requested: usize,
    pub skipped: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub held_users: usize,
    pub refused_users: usize,
    pub protected_users: usize,
    pub expired_users: usize,
    pub unresolved_entities: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct UserResult {
    /// The address the entity named.
    pub upn: String,
    /// The UPN of the person the address resolved to (Microsoft Graph), once resolved.
    pub mailbox_upn: Option<String>,
    pub display_name: Option<String>,
    /// The person's Entra object id (Microsoft Graph).
    pub object_id: Option<String>,
    pub source: String,
    /// Fields of the entity that were present but did not decide.
    pub notes: Vec<String>,
    pub state: TargetState,
    pub reason: Option<String>,
    pub devices: Vec<DeviceResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceResult {
    pub guid: String,
    pub device_id: String,
    pub device_type: String,
    pub model: String,
    pub os: String,
    pub client_type: String,
    pub client_version: String,
    pub outcome: DeviceOutcome,
    pub reason: Option<String>,
    pub notes: Vec<String>,
    pub requested_at: Option<String>,
    pub acknowledged_at: Option<String>,
    /// pending | acknowledged | unconfirmed (deadline passed)
    pub verification: Option<Verification>,
    pub prior_run_id: Option<String>,
    pub prior_requested_at: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct UnresolvedEntity {
    pub entity: String,
    pub reason: String,
}

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The report of a run, read from the store; `None` when there is no such run.
pub async fn load(store: &Store, run_id: &RunId) -> Result<Option<RunReport>> {
    let Some(run) = store.run(run_id).await? else {
        return Ok(None);
    };
    let targets = store.targets(run_id).await?;
    let devices = store.devices(run_id).await?;
    let unresolved = store.unresolved(run_id).await?;
    let summary = store.task_summary(run_id).await?;
    Ok(Some(build(
        run,
        targets,
        devices,
        unresolved,
        summary.errors,
    )))
}

fn build(
    run: RunRecord,
    targets: Vec<TargetRecord>,
    devices: Vec<DeviceRecord>,
    unresolved: Vec<Unresolved>,
    errors: Vec<String>,
) -> RunReport {
    let mut s = Summary {
        users: targets.len(),
        unresolved_entities: unresolved.len(),
        ..Default::default()
    };
    let mut users = vec![];
    for t in targets {
        match t.state {
            TargetState::Held => s.held_users += 1,
            TargetState::Refused => s.refused_users += 1,
            TargetState::Protected => s.protected_users += 1,
            TargetState::Expired => s.expired_users += 1,
            _ => {}
        }
        let devs: Vec<DeviceResult> = devices
            .iter()
            .filter(|d| d.upn == t.upn)
            .map(device_result)
            .collect();
        let person = t.person;
        users.push(UserResult {
            upn: t.upn.to_string(),
            mailbox_upn: person.as_ref().map(|p| p.upn.to_string()),
            display_name: person.as_ref().map(|p| p.display_name.clone()),
            object_id: person.and_then(|p| p.object_id),
            source: t.source,
            notes: t.claims.notes,
            state: t.state,
            reason: t.reason,
            devices: devs,
        });
    }
    for d in &devices {
        s.devices += 1;
        match d.outcome {
            DeviceOutcome::Requested => s.wipes_requested += 1,
            DeviceOutcome::WouldRequest => s.would_request += 1,
            DeviceOutcome::AlreadyRequested => s.already_requested += 1,
            DeviceOutcome::Skipped => s.skipped += 1,
            DeviceOutcome::Failed => s.failed += 1,
            DeviceOutcome::Cancelled => s.cancelled += 1,
        }
        if d.acked_at.is_some() && d.outcome == DeviceOutcome::Requested {
            s.acknowledged += 1;
        }
    }
    let done = run.status.is_final();
    let reason = run
        .reason
        .clone()
        .or_else(|| default_reason(&run, &s, done));
    RunReport {
        run_id: run.id,
        status: run.status,
        reason,
        done,
        tenant_id: run.tenant.to_string(),
        trigger: run.trigger,
        mode: run.mode,
        force: run.force,
        caller: run.caller,
        incident: run.incident.map(|inc| IncidentInfo {
            arm_id: inc.arm_id(),
            number: run.incident_number,
            title: run.incident_title,
            severity: run.severity.map(|s| s.as_str().to_string()),
        }),
        created_at: rfc3339(run.created_at),
        finished_at: run.finished_at.map(rfc3339),
        approved: run.approved.map(|a| Actor {
            by: a.by,
            at: rfc3339(a.at),
        }),
        cancelled: run.cancelled.map(|a| Actor {
            by: a.by,
            at: rfc3339(a.at),
        }),
        summary: s,
        users,
        unresolved: unresolved
            .into_iter()
            .map(|u| UnresolvedEntity {
                entity: u.entity,
                reason: u.reason,
            })
            .collect(),
        errors,
    }
}

fn default_reason(run: &RunRecord, s: &Summary, done: bool) -> Option<String> {
    if !done {
        return None;
    }
    if s.users == 0 {
        return Some(if s.unresolved_entities > 0 {
            "no user could be resolved from the incident's entities".into()
        } else {
            "the incident has no Account or Mailbox entity".into()
        });
    }
    if s.devices == 0 {
        return Some("no mobile device was found for the affected users".into());
    }
    if run.mode == Mode::DryRun {
        return Some(format!(
            "dry run: {} wipe(s) would have been requested; none was sent",
            s.would_request
        ));
    }
    None
}

fn device_result(d: &DeviceRecord) -> DeviceResult {
    DeviceResult {
        guid: d.guid.to_string(),
        device_id: d.device_id.clone(),
        device_type: d.device_type.clone(),
        model: d.model.clone(),
        os: d.os.clone(),
        client_type: d.client_type.as_str().to_string(),
        client_version: d.client_version.clone(),
        outcome: d.outcome,
        reason: d.reason.clone(),
        notes: d.notes.clone(),
        requested_at: d.requested_at.map(rfc3339),
        acknowledged_at: d.acked_at.map(rfc3339),
        verification: d.verification,
        prior_run_id: d.prior.as_ref().map(|p| p.run_id.to_string()),
        prior_requested_at: d.prior.as_ref().map(|p| rfc3339(p.at)),
    }
}
