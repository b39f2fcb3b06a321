//! Analyst control of runs, below the HTTP layer: approve a held run, cancel
//! a run (undo its unacknowledged wipes, release its held and pending
//! users), and which runs of an incident a cancel applies to. Handlers only
//! authenticate and translate.

use serde::Serialize;

use crate::auth::Caller;
use crate::domain::{RunId, RunStatus};
use crate::state::Shared;
use crate::store::RunRecord;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("run {0} is {1}, not held")]
    NotHeld(RunId, RunStatus),
    #[error("run {0} is no longer held")]
    NoLongerHeld(RunId),
    #[error("run {0} was already cancelled")]
    AlreadyCancelled(RunId),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

#[derive(Clone, Debug, Serialize)]
pub struct Approved {
    pub run_id: RunId,
    pub status: RunStatus,
    pub approved_by: String,
    pub targets_released: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct CancelRequested {
    pub run_id: RunId,
    pub cancellation: &'static str,
    pub cancelled_by: String,
}

/// Approve a held run: its held users are released for containment and its
/// record is queued, in one transaction.
pub async fn approve(
    shared: &Shared,
    caller: &Caller,
    run: &RunRecord,
) -> Result<Approved, ControlError> {
    if run.status != RunStatus::Held {
        return Err(ControlError::NotHeld(run.id.clone(), run.status));
    }
    let who = caller.display();
    let n = shared.store.approve(&run.id, &who).await?;
    if n == 0 {
        return Err(ControlError::NoLongerHeld(run.id.clone()));
    }
    tracing::info!(run_id = %run.id, approver = %who, targets = n, "held run approved");
    shared.wake.notify_one();
    Ok(Approved {
        run_id: run.id.clone(),
        status: RunStatus::Running,
        approved_by: who,
        targets_released: n,
    })
}

/// Cancel a run: nothing more is sent, and its unacknowledged wipes are
/// cancelled by the worker.
pub async fn cancel(
    shared: &Shared,
    caller: &Caller,
    run: &RunRecord,
) -> Result<CancelRequested, ControlError> {
    let who = caller.display();
    if !shared
        .store
        .request_cancel(&run.id, &run.tenant, &who)
        .await?
    {
        return Err(ControlError::AlreadyCancelled(run.id.clone()));
    }
    tracing::info!(run_id = %run.id, by = %who, "cancellation requested");
    shared.wake.notify_one();
    Ok(CancelRequested {
        run_id: run.id.clone(),
        cancellation: "requested",
        cancelled_by: who,
    })
}

/// Cancel on an incident: every run of it not yet cancelled that still has
/// something to undo (an unacknowledged wipe, a held or pending user).
pub async fn cancel_incident(
    shared: &Shared,
    caller: &Caller,
    runs: &[RunRecord],
) -> Result<Vec<CancelRequested>, ControlError> {
    let mut out = vec![];
    for run in runs.iter().filter(|r| r.cancelled.is_none()) {
        if shared.store.undoable(&run.id).await? {
            out.push(cancel(shared, caller, run).await?);
        }
    }
    Ok(out)
}
