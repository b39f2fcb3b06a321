//! Follow-ups of a run: verify (poll `Get-MobileDeviceStatistics` until each
//! requested wipe is acknowledged or its deadline passes), cancel (undo the
//! unacknowledged wipes) and expire (a hold nobody approved).

use std::time::Duration;

use super::{Cx, Done, OnPermanent, RetryRule, store_err};
use crate::domain::{DeviceOutcome, Upn, Verification};
use crate::exchange::CancelOutcome;
use crate::store::{DeviceRecord, now_ms};
use crate::upstream::CallError;

/// Up to `worker.max_attempts` with backoff up to 2 minutes.
pub const RETRY: RetryRule = RetryRule {
    bounded: true,
    backoff_cap: Duration::from_secs(120),
    on_permanent: OnPermanent::RecordAndComplete,
};

/// The UPN Exchange is asked about for a target: the resolved person's.
async fn mailbox_of(cx: &Cx<'_>, target: &Upn) -> Result<Upn, CallError> {
    let t = cx
        .store()
        .target(&cx.run.id, target)
        .await
        .map_err(store_err)?;
    Ok(t.map(|t| t.mailbox().clone())
        .unwrap_or_else(|| target.clone()))
}

/// Follow requested wipes until the device acknowledges or the deadline passes.
pub async fn verify(cx: &Cx<'_>, upn: &Upn) -> Result<Done, CallError> {
    let devices: Vec<DeviceRecord> = cx
        .store()
        .devices_of(&cx.run.id, upn)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|d| {
            d.outcome == DeviceOutcome::Requested
                && d.acked_at.is_none()
                && d.verification == Some(Verification::Pending)
        })
        .collect();
    if devices.is_empty() {
        return Ok(Done::Complete);
    }
    let mailbox = mailbox_of(cx, upn).await?;
    let stats = match cx
        .state
        .exchange
        .statistics(&cx.t.tokens, &cx.t.tenant.id, &mailbox)
        .await
    {
        Ok(s) => s,
        Err(CallError::Permanent { reason }) => {
            // Exchange refuses to report on this mailbox: say so, stop following.
            tracing::warn!(reason = %reason, "cannot follow the wipes of this user");
            for d in &devices {
                cx.store()
                    .set_verify(&cx.run.id, &d.guid, Verification::Unconfirmed)
                    .await
                    .map_err(store_err)?;
            }
            cx.record_later().await?;
            return Ok(Done::Complete);
        }
        Err(e) => return Err(e),
    };
    let now = now_ms();
    let deadline = cx.policy().verify_deadline.as_millis() as i64;
    let mut changed = false;
    let mut waiting = vec![];
    for d in &devices {
        let s = stats.iter().find(|s| {
            s.guid.as_ref() == Some(&d.guid)
                || (!d.device_id.is_empty() && s.device_id == d.device_id)
        });
        match s {
            Some(s) if s.acknowledged_since(d.requested_at.unwrap_or(0)) => {
                cx.store()
                    .wipe_acknowledged(
                        &cx.run.tenant,
                        &cx.run.id,
                        &d.guid,
                        s.wipe_acked_at.unwrap_or(now),
                    )
                    .await
                    .map_err(store_err)?;
                cx.state.metrics.device_outcome("acknowledged");
                tracing::info!(device = %d.guid, "wipe acknowledged by the device");
                changed = true;
            }
            _ if now - d.requested_at.unwrap_or(now) >= deadline => {
                cx.store()
                    .set_verify(&cx.run.id, &d.guid, Verification::Unconfirmed)
                    .await
                    .map_err(store_err)?;
                changed = true;
            }
            _ => waiting.push(d.requested_at.unwrap_or(now)),
        }
    }
    if changed {
        cx.record_later().await?;
        // wipe_first: every active phone acknowledged (or passed its
        // deadline): the account steps need not wait any longer.
        if !super::account::active_unacknowledged(cx, upn).await? {
            super::account::schedule_after_wipes(cx, upn).await?;
        }
    }
    match waiting.iter().min() {
        None => Ok(Done::Complete),
        Some(oldest) => {
            let interval = cx.state.settings.policy.verify_interval.as_millis() as i64;
            let elapsed = now - oldest;
            let next = elapsed.clamp(interval, 15 * 60 * 1000);
            let at = (now + next).min(oldest + deadline);
            Ok(Done::Reschedule(at.max(now + 10)))
        }
    }
}

/// Undo: cancel every wipe of the run the device has not acknowledged.
pub async fn cancel(cx: &Cx<'_>) -> Result<Done, CallError> {
    let store = cx.store();
    let by = cx
        .run
        .cancelled
        .as_ref()
        .map(|a| a.by.clone())
        .unwrap_or_else(|| "an analyst".into());
    let devices: Vec<DeviceRecord> = store
        .devices(&cx.run.id)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|d| d.outcome == DeviceOutcome::Requested)
        .collect();
    let mut upns: Vec<Upn> = devices.iter().map(|d| d.upn.clone()).collect();
    upns.dedup();
    for u in upns {
        let mailbox = mailbox_of(cx, &u).await?;
        // Fresh state first: an acknowledged wipe cannot be cancelled.
        let stats = cx
            .state
            .exchange
            .statistics(&cx.t.tokens, &cx.t.tenant.id, &mailbox)
            .await?;
        for d in devices.iter().filter(|d| d.upn == u) {
            let acked = d.acked_at.is_some()
                || stats.iter().any(|s| {
                    s.guid.as_ref() == Some(&d.guid)
                        && s.acknowledged_since(d.requested_at.unwrap_or(0))
                });
            if acked {
                if d.acked_at.is_none() {
                    store
                        .wipe_acknowledged(&cx.run.tenant, &cx.run.id, &d.guid, now_ms())
                        .await
                        .map_err(store_err)?;
                }
                continue; // shown as acknowledged: could not be cancelled
            }
            match cx
                .state
                .exchange
                .cancel_wipe(&cx.t.tokens, &cx.t.tenant.id, &d.guid)
                .await
            {
                Ok(CancelOutcome::Cancelled { warnings }) => {
                    if !warnings.is_empty() {
                        let mut rec = d.clone();
                        rec.notes
                            .extend(warnings.iter().map(|w| format!("Exchange warned: {w}")));
                        store.put_device(&rec).await.map_err(store_err)?;
                    }
                }
                Ok(CancelOutcome::NothingPending(warning)) => {
                    // Exchange had nothing to cancel: the phone may have
                    // acknowledged since the last read, or the request never
                    // arrived. Never "cancelled".
                    let mut rec = d.clone();
                    rec.notes.push(format!(
                        "not cancelled: nothing pending (already acknowledged or never requested); Exchange: {warning}"
                    ));
                    store.put_device(&rec).await.map_err(store_err)?;
                    continue;
                }
                Err(CallError::Permanent { reason }) => {
                    // Record it on the device and go on with the others.
                    let mut rec = d.clone();
                    rec.notes.push(format!("cancel failed: {reason}"));
                    store.put_device(&rec).await.map_err(store_err)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            store
                .wipe_cancelled(&cx.run.tenant, &cx.run.id, &d.guid, &by)
                .await
                .map_err(store_err)?;
            cx.state.metrics.device_outcome("cancelled");
            tracing::info!(device = %d.guid, "wipe request cancelled");
        }
    }
    // Beyond the wipe: the blocks this run added, a sign-in block it set.
    super::block::undo(cx).await?;
    super::account::undo(cx).await?;
    cx.record_later().await?;
    Ok(Done::Complete)
}

/// A hold not approved in time: nothing held is wiped, and the record says so.
pub async fn expire(cx: &Cx<'_>) -> Result<Done, CallError> {
    if cx
        .store()
        .expire_hold(&cx.run.id)
        .await
        .map_err(store_err)?
    {
        tracing::info!("hold expired without approval");
        cx.record_later().await?;
    }
    Ok(Done::Complete)
}
