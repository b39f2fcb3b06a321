//! Runs: one per accepted delivery, with its mode, its status and who
//! approved or cancelled it.

use anyhow::Result;
use tokio::sync::oneshot;

use super::{Store, dispatch};
use crate::domain::{
    IncidentRef, Job, Mode, RunId, RunStatus, Severity, TenantId, TriggerKind, TriggerScope,
};

use super::NewTarget;

/// What intake commits: the run, its targets and its first tasks, in one
/// transaction with the delivery key.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub id: RunId,
    pub delivery_key: String,
    pub tenant: TenantId,
    pub incident: Option<IncidentRef>,
    pub incident_number: Option<i64>,
    pub incident_title: Option<String>,
    pub severity: Option<Severity>,
    pub trigger: TriggerKind,
    pub caller: String,
    /// The caller's object id (an approval by the same identity is refused).
    pub caller_oid: String,
    pub mode: Mode,
    pub force: bool,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub comment_id: Option<String>,
    pub targets: Vec<NewTarget>,
    pub unresolved: Vec<Unresolved>,
    /// The tasks to enqueue with the run, in order.
    pub jobs: Vec<Job>,
    /// Held at intake: when the hold expires (its task commits with the run).
    pub expire_at: Option<i64>,
    /// Who and what the trigger body named.
    pub trigger_scope: TriggerScope,
    /// The incident's number in the Defender portal (`providerIncidentId`).
    pub provider_incident_id: Option<String>,
    /// Comments the incident had at the trigger (`additionalData.commentsCount`).
    pub comments_baseline: Option<i64>,
    /// The incident's first activity (Unix ms): suspected attacker devices
    /// first synced after it.
    pub first_activity_at: Option<i64>,
    /// Defender's attack disruption acted on the incident.
    pub attack_disruption: bool,
}

/// An entity that yielded no user, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub entity: String,
    pub reason: String,
}

#[derive(Clone, Debug)]
pub struct Accepted {
    pub run_id: RunId,
    pub created: bool,
    /// The run's status (the existing run's, for a duplicate delivery).
    pub status: RunStatus,
}

/// Who did something to a run, and when (Unix ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub by: String,
    pub at: i64,
}

#[derive(Clone, Debug)]
pub struct RunRecord {
    pub id: RunId,
    pub tenant: TenantId,
    pub incident: Option<IncidentRef>,
    pub incident_number: Option<i64>,
    pub incident_title: Option<String>,
    pub severity: Option<Severity>,
    pub trigger: TriggerKind,
    pub caller: String,
    /// Absent on runs stored before schema version 5.
    pub caller_oid: Option<String>,
    pub mode: Mode,
    pub force: bool,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub approved: Option<Actor>,
    pub cancelled: Option<Actor>,
    pub comment_id: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub trigger_scope: TriggerScope,
    /// Held: when the hold expires (Unix ms).
    pub hold_until: Option<i64>,
    pub provider_incident_id: Option<String>,
    pub comments_baseline: Option<i64>,
    pub first_activity_at: Option<i64>,
    pub attack_disruption: bool,
}

impl Store {
    /// Record an accepted call as a run with its targets and tasks, in one
    /// transaction with its delivery key, before the caller answers 202.
    /// Calls arriving together share a transaction (and its fsync); the same
    /// key returns the same run.
    pub async fn accept(&self, new: &NewRun) -> Result<Accepted> {
        let (tx, rx) = oneshot::channel();
        self.intake
            .send((new.clone(), tx))
            .await
            .map_err(|_| anyhow::anyhow!("the store's writer has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the store's writer has stopped"))?
            .map_err(anyhow::Error::msg)
    }

    pub async fn run(&self, id: &RunId) -> Result<Option<RunRecord>> {
        dispatch!(self, run(id))
    }

    pub async fn list_runs(&self, limit: i64) -> Result<Vec<RunRecord>> {
        dispatch!(self, list_runs(limit))
    }

    /// Runs of one incident, newest first.
    pub async fn runs_for_incident(&self, incident: &IncidentRef) -> Result<Vec<RunRecord>> {
        dispatch!(self, runs_for_incident(incident))
    }

    /// A queued run's first work has started.
    pub async fn mark_running(&self, run: &RunId) -> Result<()> {
        dispatch!(self, mark_running(run))
    }

    /// Approve a held run: held targets become pending with contain tasks,
    /// and the record is queued, in one transaction. 0: it was not held (or
    /// its hold is due to expire).
    pub async fn approve(&self, run: &RunId, who: &str) -> Result<usize> {
        dispatch!(self, approve(run, who))
    }

    /// Record a cancellation request and enqueue the task that sends it.
    /// Held and pending targets are released. False: already cancelled.
    pub async fn request_cancel(&self, run: &RunId, tenant: &TenantId, who: &str) -> Result<bool> {
        dispatch!(self, request_cancel(run, tenant, who))
    }

    /// Would a cancel undo anything (an unacknowledged wipe, a held or
    /// pending user)?
    pub async fn undoable(&self, run: &RunId) -> Result<bool> {
        dispatch!(self, undoable(run))
    }

    /// A hold that was not approved in time: nothing held will be wiped.
    pub async fn expire_hold(&self, run: &RunId) -> Result<bool> {
        dispatch!(self, expire_hold(run))
    }
}
