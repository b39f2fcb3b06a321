//! The durable task queue the worker drains: each task is a `Job` of a run,
//! claimed under a lease, retried with its attempts counted in the row.

use std::time::Duration;

use anyhow::Result;

use super::{Store, dispatch};
use crate::domain::{Job, Lane, RunId, RunStatus, TaskId, TenantId};

#[derive(Clone, Debug)]
pub struct Task {
    pub id: TaskId,
    pub run_id: RunId,
    pub tenant: TenantId,
    pub job: Job,
    /// This attempt's number (1 on the first claim).
    pub attempts: i64,
    /// The lease owner (this process).
    pub owner: String,
}

/// What remains of a run's work.
#[derive(Clone, Debug, Default)]
pub struct TaskSummary {
    /// Ready work tasks (contain, resolve, entities).
    pub pending_work: i64,
    /// Given-up tasks: `kind arg: last error`.
    pub errors: Vec<String>,
}

impl Store {
    /// Claim the next ready task. Order: `seq` first, so the first target of a
    /// new run goes before the 200th target of an older one (fair across runs).
    pub async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Task>> {
        dispatch!(self, claim(owner, lease, None, &[]))
    }

    /// Claim the next ready task of one lane (the worker's slots per
    /// upstream), leaving out the tasks of the `skip` tenants (those holding
    /// their share of the lane's slots).
    pub async fn claim_in(
        &self,
        owner: &str,
        lease: Duration,
        lane: Lane,
        skip: &[TenantId],
    ) -> Result<Option<Task>> {
        dispatch!(self, claim(owner, lease, Some(lane), skip))
    }

    /// Extend a lease; false when this owner lost it.
    pub async fn renew(&self, task: &Task, lease: Duration) -> Result<bool> {
        dispatch!(self, renew(task, lease))
    }

    /// When the earliest ready task can next be claimed (for the worker's sleep).
    pub async fn next_due(&self) -> Result<Option<i64>> {
        dispatch!(self, next_due(None, &[]))
    }

    /// After a claim in this lane found nothing at `claimed_at` (ms): the
    /// earliest `not_before` after that instant of its ready tasks (`skip`
    /// tenants left out), so a task that fell due since the claim is not
    /// missed (the worker then claims at once). Leases other workers hold
    /// are not read (they end in a claim at the idle poll).
    pub async fn next_due_in(
        &self,
        lane: Lane,
        skip: &[TenantId],
        claimed_at: i64,
    ) -> Result<Option<i64>> {
        dispatch!(self, next_due(Some((lane, claimed_at)), skip))
    }

    /// Tasks some worker is running now (an unexpired lease).
    pub async fn in_flight(&self) -> Result<i64> {
        dispatch!(self, in_flight())
    }

    /// Finish a task. A task marked dirty while it ran goes back to ready.
    /// When a run's last work task ends, the run is finalised (held or
    /// completed, its record queued): the new status.
    pub async fn complete(&self, task: &Task, hold_expiry: Duration) -> Result<Option<RunStatus>> {
        dispatch!(self, complete(task, hold_expiry, None)).map(|(s, _)| s)
    }

    /// `complete`, and when the run's record is due now and claimed by no
    /// one, claim it for this owner under `lease` in the same commit: the
    /// worker runs it next without a claim of its own.
    pub async fn complete_handing_over(
        &self,
        task: &Task,
        hold_expiry: Duration,
        lease: Duration,
    ) -> Result<(Option<RunStatus>, Option<Task>)> {
        dispatch!(self, complete(task, hold_expiry, Some(lease)))
    }

    /// Record a failed attempt: retry at `retry_at`, or give up after `max`.
    /// Returns true when the task was given up (dead).
    pub async fn fail(
        &self,
        task: &Task,
        error: &str,
        retry_at: i64,
        max: Option<u32>,
        hold_expiry: Duration,
    ) -> Result<bool> {
        dispatch!(self, fail(task, error, retry_at, max, hold_expiry))
    }

    /// At the start of a service on SQLite: every lease in the store is a
    /// predecessor's (a SQLite store has one process, see ARCHITECTURE.md),
    /// so its claimed tasks are claimable at once instead of after the lease.
    /// PostgreSQL may be shared by live replicas: their leases expire as
    /// usual, and this does nothing. Returns how many leases were reclaimed.
    pub async fn reclaim_predecessor_leases(&self) -> Result<u64> {
        match &self.inner {
            super::Inner::Sqlite(m) => super::sqlite::reclaim_all(&mut *m.lock().await).await,
            super::Inner::Postgres(_) => Ok(0),
        }
    }

    /// Give back every lease of this owner (graceful shutdown).
    pub async fn release_all(&self, owner: &str) -> Result<u64> {
        dispatch!(self, release_all(owner))
    }

    /// Enqueue a job of a run, or mark the existing task dirty so it runs again.
    pub async fn enqueue(
        &self,
        run: &RunId,
        tenant: &TenantId,
        job: &Job,
        not_before: i64,
    ) -> Result<()> {
        dispatch!(self, enqueue(run, tenant, job, not_before))
    }

    /// Reschedule the running task itself (verification backoff) and finish it.
    pub async fn reschedule(&self, task: &Task, at: i64) -> Result<()> {
        dispatch!(self, reschedule(task, at))
    }

    /// Pending work tasks of a run, and the errors of given-up ones.
    pub async fn task_summary(&self, run: &RunId) -> Result<TaskSummary> {
        dispatch!(self, task_summary(run))
    }
}
