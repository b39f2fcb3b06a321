//! The result of a run as the API returns it and the comment shows it.

use anyhow::Result;
use serde::Serialize;

use super::{DeviceRecord, RunRecord, Store, TargetRow, status};

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub status: String,
    /// Why the run is in this status, in words.
    pub reason: Option<String>,
    pub done: bool,
    pub tenant_id: String,
    pub trigger: String,
    pub mode: String,
    pub force: bool,
    pub caller: String,
    pub incident: Option<IncidentInfo>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub approved: Option<Actor>,
    pub cancelled: Option<Actor>,
    pub summary: Summary,
    pub users: Vec<UserResult>,
    pub unresolved: Vec<Unresolved>,
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
    /// The person's Entra object id, as Exchange reports it for the mailbox.
    pub object_id: Option<String>,
    pub source: String,
    /// Fields of the entity that were present but did not decide.
    pub notes: Vec<String>,
    pub state: String,
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
    /// requested | would_request | already_requested | skipped | failed | cancelled
    pub outcome: String,
    pub reason: Option<String>,
    pub notes: Vec<String>,
    pub requested_at: Option<String>,
    pub acknowledged_at: Option<String>,
    /// pending | acknowledged | unconfirmed (deadline passed)
    pub verification: Option<String>,
    pub prior_run_id: Option<String>,
    pub prior_requested_at: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Unresolved {
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

impl Store {
    pub async fn report(&self, run_id: &str) -> Result<Option<RunReport>> {
        let Some(run) = self.run(run_id).await? else {
            return Ok(None);
        };
        let targets = self.target_rows(run_id).await?;
        let devices = self.devices(run_id).await?;
        let unresolved = self.unresolved(run_id).await?;
        let (_, errors) = self.task_summary(run_id).await?;
        Ok(Some(build(run, targets, devices, unresolved, errors)))
    }
}

fn build(
    run: RunRecord,
    targets: Vec<TargetRow>,
    devices: Vec<DeviceRecord>,
    unresolved: Vec<(String, String)>,
    errors: Vec<String>,
) -> RunReport {
    let mut s = Summary {
        users: targets.len(),
        unresolved_entities: unresolved.len(),
        ..Default::default()
    };
    let mut users = vec![];
    for t in targets {
        let TargetRow {
            upn,
            source,
            state,
            reason,
            claims,
            mailbox_upn,
            display_name,
            object_id,
        } = t;
        match state.as_str() {
            "held" => s.held_users += 1,
            "refused" => s.refused_users += 1,
            "protected" => s.protected_users += 1,
            "expired" => s.expired_users += 1,
            _ => {}
        }
        let devs: Vec<DeviceResult> = devices
            .iter()
            .filter(|d| d.upn == upn)
            .map(device_result)
            .collect();
        users.push(UserResult {
            upn,
            mailbox_upn,
            display_name,
            object_id,
            source,
            notes: claims.notes,
            state,
            reason,
            devices: devs,
        });
    }
    for d in &devices {
        s.devices += 1;
        match d.outcome.as_str() {
            "requested" => s.wipes_requested += 1,
            "would_request" => s.would_request += 1,
            "already_requested" => s.already_requested += 1,
            "skipped" => s.skipped += 1,
            "failed" => s.failed += 1,
            "cancelled" => s.cancelled += 1,
            _ => {}
        }
        if d.acked_at.is_some() && d.outcome == "requested" {
            s.acknowledged += 1;
        }
    }
    let done = status::is_final(&run.status);
    let reason = run
        .reason
        .clone()
        .or_else(|| default_reason(&run, &s, done));
    RunReport {
        run_id: run.id,
        status: run.status,
        reason,
        done,
        tenant_id: run.tenant_id,
        trigger: run.trigger_kind,
        mode: run.mode,
        force: run.force,
        caller: run.caller,
        incident: run.incident_arm_id.map(|arm_id| IncidentInfo {
            arm_id,
            number: run.incident_number,
            title: run.incident_title,
            severity: run.severity,
        }),
        created_at: rfc3339(run.created_at),
        finished_at: run.finished_at.map(rfc3339),
        approved: run.approved_by.map(|by| Actor {
            by,
            at: run.approved_at.map(rfc3339).unwrap_or_default(),
        }),
        cancelled: run.cancelled_by.map(|by| Actor {
            by,
            at: run.cancelled_at.map(rfc3339).unwrap_or_default(),
        }),
        summary: s,
        users,
        unresolved: unresolved
            .into_iter()
            .map(|(entity, reason)| Unresolved { entity, reason })
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
    if run.mode == "dry_run" {
        return Some(format!(
            "dry run: {} wipe(s) would have been requested; none was sent",
            s.would_request
        ));
    }
    None
}

fn device_result(d: &DeviceRecord) -> DeviceResult {
    DeviceResult {
        guid: d.guid.clone(),
        device_id: d.device_id.clone(),
        device_type: d.device_type.clone(),
        model: d.model.clone(),
        os: d.os.clone(),
        client_type: d.client_type.clone(),
        client_version: d.client_version.clone(),
        outcome: d.outcome.clone(),
        reason: d.reason.clone(),
        notes: d
            .flags
            .as_deref()
            .map(|f| {
                f.split('\n')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        requested_at: d.requested_at.map(rfc3339),
        acknowledged_at: d.acked_at.map(rfc3339),
        verification: d.verify.clone(),
        prior_run_id: d.prior_run_id.clone(),
        prior_requested_at: d.prior_at.map(rfc3339),
    }
}
