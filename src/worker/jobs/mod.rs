//! One room per job. Each states its retry policy (`RETRY`), does its work
//! (`run`), and says what is recorded when it fails for good (`given_up`).
//! The runner (`worker/mod.rs`) knows nothing of what a job does.

mod account;
mod block;
mod comment;
mod contain;
mod discover;
mod follow_up;

use std::time::Duration;

use anyhow::Result;

use crate::config::{PolicySettings, WorkerSettings};
use crate::domain::Job;
use crate::state::{TenantCtx, WorkerState};
use crate::store::{RunRecord, Store, Task, now_ms};
use crate::upstream::CallError;

/// What a job tells the runner.
pub enum Done {
    /// Finished: mark the task done.
    Complete,
    /// Come back at this time (verification backoff).
    Reschedule(i64),
}

/// What a permanent failure (retrying will not help) does to the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnPermanent {
    /// Record it where the job says (`given_up`) and complete the task.
    RecordAndComplete,
    /// Give the task up at once; it is listed in the run's errors.
    Dead,
}

/// How a job is retried across attempts (the queue layer; the clients retry
/// inside one attempt).
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// `None`: until it succeeds. `Some(n)`: `worker.max_attempts` (n is read
    /// from the settings; the policy says whether it applies).
    pub max_attempts: Option<u32>,
    /// Backoff doubles from 2 s up to this (scaled by `worker.backoff_scale`),
    /// unless the upstream said `Retry-After`.
    pub backoff_cap: Duration,
    pub on_permanent: OnPermanent,
}

/// A retry policy: bounded by `worker.max_attempts` or not.
#[derive(Clone, Copy, Debug)]
pub struct RetryRule {
    pub bounded: bool,
    pub backoff_cap: Duration,
    pub on_permanent: OnPermanent,
}

pub fn retry_policy(job: &Job, w: &WorkerSettings) -> Retry {
    let rule = match job {
        Job::Contain { .. } => contain::RETRY,
        Job::Resolve { .. } | Job::Entities => discover::RETRY,
        Job::Verify { .. } | Job::Cancel | Job::Expire => follow_up::RETRY,
        Job::Comment => comment::RETRY,
        Job::Block { .. } => block::RETRY,
        Job::Account { .. } => account::RETRY,
    };
    Retry {
        max_attempts: rule.bounded.then_some(w.max_attempts),
        backoff_cap: rule.backoff_cap,
        on_permanent: rule.on_permanent,
    }
}

/// Why a job is given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GaveUp {
    /// Retrying will not help.
    Permanent,
    /// Its attempts ran out.
    Exhausted,
}

/// Record, where the job says, that it failed for good.
pub async fn given_up(state: &WorkerState, task: &Task, reason: &str, why: GaveUp) -> Result<()> {
    match &task.job {
        Job::Contain { upn } => contain::given_up(state, task, upn, reason).await,
        Job::Resolve { object_id } if why == GaveUp::Permanent => {
            discover::resolve_given_up(state, &task.run_id, object_id, reason).await
        }
        Job::Entities if why == GaveUp::Permanent => {
            discover::entities_given_up(state, &task.run_id, reason).await
        }
        _ => Ok(()),
    }
}

/// What every job gets: the worker's state, the tenant, the run.
pub struct Cx<'a> {
    pub state: &'a WorkerState,
    pub t: &'a TenantCtx,
    pub run: &'a RunRecord,
}

impl Cx<'_> {
    pub fn store(&self) -> &Store {
        &self.state.store
    }
    /// The tenant's policy in force now (not at intake).
    pub fn policy(&self) -> &PolicySettings {
        &self.t.tenant.policy
    }
    /// Queue the run's record on the incident.
    pub async fn record_later(&self) -> Result<(), CallError> {
        if self.run.incident.is_some() {
            self.store()
                .enqueue(&self.run.id, &self.run.tenant, &Job::Comment, now_ms())
                .await
                .map_err(store_err)?;
        }
        Ok(())
    }
}

impl Cx<'_> {
    /// The kill switch stops this step: `Some(reason)` in the record's
    /// words when it is engaged (the configuration key, the stored switch,
    /// or this process's brake).
    pub async fn kill_switch_stops(&self) -> Result<Option<String>, CallError> {
        let ks = crate::control::kill_switch(self.state)
            .await
            .map_err(store_err)?;
        Ok((ks.engaged || self.state.brake.engaged()).then(|| {
            self.state.metrics.guard_held("kill_switch");
            contain::kill_switch_reason(&ks)
        }))
    }

    /// A cancel accepted while this task changed something may have run its
    /// undo before the change was recorded: run it again.
    pub async fn cancel_if_cancelled_meanwhile(&self) -> Result<(), CallError> {
        let fresh = self.store().run(&self.run.id).await.map_err(store_err)?;
        if fresh.is_some_and(|r| r.cancelled.is_some()) {
            self.store()
                .enqueue(&self.run.id, &self.run.tenant, &Job::Cancel, now_ms())
                .await
                .map_err(store_err)?;
        }
        Ok(())
    }
}

/// A store failure inside a job: retried like a transient upstream failure.
pub fn store_err(e: anyhow::Error) -> CallError {
    CallError::transient(format!("store: {e:#}"))
}

/// Run one task's job.
pub async fn run(
    state: &WorkerState,
    task: &Task,
    run: Option<RunRecord>,
) -> Result<Done, CallError> {
    let Some(run) = run else {
        return Ok(Done::Complete); // pruned
    };
    let Some(t) = state.tenant_ctx(&task.tenant) else {
        return Err(CallError::permanent(format!(
            "tenant {} is no longer configured",
            task.tenant
        )));
    };
    let cx = Cx {
        state,
        t,
        run: &run,
    };
    match &task.job {
        Job::Contain { upn } => contain::run(&cx, upn).await,
        Job::Resolve { object_id } => discover::resolve(&cx, object_id).await,
        Job::Entities => discover::entities(&cx).await,
        Job::Comment => comment::run(&cx).await,
        Job::Verify { upn } => follow_up::verify(&cx, upn).await,
        Job::Cancel => follow_up::cancel(&cx).await,
        Job::Expire => follow_up::expire(&cx).await,
        Job::Block { upn } => block::run(&cx, upn).await,
        Job::Account { upn } => account::run(&cx, upn).await,
    }
}
