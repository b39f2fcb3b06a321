//! The worker, in the manner of crates.io's background jobs: this runner
//! claims tasks from the store (woken at once by new work, with a slow poll
//! only for work other replicas or expired leases leave), runs each under a
//! renewed lease with panics caught, and records the outcome by the job's
//! own retry policy. What each job does lives in `jobs/`, one room per job.
//! All Exchange, ARM and Graph calls happen below here, never in an HTTP
//! handler.

mod jobs;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::domain::{Lane, TenantId};
use crate::state::{Shared, WorkerState};
use crate::store::{Task, now_ms};
use crate::upstream::{CallError, backoff};
use jobs::{Done, GaveUp, OnPermanent};

/// Run until `stop` is notified; then finish in-flight tasks (up to the
/// grace period) and give back every lease.
pub async fn run(state: Arc<WorkerState>, stop: Arc<Notify>) {
    // Slots per upstream (`Lane`): a contain task waiting for Exchange
    // capacity holds an Exchange slot, never one a record could use.
    let w = &state.settings.worker;
    let lanes: Vec<(Lane, Arc<Semaphore>, usize)> = Lane::ALL
        .into_iter()
        .map(|lane| {
            let n = match lane {
                Lane::Exchange => w.slots,
                Lane::ArmGraph => w.arm_graph_slots,
            };
            (lane, Arc::new(Semaphore::new(n)), n)
        })
        .collect();
    let lease = state.settings.store.lease;
    let freed = Arc::new(Notify::new());
    let record_slots = lanes
        .iter()
        .find(|(l, _, _)| *l == Lane::ArmGraph)
        .map(|(_, s, _)| s.clone());
    let shares = Arc::new(Shares::default());
    // The tenants whose tasks finished since the loop last looked.
    let finished: Arc<std::sync::Mutex<Vec<TenantId>>> = Arc::default();
    let mut quiet: std::collections::HashMap<Lane, Quiet> = Default::default();
    // When each lane's last claim found nothing (store time, ms): its next
    // due time is read from that instant, so a task falling due between the
    // two reads is claimed at once, not at the idle poll.
    let mut empty_at: std::collections::HashMap<Lane, i64> = Default::default();
    loop {
        if state.is_shutting_down() {
            break;
        }
        // A lane is quiet for one idle poll at most: work another replica
        // leaves (an expired lease) or enqueues is claimed at that pace even
        // while this process's tasks keep finishing.
        let idle = state.settings.worker.idle_poll;
        quiet.retain(|_, q| q.since.elapsed() < idle);
        // Fill free slots, lane by lane.
        let mut again = false;
        let mut all_full = true;
        for (lane, slots, _) in &lanes {
            let mut claimed_any = false;
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                let skip = shares.full(&state, *lane);
                if still_quiet(&mut quiet, *lane, &skip).is_some() {
                    break;
                }
                let at = now_ms();
                match state
                    .store
                    .claim_in(&state.instance, lease, *lane, &skip)
                    .await
                {
                    Ok(Some(task)) => {
                        claimed_any = true;
                        let state = state.clone();
                        let freed = freed.clone();
                        let record_slots = record_slots.clone();
                        let share = shares.take(*lane, &task.tenant);
                        let finished = finished.clone();
                        tokio::spawn(async move {
                            let tenant = task.tenant.clone();
                            // The loop hears of each finished task, with its tenant.
                            let report = || {
                                finished
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(tenant.clone());
                                freed.notify_one();
                            };
                            let mut next =
                                execute(state.clone(), task, record_slots.as_ref()).await;
                            drop(permit);
                            drop(share);
                            report();
                            // A task may hand its run's record straight on,
                            // with a record slot taken for it.
                            while let Some((task, permit)) = next {
                                next = execute(state.clone(), task, record_slots.as_ref()).await;
                                drop(permit);
                                report();
                            }
                        });
                    }
                    Ok(None) => {
                        empty_at.insert(*lane, at);
                        if !skip.is_empty() {
                            quiet.insert(
                                *lane,
                                Quiet {
                                    skip,
                                    due: None,
                                    since: std::time::Instant::now(),
                                },
                            );
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), lane = lane.as_str(), "cannot claim work from the store");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                }
            }
            let free = slots.available_permits() > 0;
            again |= claimed_any && free;
            all_full &= !free;
        }
        if again {
            continue;
        }
        // Sleep until the next task a free slot could take is due (a full
        // lane's backlog is not a reason to wake: its freed slot will be).
        let mut wait = idle;
        if !all_full {
            for (lane, slots, _) in &lanes {
                if slots.available_permits() == 0 {
                    continue;
                }
                let skip = shares.full(&state, *lane);
                let due = match still_quiet(&mut quiet, *lane, &skip).and_then(|q| q.due) {
                    Some(due) => Ok(due),
                    None => {
                        let at = empty_at.get(lane).copied().unwrap_or_else(now_ms);
                        state.store.next_due_in(*lane, &skip, at).await
                    }
                };
                if let (Ok(d), Some(q)) = (&due, quiet.get_mut(lane)) {
                    q.due = Some(*d);
                }
                match due {
                    Ok(Some(t)) => {
                        wait = wait.min(Duration::from_millis(
                            (t - now_ms()).clamp(0, idle.as_millis() as i64) as u64,
                        ))
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot read when the next task is due; polling");
                    }
                }
            }
        }
        // New work (intake, an approval, a discovery), a due time reached or
        // a task of a tenant not held back finished: every lane claims again.
        tokio::select! {
            _ = state.wake.notified() => quiet.clear(),
            _ = freed.notified() => {
                let done = std::mem::take(&mut *finished.lock().unwrap_or_else(|e| e.into_inner()));
                quiet.retain(|_, q| done.iter().all(|t| q.skip.contains(t)));
            },
            _ = stop.notified() => {},
            _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => quiet.clear(),
        }
    }
    // Graceful: wait for in-flight tasks, then release what is left.
    let _ = tokio::time::timeout(state.settings.server.shutdown_grace, async {
        for (_, slots, n) in &lanes {
            let _ = slots.acquire_many(*n as u32).await;
        }
    })
    .await;
    match state.store.release_all(&state.instance).await {
        Ok(n) if n > 0 => tracing::info!(released = n, "released leases"),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot release leases; they will expire")
        }
    }
}

/// A lane whose last claim found nothing while some tenants were at their
/// share (`skip`). Until new work arrives, a due time passes, a task of
/// another tenant finishes, the set of tenants at their share changes or
/// one idle poll has passed, another claim would find nothing again (but
/// for other replicas' work): it is not made, and the lane's next due time
/// is the one already read. (An empty claim with tenants left
/// out reads every ready task of theirs: in a one-tenant storm, the whole
/// backlog, once per finished task.)
struct Quiet {
    skip: Vec<TenantId>,
    due: Option<Option<i64>>,
    since: std::time::Instant,
}

impl Quiet {
    /// Is the lane still quiet with these tenants at their share?
    fn holds(&self, skip: &[TenantId]) -> bool {
        skip.len() == self.skip.len() && skip.iter().all(|t| self.skip.contains(t))
    }
}

/// The lane's quiet entry while it still holds with these tenants at their
/// share; one that no longer holds is dropped.
fn still_quiet<'a>(
    quiet: &'a mut std::collections::HashMap<Lane, Quiet>,
    lane: Lane,
    skip: &[TenantId],
) -> Option<&'a mut Quiet> {
    if quiet.get(&lane).is_some_and(|q| !q.holds(skip)) {
        quiet.remove(&lane);
    }
    quiet.get_mut(&lane)
}

/// Exchange slots above a tenant's current Exchange limit that its tasks may
/// hold: enough to keep its cap busy while some of them read Graph.
const SHARE_MARGIN: usize = 2;

/// The Exchange slots each tenant's tasks hold in this process. A tenant
/// holds at most its limiter's current limit plus `SHARE_MARGIN`: tasks
/// waiting on one tenant's small cap never fill the slots another tenant's
/// work could use (a noisy tenant does not slow a quiet one, nor a quiet
/// one with a small cap a busy one).
#[derive(Default)]
struct Shares(Arc<std::sync::Mutex<std::collections::HashMap<TenantId, usize>>>);

/// One task's place in its tenant's share; given back when dropped.
struct Share(
    Arc<std::sync::Mutex<std::collections::HashMap<TenantId, usize>>>,
    TenantId,
);

impl Drop for Share {
    fn drop(&mut self) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

impl Shares {
    /// The tenants whose share of this lane is full (Exchange lane only).
    fn full(&self, state: &WorkerState, lane: Lane) -> Vec<TenantId> {
        if lane != Lane::Exchange {
            return vec![];
        }
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|(t, n)| **n >= state.exchange.limits().current(t) + SHARE_MARGIN)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Count a claimed task in its tenant's share (Exchange lane only).
    fn take(&self, lane: Lane, tenant: &TenantId) -> Option<Share> {
        if lane != Lane::Exchange {
            return None;
        }
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.clone())
            .or_default() += 1;
        Some(Share(self.0.clone(), tenant.clone()))
    }
}

/// Claim and run, one at a time, every task due within `horizon`, until
/// none is left (tests drain the queue instead of polling). Returns how many
/// tasks ran.
pub async fn run_until_idle(state: &Arc<WorkerState>, horizon: Duration) -> Result<usize> {
    let mut ran = 0;
    loop {
        match state
            .store
            .claim(&state.instance, state.settings.store.lease)
            .await?
        {
            Some(task) => {
                execute(state.clone(), task, None).await;
                ran += 1;
            }
            None => match state.store.next_due().await? {
                Some(t) if t - now_ms() <= horizon.as_millis() as i64 => {
                    let wait = (t - now_ms()).max(1) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                _ => return Ok(ran),
            },
        }
    }
}

/// Follow the stored kill switch (thrown on another replica) into this
/// process's brake, every `worker.idle_poll`.
pub async fn brake_loop(shared: Arc<Shared>) {
    loop {
        match crate::control::kill_switch(&shared).await {
            Ok(ks) => {
                if ks.engaged != shared.brake.engaged() {
                    tracing::warn!(engaged = ks.engaged, by = ?ks.by, "kill switch changed on another replica");
                }
                shared.brake.set(ks.engaged);
                shared.metrics.set_kill_switch(ks.engaged);
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot read the kill switch"),
        }
        tokio::time::sleep(shared.settings.worker.idle_poll).await;
        if shared.is_shutting_down() {
            return;
        }
    }
}

/// Delete expired runs and delivery keys, hourly.
pub async fn prune_loop(shared: Arc<Shared>) {
    loop {
        let s = &shared.settings.store;
        match shared
            .store
            .prune(s.run_retention, s.delivery_retention)
            .await
        {
            Ok((runs, keys)) if runs + keys > 0 => {
                tracing::info!(runs, delivery_keys = keys, "pruned")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "pruning failed"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        if shared.is_shutting_down() {
            return;
        }
    }
}

/// Run one claimed task and record its outcome. With `record_slots`, a
/// completed task whose run's record is now due claims that record in the
/// same commit (when a record slot is free) and returns it, to run next.
async fn execute(
    state: Arc<WorkerState>,
    task: Task,
    record_slots: Option<&Arc<Semaphore>>,
) -> Option<(Task, OwnedSemaphorePermit)> {
    let run = match state.store.run(&task.run_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), run_id = %task.run_id, "cannot read the task's run; its lease will expire and it will run again");
            return None;
        }
    };
    let span = tracing::info_span!(
        "task",
        run_id = %task.run_id,
        tenant = %task.tenant,
        incident = run.as_ref().and_then(|r| r.incident_number).map(|n| n.to_string()).unwrap_or_default(),
        kind = %task.job.kind(),
        arg = %task.job.label(),
        attempt = task.attempts,
    );
    // A panic in a job is caught by its JoinHandle and recorded as a failure.
    let handler = {
        let state = state.clone();
        let task = task.clone();
        tokio::spawn(async move { jobs::run(&state, &task, run).await }.instrument(span.clone()))
    };
    // Renew the lease while the task runs. A task whose lease is lost (or
    // cannot be renewed before it lapses) is stopped at once: another worker
    // may own it now, and two must never send the same wipe.
    let renewer = {
        let state = state.clone();
        let task = task.clone();
        let abort = handler.abort_handle();
        tokio::spawn(async move {
            let lease = state.settings.store.lease;
            let mut last_ok = std::time::Instant::now();
            loop {
                tokio::time::sleep(lease / 3).await;
                match state.store.renew(&task, lease).await {
                    Ok(true) => last_ok = std::time::Instant::now(),
                    Ok(false) => {
                        tracing::error!(task = %task.id, "lease lost: stopping the task");
                        abort.abort();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "lease renewal failed");
                        if last_ok.elapsed() > lease.mul_f64(0.8) {
                            tracing::error!(task = %task.id, "lease about to lapse: stopping the task");
                            abort.abort();
                            return;
                        }
                    }
                }
            }
        })
    };
    let outcome = handler.await;
    renewer.abort();
    let result = match outcome {
        Ok(r) => r,
        Err(e) => Err(CallError::transient(format!(
            "internal error: {}",
            if e.is_panic() {
                "handler panicked"
            } else {
                "handler cancelled"
            }
        ))),
    };
    let _g = span.enter();
    let hold = state.hold_expiry(&task.tenant);
    let mut handed = None;
    let recorded = match result {
        Ok(Done::Complete) => {
            let slot = record_slots.and_then(|s| s.clone().try_acquire_owned().ok());
            let done = match &slot {
                Some(_) => {
                    state
                        .store
                        .complete_handing_over(&task, hold, state.settings.store.lease)
                        .await
                }
                None => state.store.complete(&task, hold).await.map(|s| (s, None)),
            };
            done.map(|(status, next)| {
                if let Some(s) = status {
                    tracing::info!(status = %s, "run finished its work");
                }
                handed = next.zip(slot);
            })
        }
        Ok(Done::Reschedule(at)) => state.store.reschedule(&task, at).await,
        Err(e) => record_failure(&state, &task, e).await,
    };
    if let Err(e) = recorded {
        tracing::error!(error = %format!("{e:#}"), "cannot record the task's outcome; its lease will expire and it will run again");
    }
    // The worker loop hears of this (and of what it enqueued) from the
    // task's spawn: `freed`, with the task's tenant.
    handed
}

/// A failed attempt, by the job's retry policy: a permanent failure is
/// recorded where the job says and ends the task (or kills it); a transient
/// one is retried with backoff (or `Retry-After`) until the job's attempts
/// run out, when it is given up and recorded the same way.
async fn record_failure(state: &WorkerState, task: &Task, e: CallError) -> Result<()> {
    let policy = jobs::retry_policy(&task.job, &state.settings.worker);
    let hold = state.hold_expiry(&task.tenant);
    if let CallError::Permanent { reason } = &e {
        return match policy.on_permanent {
            OnPermanent::Dead => {
                tracing::error!(reason = %reason, "task failed for good");
                state
                    .store
                    .fail(task, reason, now_ms(), Some(0), hold)
                    .await
                    .map(|_| ())
            }
            OnPermanent::RecordAndComplete => {
                tracing::warn!(reason = %reason, "task failed permanently");
                jobs::given_up(state, task, reason, GaveUp::Permanent).await?;
                state.store.complete(task, hold).await.map(|_| ())
            }
        };
    }
    let retry_after = match &e {
        CallError::Transient { retry_after, .. } => *retry_after,
        CallError::Permanent { .. } => None,
    };
    let attempt = task.attempts.max(1) as u32 - 1;
    let delay = retry_after.unwrap_or_else(|| {
        backoff(attempt, Duration::from_secs(2), policy.backoff_cap)
            .mul_f64(state.settings.worker.backoff_scale)
    });
    let dying = policy
        .max_attempts
        .is_some_and(|m| task.attempts >= m as i64);
    if dying {
        let why = format!("gave up after {} attempts: {}", task.attempts, e.reason());
        jobs::given_up(state, task, &why, GaveUp::Exhausted).await?;
    }
    tracing::warn!(reason = %e.reason(), retry_in_ms = delay.as_millis() as u64, given_up = dying, "task failed");
    state
        .store
        .fail(
            task,
            e.reason(),
            now_ms() + delay.as_millis() as i64,
            policy.max_attempts,
            hold,
        )
        .await
        .map(|_| ())
}
