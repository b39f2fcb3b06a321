//! Contain one user: `recheck -> identify -> judge -> list -> budget ->
//! decide_and_claim -> send -> record`. Nothing is sent unless every step
//! before it said yes; every "no" is recorded with its reason.

use std::time::Duration;

use super::{Cx, Done, OnPermanent, RetryRule, store_err};
use crate::domain::{
    DeviceGuid, DeviceOutcome, DirectoryUser, Job, MobileDevice, Mode, TargetState, Upn,
    Verification, WipeState,
};
use crate::policy::{self, DeviceDecision, TargetDecision};
use crate::state::WorkerState;
use crate::store::{DeviceRecord, PriorWipe, TargetRecord, Task, WipeClaim, now_ms};
use crate::upstream::CallError;

/// Exchange and Graph are retried inside one attempt already; across
/// attempts, up to `worker.max_attempts` with backoff up to 2 minutes. A
/// user given up is recorded as failed and its unsent claims released.
pub const RETRY: RetryRule = RetryRule {
    bounded: true,
    backoff_cap: Duration::from_secs(120),
    on_permanent: OnPermanent::RecordAndComplete,
};

/// The user could not be contained: say so, and free the devices it
/// claimed but did not send, so a later run may try.
pub async fn given_up(
    state: &WorkerState,
    task: &Task,
    upn: &Upn,
    reason: &str,
) -> anyhow::Result<()> {
    state
        .store
        .release_claims(&task.tenant, &task.run_id, upn)
        .await?;
    state
        .store
        .move_target(
            &task.run_id,
            upn,
            TargetState::Pending,
            TargetState::Failed,
            Some(reason),
        )
        .await
        .map(|_| ())
}

pub async fn run(cx: &Cx<'_>, upn: &Upn) -> Result<Done, CallError> {
    let Some(target) = recheck(cx, upn).await? else {
        return Ok(Done::Complete);
    };
    // The policy in force now, on the address as named, before any lookup:
    // a user protected or a domain removed since intake is not looked up.
    if let Some((state, why)) = judge_named(cx, &target) {
        return decide(cx, upn, state, why).await;
    }
    let person = match identify(cx, &target).await? {
        Ok(p) => p,
        Err(why) => return decide(cx, upn, TargetState::Failed, why).await,
    };
    if let Some((state, why)) = judge(cx, &target, &person) {
        return decide(cx, upn, state, why).await;
    }
    let devices = cx
        .state
        .exchange
        .mobile_devices(&cx.t.tokens, &cx.t.tenant.id, &person.upn)
        .await?;
    if devices.is_empty() {
        return decide(cx, upn, TargetState::Done, "no mobile device".into()).await;
    }
    let decisions: Vec<(&MobileDevice, DeviceDecision)> = devices
        .iter()
        .map(|d| (d, policy::device(cx.policy(), d)))
        .collect();
    // Dry run when the run or the tenant's policy now says so.
    let dry = cx.run.mode == Mode::DryRun || cx.policy().mode == Mode::DryRun;
    if !dry && let Some(why) = over_budget(cx, upn, &decisions).await? {
        return decide(cx, upn, TargetState::Held, why).await;
    }
    let claimed = decide_and_claim(cx, upn, decisions, dry).await?;
    // A cancellation may have arrived while the devices were listed.
    if !claimed.to_send.is_empty() && !still_pending(cx, upn).await? {
        cx.store()
            .release_claims(&cx.run.tenant, &cx.run.id, upn)
            .await
            .map_err(store_err)?;
        return Ok(Done::Complete);
    }
    let sent = send(cx, upn, claimed.to_send).await?;
    record(cx, upn, sent, claimed.busy_elsewhere).await
}

async fn decide(
    cx: &Cx<'_>,
    upn: &Upn,
    state: TargetState,
    why: String,
) -> Result<Done, CallError> {
    cx.store()
        .set_target(&cx.run.id, upn, state, Some(&why))
        .await
        .map_err(store_err)?;
    Ok(Done::Complete)
}

/// Still pending? (Cancelled or decided meanwhile: nothing to do.) Marks
/// the run running.
async fn recheck(cx: &Cx<'_>, upn: &Upn) -> Result<Option<TargetRecord>, CallError> {
    let target = cx
        .store()
        .target(&cx.run.id, upn)
        .await
        .map_err(store_err)?;
    match target {
        Some(t) if t.state == TargetState::Pending => {
            cx.store()
                .mark_running(&cx.run.id)
                .await
                .map_err(store_err)?;
            Ok(Some(t))
        }
        _ => Ok(None),
    }
}

/// Who the entity names, as the directory knows them: by the entity's
/// object id when it gives one, else by the address (as a UPN, then as a
/// mail address). `Ok(Err(why))`: nobody.
async fn identify(
    cx: &Cx<'_>,
    target: &TargetRecord,
) -> Result<Result<DirectoryUser, String>, CallError> {
    let graph = &cx.state.graph;
    let tokens = &cx.t.tokens;
    let named = &target.upn;
    let found = match target.claims.object_ids.first() {
        Some(oid) => graph.user_by_id(tokens, oid).await?,
        None => graph.user_by_address(tokens, named).await?,
    };
    let Some(person) = found else {
        return Ok(Err(match target.claims.object_ids.first() {
            Some(oid) => format!(
                "no user with the entity's object id {oid} in Microsoft Graph; nothing was wiped"
            ),
            None => format!(
                "no user answers to '{named}' in Microsoft Graph (neither as UPN nor as a mail address); nothing was wiped"
            ),
        }));
    };
    cx.store()
        .set_target_person(&cx.run.id, named, &person)
        .await
        .map_err(store_err)?;
    Ok(Ok(person))
}

fn no(d: TargetDecision) -> Option<(TargetState, String)> {
    match d {
        TargetDecision::Proceed => None,
        TargetDecision::Refused(why) => Some((TargetState::Refused, why)),
        TargetDecision::Protected(why) => Some((TargetState::Protected, why)),
    }
}

/// The address as named, checked again with today's rules and today's
/// policy. `Some`: no.
fn judge_named(cx: &Cx<'_>, target: &TargetRecord) -> Option<(TargetState, String)> {
    // A stored address from an older version may fail today's parse
    // (invisible characters): refused, never looked up.
    if let Err(e) = Upn::parse(target.upn.as_str()) {
        return Some((TargetState::Refused, e));
    }
    no(policy::target(cx.policy(), &target.upn))
}

/// Judge the person, not the name: the entity's other claims, and the
/// policy on the person's UPN and every address they have. `Some`: no.
fn judge(
    cx: &Cx<'_>,
    target: &TargetRecord,
    person: &DirectoryUser,
) -> Option<(TargetState, String)> {
    let named = &target.upn;
    policy::claims_agree(named, &target.claims, person)
        .err()
        .map(|why| (TargetState::Refused, why))
        .or_else(|| no(policy::person(cx.policy(), named, person)))
}

/// The hourly budget holds an unapproved run's user before anything is
/// sent. `Some(reason)`: held.
async fn over_budget(
    cx: &Cx<'_>,
    upn: &Upn,
    decisions: &[(&MobileDevice, DeviceDecision)],
) -> Result<Option<String>, CallError> {
    let to_wipe = decisions
        .iter()
        .filter(|(_, d)| matches!(d, DeviceDecision::Wipe { .. }))
        .count() as i64;
    if cx.run.approved.is_some() || to_wipe == 0 {
        return Ok(None);
    }
    let used = cx
        .store()
        .wipes_since(now_ms() - 3_600_000)
        .await
        .map_err(store_err)?;
    // Devices already decided by an earlier attempt were counted then.
    let mine = cx
        .store()
        .devices_of(&cx.run.id, upn)
        .await
        .map_err(store_err)?
        .len();
    let max = cx.policy().max_wipes_per_hour as i64;
    Ok((mine == 0 && used + to_wipe > max).then(|| {
        format!(
            "hourly budget: {used} wipe(s) requested in the last hour, this user would add {to_wipe} (policy.max_wipes_per_hour = {max}); approval required"
        )
    }))
}

struct Claimed {
    to_send: Vec<DeviceRecord>,
    /// Another run is sending a wipe to one of these devices right now.
    busy_elsewhere: bool,
}

/// Decide every device (store only) and claim the ones to wipe in the
/// ledger; skipped, dry-run and already-requested devices are recorded here.
async fn decide_and_claim(
    cx: &Cx<'_>,
    upn: &Upn,
    decisions: Vec<(&MobileDevice, DeviceDecision)>,
    dry: bool,
) -> Result<Claimed, CallError> {
    let store = cx.store();
    let mut out = Claimed {
        to_send: vec![],
        busy_elsewhere: false,
    };
    for (d, decision) in decisions {
        if store
            .device(&cx.run.id, &d.guid)
            .await
            .map_err(store_err)?
            .is_some()
        {
            continue; // decided on an earlier attempt of this task
        }
        let (notes, reason) = match decision {
            DeviceDecision::Skip {
                cause,
                reason,
                notes,
            } => {
                let mut rec = DeviceRecord::decided(
                    &cx.run.id,
                    upn,
                    d,
                    DeviceOutcome::Skipped,
                    Some(reason),
                    notes,
                );
                rec.skip_cause = Some(cause);
                store.put_device(&rec).await.map_err(store_err)?;
                cx.state.metrics.device_outcome("skipped");
                continue;
            }
            DeviceDecision::Wipe { notes } => (notes, None),
        };
        if dry {
            let rec = DeviceRecord::decided(
                &cx.run.id,
                upn,
                d,
                DeviceOutcome::WouldRequest,
                Some("dry run: Clear-MobileDevice -AccountOnly was not sent".into()),
                notes,
            );
            store.put_device(&rec).await.map_err(store_err)?;
            cx.state.metrics.device_outcome("would_request");
            continue;
        }
        let claim = store
            .claim_wipe(&cx.run.tenant, &d.guid, &cx.run.id, upn, cx.run.force)
            .await
            .map_err(store_err)?;
        match claim {
            WipeClaim::Existing { state, .. } if state == WipeState::Sending => {
                // Another run, or another target of this run (the same
                // person named twice), is sending this wipe right now:
                // decide after it has (its send may still fail).
                out.busy_elsewhere = true;
            }
            WipeClaim::Existing {
                run_id,
                state,
                requested_at,
            } => {
                let mut rec = DeviceRecord::decided(
                    &cx.run.id,
                    upn,
                    d,
                    DeviceOutcome::AlreadyRequested,
                    Some(format!(
                        "a wipe is already {state} (run {run_id}); not sent again (use force to re-send)"
                    )),
                    notes,
                );
                rec.prior = Some(PriorWipe {
                    run_id,
                    at: requested_at,
                    state: Some(state),
                });
                store.put_device(&rec).await.map_err(store_err)?;
                cx.state.metrics.device_outcome("already_requested");
            }
            WipeClaim::Mine => out.to_send.push(DeviceRecord::decided(
                &cx.run.id,
                upn,
                d,
                DeviceOutcome::Requested,
                reason,
                notes,
            )),
        }
    }
    Ok(out)
}

/// What the sends came to.
struct Sent {
    requested: usize,
    /// A send whose answer was lost or throttled: the task is retried and
    /// re-sends only that wipe (its claim stays this run's).
    transient: Option<CallError>,
}

/// Send this user's wipes together (the Exchange limiter, not this loop,
/// bounds concurrency) and record each answer the moment it arrives: a
/// process that dies while one device's send is still retrying has already
/// stored the wipes Exchange accepted, so a retry of the task re-sends only
/// the ones whose answer was lost.
async fn send(cx: &Cx<'_>, upn: &Upn, to_send: Vec<DeviceRecord>) -> Result<Sent, CallError> {
    use futures_util::StreamExt;
    let exchange = &cx.state.exchange;
    let notify = &cx.policy().notification_emails;
    let mut sends: futures_util::stream::FuturesUnordered<_> = to_send
        .into_iter()
        .map(|rec| async move {
            let result = exchange
                .clear_account_only(&cx.t.tokens, &cx.t.tenant.id, &rec.guid, notify)
                .await;
            (rec, result)
        })
        .collect();
    let mut sent = Sent {
        requested: 0,
        transient: None,
    };
    while let Some((rec, result)) = sends.next().await {
        record_answer(cx, upn, rec, result, &mut sent).await?;
    }
    Ok(sent)
}

/// One device's answer, stored before the next is awaited.
async fn record_answer(
    cx: &Cx<'_>,
    upn: &Upn,
    mut rec: DeviceRecord,
    result: Result<Vec<String>, CallError>,
    sent: &mut Sent,
) -> Result<(), CallError> {
    match result {
        Ok(warnings) => {
            // Exchange's warnings on an accepted wipe go on the record.
            rec.notes.extend(
                warnings
                    .into_iter()
                    .map(|w| format!("Exchange warned: {w}")),
            );
            let at = now_ms();
            rec.requested_at = Some(at);
            rec.verify_until = Some(at + cx.policy().verify_deadline.as_millis() as i64);
            rec.verification = Some(Verification::Pending);
            cx.store()
                .wipe_requested(&cx.run.tenant, &rec)
                .await
                .map_err(store_err)?;
            cx.state.metrics.device_outcome("requested");
            tracing::info!(device = %rec.guid, upn = %upn, "account-only wipe requested");
            sent.requested += 1;
        }
        Err(CallError::Permanent { reason }) => {
            release(cx, &rec.guid).await?;
            rec.outcome = DeviceOutcome::Failed;
            rec.reason = Some(reason);
            cx.store().put_device(&rec).await.map_err(store_err)?;
            cx.state.metrics.device_outcome("failed");
        }
        Err(e) => sent.transient = Some(e),
    }
    Ok(())
}

async fn release(cx: &Cx<'_>, guid: &DeviceGuid) -> Result<(), CallError> {
    cx.store()
        .release_wipe(&cx.run.tenant, guid, &cx.run.id)
        .await
        .map_err(store_err)
}

/// The user is done (or retried for what is left); requested wipes are
/// followed until acknowledged.
async fn record(
    cx: &Cx<'_>,
    upn: &Upn,
    sent: Sent,
    busy_elsewhere: bool,
) -> Result<Done, CallError> {
    // Wipes an earlier, interrupted attempt recorded are followed too.
    let earlier = sent.requested == 0
        && cx
            .store()
            .devices_of(&cx.run.id, upn)
            .await
            .map_err(store_err)?
            .iter()
            .any(|d| d.verification == Some(Verification::Pending));
    let follow = async {
        if sent.requested > 0 || earlier {
            let at = now_ms() + cx.state.settings.policy.verify_interval.as_millis() as i64;
            cx.store()
                .enqueue(
                    &cx.run.id,
                    &cx.run.tenant,
                    &Job::Verify { upn: upn.clone() },
                    at,
                )
                .await
                .map_err(store_err)?;
        }
        Ok::<(), CallError>(())
    };
    let transient = sent.transient.or_else(|| {
        busy_elsewhere.then(|| {
            CallError::transient(
                "another run is sending a wipe to one of this user's devices; deciding after it",
            )
        })
    });
    if sent.requested > 0 {
        cancel_if_cancelled_meanwhile(cx).await?;
    }
    if let Some(e) = transient {
        follow.await?;
        return Err(e);
    }
    cx.store()
        .move_target(
            &cx.run.id,
            upn,
            TargetState::Pending,
            TargetState::Done,
            None,
        )
        .await
        .map_err(store_err)?;
    follow.await?;
    Ok(Done::Complete)
}

/// A cancel accepted while this user's wipes were in flight may have run
/// before they were recorded: run it again, so they are cancelled too.
async fn cancel_if_cancelled_meanwhile(cx: &Cx<'_>) -> Result<(), CallError> {
    let fresh = cx.store().run(&cx.run.id).await.map_err(store_err)?;
    if fresh.is_some_and(|r| r.cancelled.is_some()) {
        cx.store()
            .enqueue(&cx.run.id, &cx.run.tenant, &Job::Cancel, now_ms())
            .await
            .map_err(store_err)?;
    }
    Ok(())
}

async fn still_pending(cx: &Cx<'_>, upn: &Upn) -> Result<bool, CallError> {
    Ok(cx
        .store()
        .target(&cx.run.id, upn)
        .await
        .map_err(store_err)?
        .is_some_and(|t| t.state == TargetState::Pending))
}
