//! The worker: claims tasks from the store (woken at once by new work, with a
//! slow poll only for work other replicas or expired leases leave), runs
//! each under a renewed lease, and records the outcome. All Exchange calls
//! happen here, never in an HTTP handler.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

use crate::app::{App, TenantCtx};
use crate::domain::{Claims, DeviceGuid, IncidentRef, TenantId, Upn};
use crate::intake::{Found, plan_targets};
use crate::policy::{self, DeviceDecision};
use crate::sentinel::{Candidate, comment};
use crate::store::{DeviceRecord, RunRecord, Task, WipeClaim, kind, now_ms, status, target};
use crate::upstream::{CallError, backoff};

/// Run until `stop` is notified; then finish in-flight tasks (up to the
/// grace period) and give back every lease.
pub async fn run(app: Arc<App>, stop: Arc<Notify>) {
    let slots = Arc::new(Semaphore::new(app.settings.worker.slots));
    let lease = app.settings.store.lease;
    let freed = Arc::new(Notify::new());
    loop {
        if app.is_shutting_down() {
            break;
        }
        // Fill free slots.
        let mut claimed_any = false;
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            match app.store.claim(&app.instance, lease).await {
                Ok(Some(task)) => {
                    claimed_any = true;
                    let app2 = app.clone();
                    let freed2 = freed.clone();
                    tokio::spawn(async move {
                        execute(app2, task).await;
                        drop(permit);
                        freed2.notify_one();
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot claim work from the store");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
        if claimed_any && slots.available_permits() > 0 {
            continue;
        }
        let idle = app.settings.worker.idle_poll;
        let wait = match app.store.next_due().await {
            Ok(Some(t)) => {
                Duration::from_millis((t - now_ms()).clamp(0, idle.as_millis() as i64) as u64)
            }
            _ => idle,
        };
        let wait = if slots.available_permits() == 0 {
            idle
        } else {
            wait
        };
        tokio::select! {
            _ = app.wake.notified() => {},
            _ = freed.notified() => {},
            _ = stop.notified() => {},
            _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {},
        }
    }
    // Graceful: wait for in-flight tasks, then release what is left.
    let total = app.settings.worker.slots as u32;
    let _ = tokio::time::timeout(
        app.settings.server.shutdown_grace,
        slots.acquire_many(total),
    )
    .await;
    match app.store.release_all(&app.instance).await {
        Ok(n) if n > 0 => tracing::info!(released = n, "released leases"),
        _ => {}
    }
}

/// Delete expired runs and delivery keys, hourly.
pub async fn prune_loop(app: Arc<App>) {
    loop {
        match app
            .store
            .prune(
                app.settings.store.run_retention,
                app.settings.store.delivery_retention,
            )
            .await
        {
            Ok((runs, keys)) if runs + keys > 0 => {
                tracing::info!(runs, delivery_keys = keys, "pruned")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "pruning failed"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        if app.is_shutting_down() {
            return;
        }
    }
}

/// What a handler tells the executor.
enum Done {
    /// Finished: mark the task done.
    Complete,
    /// Come back at this time (verification backoff).
    Reschedule(i64),
}

async fn execute(app: Arc<App>, task: Task) {
    let run = app.store.run(&task.run_id).await.ok().flatten();
    let span = tracing::info_span!(
        "task",
        run_id = %task.run_id,
        tenant = %task.tenant_id,
        incident = run.as_ref().and_then(|r| r.incident_number).map(|n| n.to_string()).unwrap_or_default(),
        kind = %task.kind,
        arg = %task.arg,
        attempt = task.attempts,
    );
    // A panic in a handler is caught by its JoinHandle and recorded as a failure.
    let handler = {
        let app = app.clone();
        let task = task.clone();
        tokio::spawn(async move { handle(&app, &task, run).await }.instrument(span.clone()))
    };
    // Renew the lease while the task runs. A task whose lease is lost (or
    // cannot be renewed before it lapses) is stopped at once: another worker
    // may own it now, and two must never send the same wipe.
    let renewer = {
        let app = app.clone();
        let task = task.clone();
        let abort = handler.abort_handle();
        tokio::spawn(async move {
            let lease = app.settings.store.lease;
            let mut last_ok = std::time::Instant::now();
            loop {
                tokio::time::sleep(lease / 3).await;
                match app.store.renew(&task, lease).await {
                    Ok(true) => last_ok = std::time::Instant::now(),
                    Ok(false) => {
                        tracing::error!(task = %task.id, "lease lost: stopping the task");
                        abort.abort();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lease renewal failed");
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
    let hold = hold_expiry(&app, &task);
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
    let recorded = match result {
        Ok(Done::Complete) => app.store.complete(&task, hold).await.map(|s| {
            if let Some(s) = s {
                tracing::info!(status = %s, "run finished its work");
            }
        }),
        Ok(Done::Reschedule(at)) => app.store.reschedule(&task, at).await,
        Err(e) => record_failure(&app, &task, e).await,
    };
    if let Err(e) = recorded {
        tracing::error!(error = %format!("{e:#}"), "cannot record the task's outcome; its lease will expire and it will run again");
    }
    app.wake.notify_one();
}

/// The tenant's hold expiry (falls back to the global one).
fn hold_expiry(app: &App, task: &Task) -> Duration {
    crate::domain::TenantId::parse(&task.tenant_id)
        .ok()
        .and_then(|t| app.tenant(&t).map(|t| t.tenant.policy.hold_expiry))
        .unwrap_or(app.settings.policy.hold_expiry)
}

async fn record_failure(app: &App, task: &Task, e: CallError) -> anyhow::Result<()> {
    let w = &app.settings.worker;
    let hold = hold_expiry(app, task);
    let is_comment = task.kind == kind::COMMENT;
    match &e {
        CallError::Permanent { reason } if is_comment => {
            // 400/404 from ARM (incident deleted, comment refused): retrying
            // will not help. The run keeps its result; the error is listed.
            tracing::error!(reason = %reason, "the incident comment cannot be written");
            app.store
                .fail(task, reason, now_ms(), Some(0), hold)
                .await?;
        }
        CallError::Permanent { reason } => {
            tracing::warn!(reason = %reason, "task failed permanently");
            if task.kind == kind::CONTAIN {
                app.store
                    .release_claims(&task.tenant_id, &task.run_id, &task.arg)
                    .await?;
                app.store
                    .set_target(&task.run_id, &task.arg, target::FAILED, Some(reason))
                    .await?;
            } else if task.kind == kind::ENTITIES {
                app.store
                    .add_unresolved(
                        &task.run_id,
                        "incident entities (ARM)",
                        &format!("could not be read: {reason}"),
                    )
                    .await?;
            } else if task.kind == kind::RESOLVE {
                app.store
                    .add_unresolved(
                        &task.run_id,
                        &format!("Account aadUserId {}", kind::parse_resolve_arg(&task.arg).0),
                        reason,
                    )
                    .await?;
            }
            app.store.complete(task, hold).await?;
        }
        _ => {
            // Transient (or a comment, which is retried until it succeeds).
            let retry_after = match &e {
                CallError::Transient { retry_after, .. } => *retry_after,
                _ => None,
            };
            let attempt = task.attempts.max(1) as u32 - 1;
            let cap = if is_comment {
                Duration::from_secs(300)
            } else {
                Duration::from_secs(120)
            };
            let delay = retry_after.unwrap_or_else(|| {
                backoff(attempt, Duration::from_secs(2), cap).mul_f64(w.backoff_scale)
            });
            let max = if is_comment {
                None
            } else {
                Some(w.max_attempts)
            };
            let dying = max.is_some_and(|m| task.attempts >= m as i64);
            if dying && task.kind == kind::CONTAIN {
                app.store
                    .release_claims(&task.tenant_id, &task.run_id, &task.arg)
                    .await?;
                app.store
                    .set_target(
                        &task.run_id,
                        &task.arg,
                        target::FAILED,
                        Some(&format!(
                            "gave up after {} attempts: {}",
                            task.attempts,
                            e.reason()
                        )),
                    )
                    .await?;
            }
            tracing::warn!(reason = %e.reason(), retry_in_ms = delay.as_millis() as u64, given_up = dying, "task failed");
            app.store
                .fail(
                    task,
                    e.reason(),
                    now_ms() + delay.as_millis() as i64,
                    max,
                    hold,
                )
                .await?;
        }
    }
    Ok(())
}

async fn handle(app: &App, task: &Task, run: Option<RunRecord>) -> Result<Done, CallError> {
    let Some(run) = run else {
        return Ok(Done::Complete);
    };
    let tid = TenantId::parse(&task.tenant_id).map_err(CallError::permanent)?;
    let Some(t) = app.tenant(&tid) else {
        return Err(CallError::permanent(format!(
            "tenant {tid} is no longer configured"
        )));
    };
    match task.kind.as_str() {
        kind::CONTAIN => contain(app, t, &run, &task.arg).await,
        kind::ENTITIES => entities(app, t, &run).await,
        kind::RESOLVE => resolve(app, t, &run, &task.arg).await,
        kind::COMMENT => write_comment(app, t, &run).await,
        kind::VERIFY => verify(app, t, &run, &task.arg).await,
        kind::CANCEL => cancel(app, t, &run).await,
        kind::EXPIRE => {
            if app.store.expire_hold(&run.id).await.map_err(store_err)? {
                tracing::info!("hold expired without approval");
                comment_later(app, &run).await?;
            }
            Ok(Done::Complete)
        }
        other => Err(CallError::permanent(format!("unknown task kind {other}"))),
    }
}

fn store_err(e: anyhow::Error) -> CallError {
    CallError::transient(format!("store: {e:#}"))
}

async fn comment_later(app: &App, run: &RunRecord) -> Result<(), CallError> {
    if run.incident_arm_id.is_some() {
        app.store
            .enqueue(&run.id, &run.tenant_id, kind::COMMENT, "", now_ms())
            .await
            .map_err(store_err)?;
    }
    Ok(())
}

/// Resolve the person and judge them, list their devices, apply the
/// policy, request account-only wipes.
async fn contain(app: &App, t: &TenantCtx, run: &RunRecord, key: &str) -> Result<Done, CallError> {
    let Some(target) = app.store.target(&run.id, key).await.map_err(store_err)? else {
        return Ok(Done::Complete);
    };
    if target.state != target::PENDING {
        return Ok(Done::Complete); // cancelled or decided meanwhile
    }
    app.store.mark_running(&run.id).await.map_err(store_err)?;
    let named = Upn::parse(key).map_err(CallError::permanent)?;
    let p = &t.tenant.policy;
    let decide = |state: &'static str, why: String| async move {
        app.store
            .set_target(&run.id, key, state, Some(&why))
            .await
            .map_err(store_err)?;
        Ok::<Done, CallError>(Done::Complete)
    };
    // The policy in force now, not only at intake: a user protected or a
    // domain removed since is not wiped.
    match policy::target(p, &named) {
        policy::TargetDecision::Proceed => {}
        policy::TargetDecision::Refused(why) => return decide(target::REFUSED, why).await,
        policy::TargetDecision::Protected(why) => return decide(target::PROTECTED, why).await,
    }
    // Judge the person, not the name: Exchange resolves any address of a
    // mailbox (UPN, primary SMTP, proxy addresses), so every decision is
    // made on the person the directory says the entity names (by its
    // object id when it gives one), and their devices are listed by their UPN.
    let found = match target.claims.object_ids.first() {
        Some(oid) => app.graph.user_by_id(&t.tokens, oid).await?,
        None => app.graph.user_by_address(&t.tokens, &named).await?,
    };
    let Some(mailbox) = found else {
        let why = match target.claims.object_ids.first() {
            Some(oid) => format!(
                "no user with the entity's object id {oid} in Microsoft Graph; nothing was wiped"
            ),
            None => format!(
                "no user answers to '{named}' in Microsoft Graph (neither as UPN nor as a mail address); nothing was wiped"
            ),
        };
        return decide(target::FAILED, why).await;
    };
    app.store
        .set_target_mailbox(&run.id, key, &mailbox)
        .await
        .map_err(store_err)?;
    if let Err(why) = policy::claims_agree(&named, &target.claims, &mailbox) {
        return decide(target::REFUSED, why).await;
    }
    match policy::person(p, &named, &mailbox) {
        policy::TargetDecision::Proceed => {}
        policy::TargetDecision::Refused(why) => return decide(target::REFUSED, why).await,
        policy::TargetDecision::Protected(why) => return decide(target::PROTECTED, why).await,
    }
    let upn = named;
    let mailbox_upn = mailbox.upn;
    let devices = app
        .exchange
        .mobile_devices(&t.tokens, &t.tenant.id, &mailbox_upn)
        .await?;
    let tenant = t.tenant.id.as_str();
    if devices.is_empty() {
        app.store
            .set_target(
                &run.id,
                upn.as_str(),
                target::DONE,
                Some("no mobile device"),
            )
            .await
            .map_err(store_err)?;
        return Ok(Done::Complete);
    }
    let decisions: Vec<_> = devices.iter().map(|d| (d, policy::device(p, d))).collect();
    // Dry run when the run or the tenant's policy now says so.
    let dry = run.mode == "dry_run" || p.mode == crate::config::Mode::DryRun;
    // The hourly budget holds unapproved runs before anything is sent.
    let to_wipe = decisions
        .iter()
        .filter(|(_, d)| matches!(d, DeviceDecision::Wipe { .. }))
        .count() as i64;
    if !dry && run.approved_by.is_none() && to_wipe > 0 {
        let used = app
            .store
            .wipes_since(now_ms() - 3_600_000)
            .await
            .map_err(store_err)?;
        let mine = app
            .store
            .devices(&run.id)
            .await
            .map_err(store_err)?
            .iter()
            .filter(|d| d.upn == upn.as_str())
            .count() as i64;
        if mine == 0 && used + to_wipe > p.max_wipes_per_hour as i64 {
            let why = format!(
                "hourly budget: {used} wipe(s) requested in the last hour, this user would add {to_wipe} (policy.max_wipes_per_hour = {}); approval required",
                p.max_wipes_per_hour
            );
            app.store
                .set_target(&run.id, upn.as_str(), target::HELD, Some(&why))
                .await
                .map_err(store_err)?;
            return Ok(Done::Complete);
        }
    }
    // Decide every device first (store only), then send this user's wipes
    // together: the Exchange limiter, not this loop, bounds concurrency.
    let mut to_send: Vec<(DeviceGuid, DeviceRecord)> = vec![];
    let mut busy_elsewhere = false;
    for (d, decision) in decisions {
        if app
            .store
            .device(&run.id, d.guid.as_str())
            .await
            .map_err(store_err)?
            .is_some()
        {
            continue; // decided on an earlier attempt of this task
        }
        let mut rec = DeviceRecord {
            run_id: run.id.clone(),
            upn: upn.to_string(),
            guid: d.guid.to_string(),
            device_id: d.device_id.clone(),
            device_type: d.device_type.clone(),
            model: d.model.clone(),
            os: d.os.clone(),
            client_type: d.client_type.as_str().to_string(),
            client_version: d.client_version.clone(),
            outcome: String::new(),
            reason: None,
            flags: None,
            requested_at: None,
            acked_at: None,
            verify: None,
            prior_run_id: None,
            prior_at: None,
        };
        match decision {
            DeviceDecision::Skip { reason, notes } => {
                rec.outcome = "skipped".into();
                rec.reason = Some(reason);
                rec.flags = Some(notes.join("\n"));
                app.store.put_device(&rec).await.map_err(store_err)?;
                app.metrics.device_outcome("skipped");
            }
            DeviceDecision::Wipe { notes } => {
                rec.flags = Some(notes.join("\n"));
                if dry {
                    rec.outcome = "would_request".into();
                    rec.reason =
                        Some("dry run: Clear-MobileDevice -AccountOnly was not sent".into());
                    app.store.put_device(&rec).await.map_err(store_err)?;
                    app.metrics.device_outcome("would_request");
                    continue;
                }
                match app
                    .store
                    .claim_wipe(tenant, d.guid.as_str(), &run.id, upn.as_str(), run.force)
                    .await
                    .map_err(store_err)?
                {
                    WipeClaim::Existing { run_id, state, .. }
                        if state == "sending" && run_id != run.id =>
                    {
                        // Another run is sending this wipe right now: decide
                        // after it has (its send may still fail).
                        busy_elsewhere = true;
                    }
                    WipeClaim::Existing {
                        run_id,
                        state,
                        requested_at,
                    } => {
                        rec.outcome = "already_requested".into();
                        rec.reason = Some(format!(
                            "a wipe is already {state} (run {run_id}); not sent again (use force to re-send)"
                        ));
                        rec.prior_run_id = Some(run_id);
                        rec.prior_at = Some(requested_at);
                        app.store.put_device(&rec).await.map_err(store_err)?;
                        app.metrics.device_outcome("already_requested");
                    }
                    WipeClaim::Mine => to_send.push((d.guid.clone(), rec)),
                }
            }
        }
    }
    // A cancellation may have arrived while the devices were listed.
    if !to_send.is_empty() && !still_pending(app, &run.id, upn.as_str()).await? {
        app.store
            .release_claims(tenant, &run.id, upn.as_str())
            .await
            .map_err(store_err)?;
        return Ok(Done::Complete);
    }
    let sends = to_send.iter().map(|(guid, _)| {
        app.exchange
            .clear_account_only(&t.tokens, &t.tenant.id, guid, &p.notification_emails)
    });
    let results = futures_util::future::join_all(sends).await;
    let mut requested = 0;
    let mut transient = None;
    for ((guid, mut rec), result) in to_send.into_iter().zip(results) {
        match result {
            Ok(()) => {
                rec.outcome = "requested".into();
                rec.requested_at = Some(now_ms());
                rec.verify = Some("pending".into());
                app.store
                    .wipe_requested(tenant, &rec)
                    .await
                    .map_err(store_err)?;
                app.metrics.device_outcome("requested");
                tracing::info!(device = %guid, upn = %upn, "account-only wipe requested");
                requested += 1;
            }
            Err(CallError::Permanent { reason }) => {
                app.store
                    .release_wipe(tenant, guid.as_str(), &run.id)
                    .await
                    .map_err(store_err)?;
                rec.outcome = "failed".into();
                rec.reason = Some(reason);
                app.store.put_device(&rec).await.map_err(store_err)?;
                app.metrics.device_outcome("failed");
            }
            // Transient: the claim stays this run's; the task's retry
            // re-sends this one call (a repeated account-only wipe request
            // only re-stamps the request time).
            Err(e) => transient = Some(e),
        }
    }
    if transient.is_none() && busy_elsewhere {
        transient = Some(CallError::transient(
            "another run is sending a wipe to one of this user's devices; deciding after it",
        ));
    }
    if let Some(e) = transient {
        if requested > 0 {
            let at = now_ms() + app.settings.policy.verify_interval.as_millis() as i64;
            app.store
                .enqueue(&run.id, &run.tenant_id, kind::VERIFY, upn.as_str(), at)
                .await
                .map_err(store_err)?;
        }
        return Err(e);
    }
    app.store
        .set_target(&run.id, upn.as_str(), target::DONE, None)
        .await
        .map_err(store_err)?;
    if requested > 0 {
        let at = now_ms() + app.settings.policy.verify_interval.as_millis() as i64;
        app.store
            .enqueue(&run.id, &run.tenant_id, kind::VERIFY, upn.as_str(), at)
            .await
            .map_err(store_err)?;
    }
    Ok(Done::Complete)
}

/// The mailbox a target resolved to (its devices are read through it).
async fn mailbox_of(app: &App, run_id: &str, key: &str) -> Result<Upn, CallError> {
    let resolved = app
        .store
        .target(run_id, key)
        .await
        .map_err(store_err)?
        .and_then(|t| t.mailbox_upn);
    Upn::parse(resolved.as_deref().unwrap_or(key)).map_err(CallError::permanent)
}

async fn still_pending(app: &App, run_id: &str, upn: &str) -> Result<bool, CallError> {
    let targets = app.store.targets(run_id).await.map_err(store_err)?;
    Ok(targets
        .iter()
        .any(|(u, s)| u == upn && s == target::PENDING))
}

/// Merge the incident's entities (read through ARM) into the run.
async fn entities(app: &App, t: &TenantCtx, run: &RunRecord) -> Result<Done, CallError> {
    let Some(inc) = run
        .incident_arm_id
        .as_deref()
        .and_then(|i| IncidentRef::parse(i).ok())
    else {
        return Ok(Done::Complete);
    };
    let candidates = app.arm.incident_entities(&t.tokens, &inc).await?;
    let mut upns = vec![];
    let mut unresolved = vec![];
    for c in candidates {
        match c {
            Candidate::Upn {
                upn,
                source,
                claims,
            } => upns.push(Found {
                upn,
                source: format!("{source}, from the incident's entities"),
                claims,
            }),
            Candidate::AadUser {
                object_id, claims, ..
            } => {
                app.store
                    .enqueue(
                        &run.id,
                        &run.tenant_id,
                        kind::RESOLVE,
                        &kind::resolve_arg(&object_id, &claims.notes),
                        now_ms(),
                    )
                    .await
                    .map_err(store_err)?;
            }
            Candidate::Unresolved { entity, reason } => unresolved.push((entity, reason)),
        }
    }
    add_found(app, t, run, upns, unresolved).await?;
    Ok(Done::Complete)
}

/// Resolve an Account that carries only `aadUserId`.
async fn resolve(app: &App, t: &TenantCtx, run: &RunRecord, arg: &str) -> Result<Done, CallError> {
    let (object_id, notes) = kind::parse_resolve_arg(arg);
    match app.graph.user_principal_name(&t.tokens, object_id).await? {
        Some(upn) => {
            // The mailbox that UPN resolves to must be this very object.
            let claims = Claims {
                object_ids: vec![object_id.to_ascii_lowercase()],
                notes,
                ..Default::default()
            };
            add_found(
                app,
                t,
                run,
                vec![Found {
                    upn,
                    source: "Account entity (aadUserId via Microsoft Graph)".into(),
                    claims,
                }],
                vec![],
            )
            .await?
        }
        None => {
            app.store
                .add_unresolved(
                    &run.id,
                    &format!("Account aadUserId {object_id}"),
                    "no such user in Microsoft Graph",
                )
                .await
                .map_err(store_err)?;
        }
    }
    Ok(Done::Complete)
}

async fn add_found(
    app: &App,
    t: &TenantCtx,
    run: &RunRecord,
    upns: Vec<Found>,
    unresolved: Vec<(String, String)>,
) -> Result<(), CallError> {
    // Fresh state: the run may have been cancelled or approved meanwhile.
    let Some(run) = app.store.run(&run.id).await.map_err(store_err)? else {
        return Ok(());
    };
    let run = &run;
    if run.status == status::SKIPPED || run.cancelled_at.is_some() {
        return Ok(());
    }
    let existing = app.store.targets(&run.id).await.map_err(store_err)?;
    let new: Vec<Found> = upns
        .into_iter()
        .filter(|f| !existing.iter().any(|(e, _)| e == f.upn.as_str()))
        .collect();
    // Policy refusals here; the blast radius is decided in the store, under
    // the run's lock.
    let planned = plan_targets(&t.tenant.policy, &new, false);
    let limit = run
        .approved_by
        .is_none()
        .then_some(t.tenant.policy.max_targets_per_run);
    let added = app
        .store
        .add_targets(&run.id, &run.tenant_id, &planned, &unresolved, limit)
        .await
        .map_err(store_err)?;
    if !added.is_empty() {
        tracing::info!(added = added.len(), "targets added after intake");
        app.wake.notify_one();
    }
    Ok(())
}

async fn write_comment(app: &App, t: &TenantCtx, run: &RunRecord) -> Result<Done, CallError> {
    let (Some(inc), Some(cid)) = (
        run.incident_arm_id
            .as_deref()
            .and_then(|i| IncidentRef::parse(i).ok()),
        run.comment_id.as_deref(),
    ) else {
        return Ok(Done::Complete);
    };
    let Some(report) = app.store.report(&run.id).await.map_err(store_err)? else {
        return Ok(Done::Complete);
    };
    let html = comment::render(
        &report,
        &app.settings.server.public_url,
        &crate::config::format_duration(t.tenant.policy.hold_expiry),
    );
    let started = std::time::Instant::now();
    let r = app.arm.put_comment(&t.tokens, &inc, cid, &html).await;
    app.metrics.upstream_latency(
        "arm",
        "put-comment",
        if r.is_ok() { 200 } else { 0 },
        started.elapsed(),
    );
    r?;
    tracing::info!(chars = html.chars().count(), "incident comment written");
    Ok(Done::Complete)
}

/// Follow requested wipes until the device acknowledges or the deadline passes.
async fn verify(app: &App, t: &TenantCtx, run: &RunRecord, upn: &str) -> Result<Done, CallError> {
    let devices: Vec<DeviceRecord> = app
        .store
        .devices(&run.id)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|d| {
            d.upn == upn
                && d.outcome == "requested"
                && d.acked_at.is_none()
                && d.verify.as_deref() == Some("pending")
        })
        .collect();
    if devices.is_empty() {
        return Ok(Done::Complete);
    }
    let upn_t = mailbox_of(app, &run.id, upn).await?;
    let stats = match app
        .exchange
        .statistics(&t.tokens, &t.tenant.id, &upn_t)
        .await
    {
        Ok(s) => s,
        Err(CallError::Permanent { reason }) => {
            // Exchange refuses to report on this mailbox: say so, stop following.
            tracing::warn!(reason = %reason, "cannot follow the wipes of this user");
            for d in &devices {
                app.store
                    .set_verify(&run.id, &d.guid, "unconfirmed")
                    .await
                    .map_err(store_err)?;
            }
            comment_later(app, run).await?;
            return Ok(Done::Complete);
        }
        Err(e) => return Err(e),
    };
    let now = now_ms();
    let deadline = t.tenant.policy.verify_deadline.as_millis() as i64;
    let mut changed = false;
    let mut waiting = vec![];
    for d in &devices {
        let s = stats.iter().find(|s| {
            s.guid.as_ref().map(DeviceGuid::as_str) == Some(d.guid.as_str())
                || (!d.device_id.is_empty() && s.device_id == d.device_id)
        });
        match s {
            Some(s) if s.acknowledged_since(d.requested_at.unwrap_or(0)) => {
                app.store
                    .wipe_acknowledged(
                        &t.tenant.id.to_string(),
                        &run.id,
                        &d.guid,
                        s.wipe_acked_at.unwrap_or(now),
                    )
                    .await
                    .map_err(store_err)?;
                app.metrics.device_outcome("acknowledged");
                tracing::info!(device = %d.guid, "wipe acknowledged by the device");
                changed = true;
            }
            _ if now - d.requested_at.unwrap_or(now) >= deadline => {
                app.store
                    .set_verify(&run.id, &d.guid, "unconfirmed")
                    .await
                    .map_err(store_err)?;
                changed = true;
            }
            _ => waiting.push(d.requested_at.unwrap_or(now)),
        }
    }
    if changed {
        comment_later(app, run).await?;
    }
    match waiting.iter().min() {
        None => Ok(Done::Complete),
        Some(oldest) => {
            let interval = app.settings.policy.verify_interval.as_millis() as i64;
            let elapsed = now - oldest;
            let next = elapsed.clamp(interval, 15 * 60 * 1000);
            let at = (now + next).min(oldest + deadline);
            Ok(Done::Reschedule(at.max(now + 10)))
        }
    }
}

/// Undo: cancel every wipe of the run the device has not acknowledged.
async fn cancel(app: &App, t: &TenantCtx, run: &RunRecord) -> Result<Done, CallError> {
    let by = run
        .cancelled_by
        .clone()
        .unwrap_or_else(|| "an analyst".into());
    let devices: Vec<DeviceRecord> = app
        .store
        .devices(&run.id)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|d| d.outcome == "requested")
        .collect();
    let mut upns: Vec<String> = devices.iter().map(|d| d.upn.clone()).collect();
    upns.dedup();
    let tenant = t.tenant.id.to_string();
    for u in upns {
        let upn = mailbox_of(app, &run.id, &u).await?;
        // Fresh state first: an acknowledged wipe cannot be cancelled.
        let stats = app
            .exchange
            .statistics(&t.tokens, &t.tenant.id, &upn)
            .await?;
        for d in devices.iter().filter(|d| d.upn == u) {
            let acked = d.acked_at.is_some()
                || stats.iter().any(|s| {
                    s.guid.as_ref().map(DeviceGuid::as_str) == Some(d.guid.as_str())
                        && s.acknowledged_since(d.requested_at.unwrap_or(0))
                });
            if acked {
                if d.acked_at.is_none() {
                    app.store
                        .wipe_acknowledged(&tenant, &run.id, &d.guid, now_ms())
                        .await
                        .map_err(store_err)?;
                }
                continue; // shown as acknowledged: could not be cancelled
            }
            let guid = DeviceGuid::parse(&d.guid).map_err(CallError::permanent)?;
            match app
                .exchange
                .cancel_wipe(&t.tokens, &t.tenant.id, &guid)
                .await
            {
                Ok(()) => {}
                Err(CallError::Permanent { reason }) => {
                    // Record it on the device and go on with the others.
                    let mut rec = d.clone();
                    let note = format!("cancel failed: {reason}");
                    rec.flags = Some(match &d.flags {
                        Some(f) if !f.is_empty() => format!("{f}\n{note}"),
                        _ => note,
                    });
                    app.store.put_device(&rec).await.map_err(store_err)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            app.store
                .wipe_cancelled(&tenant, &run.id, &d.guid, &by)
                .await
                .map_err(store_err)?;
            app.metrics.device_outcome("cancelled");
            tracing::info!(device = %d.guid, "wipe request cancelled");
        }
    }
    comment_later(app, run).await?;
    Ok(Done::Complete)
}
