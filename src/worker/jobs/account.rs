//! Containment beyond the wipe: the account steps through Microsoft Graph
//! (revoke sign-in sessions, block sign-in, confirm compromised), in the
//! tenant's order, for a user whose devices were decided; and their undo by
//! a cancel (only a sign-in block wipehook set). Each step is recorded once
//! per run (`user_steps`) and once per person across runs (`account_ledger`):
//! a crash or a duplicate delivery never doubles a step, a later run does not
//! repeat one unless forced.

use std::time::Duration;

use super::{Cx, Done, OnPermanent, RetryRule, store_err};
use crate::domain::{AccountStep, DeviceClass, DeviceOutcome, Mode, StepState, TargetState, Upn};
use crate::graph::Confirmed;
use crate::store::{StepClaim, UserStep, now_ms};
use crate::upstream::CallError;

/// Up to `worker.max_attempts` with backoff up to 2 minutes (Graph's
/// `Retry-After` first).
pub const RETRY: RetryRule = RetryRule {
    bounded: true,
    backoff_cap: Duration::from_secs(120),
    on_permanent: OnPermanent::Dead,
};

/// What `take` came to.
pub enum Took {
    /// Nothing to take (none configured, or all recorded already).
    Nothing,
    /// Steps were recorded.
    Recorded,
    /// The kill switch is engaged: nothing was taken.
    Stopped(String),
}

/// The `Account` task: take the configured steps now. While the kill
/// switch is engaged they wait (looked at again every 30 s), never lost.
pub async fn run(cx: &Cx<'_>, upn: &Upn) -> Result<Done, CallError> {
    match take(cx, upn).await? {
        Took::Recorded => cx.record_later().await?,
        Took::Stopped(_) => return Ok(Done::Reschedule(now_ms() + 30_000)),
        Took::Nothing => {}
    }
    Ok(Done::Complete)
}

/// Take every configured step not yet recorded for this user in this run.
/// Also called by the contain job itself in `contain_first` order, before
/// any wipe.
pub async fn take(cx: &Cx<'_>, upn: &Upn) -> Result<Took, CallError> {
    let steps = cx.policy().account_steps.clone();
    if steps.is_empty() {
        return Ok(Took::Nothing);
    }
    let fresh = cx.store().run(&cx.run.id).await.map_err(store_err)?;
    if fresh.as_ref().is_none_or(|r| r.cancelled.is_some()) {
        return Ok(Took::Nothing);
    }
    let dry = cx.run.mode == Mode::DryRun || cx.policy().mode == Mode::DryRun;
    // The kill switch stops every destructive step, the account's too.
    if !dry && let Some(why) = cx.kill_switch_stops().await? {
        return Ok(Took::Stopped(why));
    }
    let Some(target) = cx
        .store()
        .target(&cx.run.id, upn)
        .await
        .map_err(store_err)?
    else {
        return Ok(Took::Nothing);
    };
    // Only a user wipehook acts on: pending (contain_first, judged already)
    // or done. Held, protected, refused, cancelled users get no step.
    if !matches!(target.state, TargetState::Pending | TargetState::Done) {
        return Ok(Took::Nothing);
    }
    // Judged again with the policy in force now (a wipe_first step may come
    // minutes after the wipes): a user protected or refused since gets none.
    let refused_now = super::contain::judged_now(cx, &target);
    let recorded = cx.store().user_steps(&cx.run.id).await.map_err(store_err)?;
    let object_id = target.person.as_ref().and_then(|p| p.object_id.clone());
    let mut any = false;
    for step in steps {
        if recorded.iter().any(|s| &s.upn == upn && s.step == step) {
            continue; // taken (or decided) by an earlier attempt
        }
        let mut rec = UserStep {
            upn: upn.clone(),
            step,
            state: StepState::Skipped,
            reason: None,
            relies_on: None,
            at: now_ms(),
        };
        if let Some(why) = &refused_now {
            rec.reason = Some(format!("not done: {why}"));
            put_step(cx, &rec).await?;
            any = true;
            continue;
        }
        // The kill switch, again before each step (it may be thrown between two).
        if !dry && let Some(why) = cx.kill_switch_stops().await? {
            if any {
                cx.record_later().await?;
            }
            return Ok(Took::Stopped(why));
        }
        if dry {
            rec.state = StepState::WouldDo;
            rec.reason = Some(format!("dry run: {} was not done", describe(step)));
            put_step(cx, &rec).await?;
            any = true;
            continue;
        }
        let Some(oid) = object_id.as_deref() else {
            rec.state = StepState::Failed;
            rec.reason = Some("the person's object id is not known; nothing was done".into());
            put_step(cx, &rec).await?;
            any = true;
            continue;
        };
        // Claimed before it is taken: two runs (or one person named twice)
        // never both take it.
        let resumed = match cx
            .store()
            .claim_step(&cx.run.tenant, oid, step, &cx.run.id, upn, cx.run.force)
            .await
            .map_err(store_err)?
        {
            StepClaim::Mine { resumed } => resumed,
            StepClaim::TakenBy { run_id, at } => {
                rec.state = StepState::AlreadyDone;
                rec.reason = Some(format!(
                    "already done by run {run_id} at {} (or being done); not repeated (use force to repeat)",
                    crate::report::rfc3339(at)
                ));
                rec.relies_on = Some(run_id);
                put_step(cx, &rec).await?;
                any = true;
                continue;
            }
        };
        match perform(cx, step, oid, resumed).await {
            Ok(Taken::Done(note)) => {
                rec.state = StepState::Done;
                rec.reason = note;
                rec.at = now_ms();
                cx.store()
                    .step_done(&cx.run.tenant, oid, &rec, &cx.run.id)
                    .await
                    .map_err(store_err)?;
                cx.state.metrics.account_step(step.as_str(), "done");
                tracing::info!(upn = %upn, step = step.as_str(), "account step done");
            }
            Ok(Taken::Skipped(why)) => {
                rec.state = StepState::Skipped;
                rec.reason = Some(why);
                cx.store()
                    .step_not_taken(&cx.run.tenant, oid, &rec, &cx.run.id)
                    .await
                    .map_err(store_err)?;
                cx.state.metrics.account_step(step.as_str(), "skipped");
            }
            Err(CallError::Permanent { reason }) => {
                rec.state = StepState::Failed;
                rec.reason = Some(reason);
                cx.store()
                    .step_not_taken(&cx.run.tenant, oid, &rec, &cx.run.id)
                    .await
                    .map_err(store_err)?;
                cx.state.metrics.account_step(step.as_str(), "failed");
            }
            Err(e) => {
                if any {
                    cx.record_later().await?;
                }
                return Err(e);
            }
        }
        any = true;
    }
    if any {
        cx.cancel_if_cancelled_meanwhile().await?;
    }
    Ok(if any { Took::Recorded } else { Took::Nothing })
}

/// Record a step of the run that was not taken (no claim to free).
async fn put_step(cx: &Cx<'_>, rec: &UserStep) -> Result<(), CallError> {
    cx.store()
        .put_user_step(&cx.run.id, rec)
        .await
        .map_err(store_err)
}

enum Taken {
    Done(Option<String>),
    Skipped(String),
}

fn describe(step: AccountStep) -> &'static str {
    match step {
        AccountStep::RevokeSessions => "revoking the sign-in sessions",
        AccountStep::BlockSignIn => "blocking sign-in",
        AccountStep::ConfirmCompromised => "confirming the user compromised",
    }
}

async fn perform(
    cx: &Cx<'_>,
    step: AccountStep,
    oid: &str,
    resumed: bool,
) -> Result<Taken, CallError> {
    let graph = &cx.state.graph;
    let tokens = &cx.t.tokens;
    match step {
        AccountStep::RevokeSessions => {
            graph.revoke_sessions(tokens, oid).await?;
            Ok(Taken::Done(Some(
                "refresh tokens and session cookies revoked; Exchange refuses the account's access tokens within minutes (Continuous Access Evaluation, up to 15). Revoked sessions cannot be restored".into(),
            )))
        }
        AccountStep::BlockSignIn => {
            let Some(state) = graph.account_state(tokens, oid).await? else {
                return Err(CallError::permanent(format!(
                    "no user with object id {oid} in Microsoft Graph"
                )));
            };
            if !state.enabled && resumed {
                // This run's own earlier attempt blocked it; its answer was lost.
                return Ok(Taken::Done(Some(
                    "sign-in blocked (accountEnabled = false; an earlier attempt's answer was lost)"
                        .into(),
                )));
            }
            if !state.enabled {
                let by = if cx.run.attack_disruption {
                    "Defender's attack disruption acted on this incident"
                } else {
                    "an administrator or another tool"
                };
                return Ok(Taken::Skipped(format!(
                    "sign-in was already blocked ({by}); wipehook did not block it and will never re-enable it"
                )));
            }
            graph.set_account_enabled(tokens, oid, false).await?;
            Ok(Taken::Done(Some(if state.on_premises_synced {
                "sign-in blocked (accountEnabled = false). This account is synchronised from on-premises Active Directory: disable it there too, or the next sync enables it again".into()
            } else {
                "sign-in blocked (accountEnabled = false)".into()
            })))
        }
        AccountStep::ConfirmCompromised => match graph.confirm_compromised(tokens, oid).await? {
            Confirmed::Done => Ok(Taken::Done(Some(
                "confirmed compromised in Entra ID Protection (user risk high)".into(),
            ))),
            Confirmed::NoLicence(why) => Ok(Taken::Skipped(format!(
                "not done: confirming compromise needs Entra ID P2 (Identity Protection): {why}"
            ))),
        },
    }
}

/// When the `Account` task of a `wipe_first` user is due: at once when no
/// active phone waits for its wipe (stale and EAS below 16.1 devices do not
/// hold the steps back), else at `policy.account_steps_after`; the verify
/// job moves it earlier when every active phone acknowledged.
pub async fn schedule_after_wipes(cx: &Cx<'_>, upn: &Upn) -> Result<(), CallError> {
    if cx.policy().account_steps.is_empty()
        || cx.policy().containment_order == crate::domain::ContainmentOrder::ContainFirst
    {
        return Ok(());
    }
    let waiting = active_unacknowledged(cx, upn).await?;
    let at = if waiting {
        now_ms() + cx.policy().account_steps_after.as_millis() as i64
    } else {
        now_ms()
    };
    cx.store()
        .enqueue(
            &cx.run.id,
            &cx.run.tenant,
            &crate::domain::Job::Account { upn: upn.clone() },
            at,
        )
        .await
        .map_err(store_err)
}

/// Does an active (not stale) phone of this user still wait for its wipe?
pub async fn active_unacknowledged(cx: &Cx<'_>, upn: &Upn) -> Result<bool, CallError> {
    Ok(cx
        .store()
        .devices_of(&cx.run.id, upn)
        .await
        .map_err(store_err)?
        .iter()
        .any(|d| {
            d.outcome == DeviceOutcome::Requested
                && d.acked_at.is_none()
                && d.verification == Some(crate::domain::Verification::Pending)
                && !matches!(
                    d.triage,
                    Some(DeviceClass::Stale) | Some(DeviceClass::EasBelow16_1)
                )
        }))
}

/// The cancel's part: re-enable an account wipehook disabled in this run
/// (and only that); revoked sessions and a confirmed compromise cannot be
/// undone, and the record says so.
pub async fn undo(cx: &Cx<'_>) -> Result<(), CallError> {
    let steps = cx.store().user_steps(&cx.run.id).await.map_err(store_err)?;
    for s in steps.into_iter().filter(|s| s.state == StepState::Done) {
        let target = cx
            .store()
            .target(&cx.run.id, &s.upn)
            .await
            .map_err(store_err)?;
        let Some(oid) = target.and_then(|t| t.person.and_then(|p| p.object_id)) else {
            continue;
        };
        let mut rec = s.clone();
        match s.step {
            AccountStep::BlockSignIn => {
                // Only a block this run still owns, and that no other run
                // relies on, is lifted.
                let owner = cx
                    .store()
                    .step_owner(&cx.run.tenant, &oid, s.step)
                    .await
                    .map_err(store_err)?;
                if owner.as_ref().is_none_or(|(r, _)| r != &cx.run.id) {
                    let other = owner.map(|(r, _)| r.to_string()).unwrap_or_default();
                    let note = format!(
                        "not re-enabled by the cancel: the block now belongs to run {other}"
                    );
                    if s.reason.as_deref() != Some(note.as_str()) {
                        rec.reason = Some(note);
                        put_step(cx, &rec).await?;
                    }
                    continue;
                }
                let reliers = cx
                    .store()
                    .step_reliers(&cx.run.id, s.step)
                    .await
                    .map_err(store_err)?;
                if let Some(next) = reliers.first() {
                    cx.store()
                        .hand_step_over(&cx.run.tenant, &oid, s.step, &cx.run.id, next)
                        .await
                        .map_err(store_err)?;
                    rec.reason = Some(format!(
                        "not re-enabled by the cancel: run {next} relies on this block, and now owns it"
                    ));
                    put_step(cx, &rec).await?;
                    continue;
                }
                cx.state
                    .graph
                    .set_account_enabled(&cx.t.tokens, &oid, true)
                    .await?;
                rec.state = StepState::Undone;
                rec.reason =
                    Some("sign-in enabled again by the cancel (wipehook had blocked it)".into());
                rec.at = now_ms();
                cx.store()
                    .step_undone(&cx.run.tenant, &oid, &rec, &cx.run.id)
                    .await
                    .map_err(store_err)?;
                cx.state.metrics.account_step(s.step.as_str(), "undone");
            }
            AccountStep::RevokeSessions | AccountStep::ConfirmCompromised => {
                let note = if s.step == AccountStep::RevokeSessions {
                    "revoked sessions cannot be restored: the user signs in again"
                } else {
                    "a confirmed compromise is not undone by wipehook: dismiss the user's risk in Entra ID Protection if it was wrong"
                };
                if !s.reason.as_deref().unwrap_or("").contains(note) {
                    rec.reason = Some(format!(
                        "{}. Cancelled: {note}",
                        s.reason.unwrap_or_default()
                    ));
                    put_step(cx, &rec).await?;
                }
            }
        }
    }
    Ok(())
}
