//! Contain one user: `recheck -> identify -> judge -> list ->
//! decide_and_claim -> guard -> send -> record`. Nothing is sent unless every
//! step before it said yes; every "no" is recorded with its reason. The
//! guard (kill switch, destructive budget) is the last step before a send:
//! it reserves exactly the devices about to be wiped.

use std::time::Duration;

use super::{Cx, Done, OnPermanent, RetryRule, store_err};
use crate::domain::{
    ContainmentOrder, DeviceClass, DeviceGuid, DeviceOutcome, DirectoryUser, Job, MobileDevice,
    Mode, TargetState, Upn, Verification, WipeState,
};
use crate::policy::{self, DeviceDecision, TargetDecision};
use crate::state::WorkerState;
use crate::store::{
    BudgetLimits, DeviceRecord, KillSwitch, PriorWipe, Reservation, TargetRecord, Task, WipeClaim,
    now_ms,
};
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
        remember_person(cx, &target, &person).await?;
        return decide(cx, upn, state, why).await;
    }
    // The person is stored while their devices are listed (a read): both
    // end before anything is decided.
    let (stored, devices) = tokio::join!(
        remember_person(cx, &target, &person),
        list_and_triage(cx, &person.upn)
    );
    stored?;
    let devices = devices?;
    if devices.is_empty() {
        if let Some(why) = contain_first(cx, upn).await? {
            return hold(cx, upn, why).await;
        }
        decide(cx, upn, TargetState::Done, "no mobile device".into()).await?;
        super::account::schedule_after_wipes(cx, upn).await?;
        return Ok(Done::Complete);
    }
    let decisions: Vec<(&MobileDevice, DeviceDecision)> = devices
        .iter()
        .map(|d| (d, policy::device(cx.policy(), d)))
        .collect();
    // Dry run when the run or the tenant's policy now says so.
    let dry = cx.run.mode == Mode::DryRun || cx.policy().mode == Mode::DryRun;
    let claimed = decide_and_claim(cx, upn, decisions, dry).await?;
    // A cancellation may have arrived while the devices were listed.
    if !claimed.to_send.is_empty() && !still_pending(cx, upn).await? {
        cx.store()
            .release_claims(&cx.run.tenant, &cx.run.id, upn)
            .await
            .map_err(store_err)?;
        return Ok(Done::Complete);
    }
    if let Some(why) = guard(cx, upn, &claimed.to_send).await? {
        // Nothing is sent: the claims (and any reservation) are released, the
        // user waits for approval with the reason.
        cx.store()
            .release_claims(&cx.run.tenant, &cx.run.id, upn)
            .await
            .map_err(store_err)?;
        tracing::warn!(upn = %upn, reason = %why, "wipes held by the guard");
        return hold(cx, upn, why).await;
    }
    // contain_first: the account steps at once, after the guard passed and
    // before any wipe is sent.
    if let Some(why) = contain_first(cx, upn).await? {
        cx.store()
            .release_claims(&cx.run.tenant, &cx.run.id, upn)
            .await
            .map_err(store_err)?;
        return hold(cx, upn, why).await;
    }
    let sent = send(cx, upn, claimed.to_send).await?;
    let done = record(cx, upn, sent, claimed.busy_elsewhere).await?;
    after_wipes(cx, upn, dry).await?;
    Ok(done)
}

/// `contain_first`: take the account steps now. `Some(reason)`: the kill
/// switch stops them; the user is held with the reason (nothing taken).
async fn contain_first(cx: &Cx<'_>, upn: &Upn) -> Result<Option<String>, CallError> {
    if cx.policy().containment_order != ContainmentOrder::ContainFirst {
        return Ok(None);
    }
    match super::account::take(cx, upn).await? {
        super::account::Took::Stopped(why) => Ok(Some(why)),
        _ => Ok(None),
    }
}

/// The user's devices, each with its triage (what it is, and why), read
/// with the statistics (last sync) in parallel. The statistics are best
/// effort: without them no device is called stale.
async fn list_and_triage(cx: &Cx<'_>, mailbox: &Upn) -> Result<Vec<MobileDevice>, CallError> {
    let exchange = &cx.state.exchange;
    let (devices, stats) = tokio::join!(
        exchange.mobile_devices(&cx.t.tokens, &cx.t.tenant.id, mailbox),
        exchange.statistics(&cx.t.tokens, &cx.t.tenant.id, mailbox)
    );
    let mut devices = devices?;
    let stats = stats.unwrap_or_else(|e| {
        tracing::warn!(reason = %e.reason(), "no statistics for the triage: no device is called stale");
        vec![]
    });
    let now = now_ms();
    for d in &mut devices {
        d.last_sync_ms = stats
            .iter()
            .find(|s| {
                s.guid.as_ref() == Some(&d.guid)
                    || (!d.device_id.is_empty() && s.device_id == d.device_id)
            })
            .and_then(|s| s.last_sync_ms);
        d.class = Some(policy::triage(
            cx.policy(),
            d,
            cx.run.first_activity_at,
            now,
        ));
    }
    Ok(devices)
}

/// After the user's wipes were requested: block its suspected attacker
/// devices (a durable task of its own), and schedule the account steps
/// (`wipe_first`).
async fn after_wipes(cx: &Cx<'_>, upn: &Upn, dry: bool) -> Result<(), CallError> {
    let still = cx
        .store()
        .target(&cx.run.id, upn)
        .await
        .map_err(store_err)?
        .is_some_and(|t| t.state == TargetState::Done);
    if !still {
        return Ok(());
    }
    if !dry
        && cx
            .store()
            .devices_of(&cx.run.id, upn)
            .await
            .map_err(store_err)?
            .iter()
            .any(|d| {
                d.triage == Some(DeviceClass::SuspectedAttacker)
                    && d.blocked_at.is_none()
                    && matches!(
                        d.outcome,
                        DeviceOutcome::Requested | DeviceOutcome::AlreadyRequested
                    )
            })
    {
        cx.store()
            .enqueue(
                &cx.run.id,
                &cx.run.tenant,
                &Job::Block { upn: upn.clone() },
                now_ms(),
            )
            .await
            .map_err(store_err)?;
    }
    super::account::schedule_after_wipes(cx, upn).await
}

/// Hold a user still pending (a cancel that arrived meanwhile wins).
async fn hold(cx: &Cx<'_>, upn: &Upn, why: String) -> Result<Done, CallError> {
    cx.store()
        .move_target(
            &cx.run.id,
            upn,
            TargetState::Pending,
            TargetState::Held,
            Some(&why),
        )
        .await
        .map_err(store_err)?;
    Ok(Done::Complete)
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
    Ok(Ok(person))
}

/// Record who the target resolved to (the record names the person).
async fn remember_person(
    cx: &Cx<'_>,
    target: &TargetRecord,
    person: &DirectoryUser,
) -> Result<(), CallError> {
    cx.store()
        .set_target_person(&cx.run.id, &target.upn, person)
        .await
        .map_err(store_err)
}

fn no(d: TargetDecision) -> Option<(TargetState, String)> {
    match d {
        TargetDecision::Proceed => None,
        TargetDecision::Refused(why) => Some((TargetState::Refused, why)),
        TargetDecision::Protected(why) => Some((TargetState::Protected, why)),
    }
}

/// The target judged with the policy in force now, for a step taken after
/// the wipes: the address as named, and the resolved person's UPN (the
/// person's other addresses were judged when it was contained). `Some(why)`: no.
pub fn judged_now(cx: &Cx<'_>, target: &TargetRecord) -> Option<String> {
    if let Some((_, why)) = judge_named(cx, target) {
        return Some(why);
    }
    let mailbox = target.mailbox();
    if mailbox != &target.upn {
        return no(policy::target(cx.policy(), mailbox)).map(|(_, why)| why);
    }
    None
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

/// The last word before a send: the kill switch (the configuration key,
/// then the stored switch) and the destructive budget, reserved atomically
/// in the store for exactly these devices (an approved run's reservation is
/// not checked against the limits, but counts for others). `Some(reason)`:
/// held, nothing reserved.
async fn guard(
    cx: &Cx<'_>,
    upn: &Upn,
    to_send: &[DeviceRecord],
) -> Result<Option<String>, CallError> {
    if to_send.is_empty() {
        return Ok(None);
    }
    let g = &cx.state.settings.guard;
    if g.kill_switch {
        return Ok(Some(
            "kill switch engaged by the configuration (guard.kill_switch = true): nothing was sent; once it is lifted, approve the run to contain this user".into(),
        ));
    }
    let limits = BudgetLimits {
        tenant_max: cx.policy().max_wipes_per_hour as i64,
        service_max: g.max_wipes_per_hour as i64,
        window_ms: BUDGET_WINDOW.as_millis() as i64,
    };
    let guids: Vec<DeviceGuid> = to_send.iter().map(|d| d.guid.clone()).collect();
    let r = cx
        .store()
        .reserve_wipes(
            &cx.run.tenant,
            &cx.run.id,
            upn,
            &guids,
            limits,
            cx.run.approved.is_some(),
        )
        .await
        .map_err(store_err)?;
    Ok(match r {
        Reservation::Reserved => None,
        Reservation::KillSwitch(ks) => {
            cx.state.metrics.guard_held("kill_switch");
            Some(kill_switch_reason(&ks))
        }
        Reservation::OverBudget {
            scope,
            used,
            max,
            wanted,
        } => {
            cx.state.metrics.guard_held(scope);
            let key = if scope == "tenant" {
                "policy.max_wipes_per_hour"
            } else {
                "guard.max_wipes_per_hour, every tenant together"
            };
            Some(format!(
                "hourly budget: {used} wipe request(s) in the last hour, this user's {wanted} would pass {max} ({key}); nothing was sent; approval required"
            ))
        }
    })
}

/// The rolling window of the destructive budget.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(3600);

/// Why a user is held by the kill switch, in the words of the record.
pub fn kill_switch_reason(ks: &KillSwitch) -> String {
    let by = ks.by.as_deref().unwrap_or("an operator");
    let at = ks
        .at
        .map(|t| format!(" at {}", crate::report::rfc3339(t)))
        .unwrap_or_default();
    let why = ks
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    format!(
        "kill switch engaged by {by}{at}{why}: nothing was sent; once it is lifted, approve the run to contain this user"
    )
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
    /// Wipes the kill switch stopped before they left (never sent).
    braked: Vec<DeviceGuid>,
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
        braked: vec![],
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
        Err(e) if e.reason() == crate::exchange::BRAKE_REFUSAL => sent.braked.push(rec.guid),
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
        cx.cancel_if_cancelled_meanwhile().await?;
    }
    // The kill switch was thrown while these wipes waited for Exchange: what
    // it stopped is released and the user held now (not retried: lifting the
    // switch must not release it); what was sent is followed, and a wipe
    // whose answer was lost keeps its claim (an approval re-sends only it).
    if !sent.braked.is_empty() {
        follow.await?;
        for g in &sent.braked {
            release(cx, g).await?;
        }
        let ks = crate::control::kill_switch(cx.state)
            .await
            .map_err(store_err)?;
        cx.state.metrics.guard_held("kill_switch");
        return hold(cx, upn, kill_switch_reason(&ks)).await;
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

async fn still_pending(cx: &Cx<'_>, upn: &Upn) -> Result<bool, CallError> {
    Ok(cx
        .store()
        .target(&cx.run.id, upn)
        .await
        .map_err(store_err)?
        .is_some_and(|t| t.state == TargetState::Pending))
}
