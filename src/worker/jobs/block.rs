//! Suspected attacker devices are cut off: once a device's account-only wipe
//! request is recorded, its ActiveSync device id is blocked for the mailbox
//! (`Set-CASMailbox ... @{Add=...}`, which adds and never replaces the list)
//! and stays blocked; a partnership is never removed. The run's cancel
//! removes only the blocks this run added.

use super::{Cx, Done, store_err};
use crate::domain::{DeviceClass, DeviceOutcome, Upn};
use crate::exchange::DeviceId;
use crate::upstream::CallError;

pub use super::follow_up::RETRY;

/// The `Block` task.
pub async fn run(cx: &Cx<'_>, upn: &Upn) -> Result<Done, CallError> {
    let fresh = cx.store().run(&cx.run.id).await.map_err(store_err)?;
    if fresh.as_ref().is_none_or(|r| r.cancelled.is_some()) {
        return Ok(Done::Complete);
    }
    // The kill switch stops every change wipehook makes in Exchange; the
    // block waits (looked at again every 30 s) and is made once it is lifted.
    if cx.kill_switch_stops().await?.is_some() {
        return Ok(Done::Reschedule(crate::store::now_ms() + 30_000));
    }
    let Some(target) = cx
        .store()
        .target(&cx.run.id, upn)
        .await
        .map_err(store_err)?
    else {
        return Ok(Done::Complete);
    };
    let mailbox = target.mailbox().clone();
    let devices = cx
        .store()
        .devices_of(&cx.run.id, upn)
        .await
        .map_err(store_err)?;
    let mut changed = false;
    for d in devices.iter().filter(|d| {
        d.triage == Some(DeviceClass::SuspectedAttacker)
            && d.blocked_at.is_none()
            && matches!(
                d.outcome,
                DeviceOutcome::Requested | DeviceOutcome::AlreadyRequested
            )
    }) {
        let id = match DeviceId::parse(&d.device_id) {
            Ok(id) => id,
            Err(e) => {
                let mut rec = d.clone();
                rec.notes.push(format!("not blocked: {e}"));
                cx.store().put_device(&rec).await.map_err(store_err)?;
                changed = true;
                continue;
            }
        };
        match cx
            .state
            .exchange
            .block_device(&cx.t.tokens, &cx.t.tenant.id, &mailbox, &id, false)
            .await
        {
            Ok(_) => {
                cx.store()
                    .device_blocked(&cx.run.tenant, &cx.run.id, &mailbox, &d.guid, &d.device_id)
                    .await
                    .map_err(store_err)?;
                cx.state.metrics.device_outcome("blocked");
                tracing::info!(device = %d.guid, "suspected attacker device blocked");
            }
            Err(CallError::Permanent { reason }) => {
                let mut rec = d.clone();
                rec.notes.push(format!("block failed: {reason}"));
                cx.store().put_device(&rec).await.map_err(store_err)?;
            }
            Err(e) => return Err(e),
        }
        changed = true;
    }
    if changed {
        cx.record_later().await?;
        cx.cancel_if_cancelled_meanwhile().await?;
    }
    Ok(Done::Complete)
}

/// The cancel's part: remove the blocks this run added.
pub async fn undo(cx: &Cx<'_>) -> Result<(), CallError> {
    let blocks = cx
        .store()
        .blocks_of(&cx.run.tenant, &cx.run.id)
        .await
        .map_err(store_err)?;
    for (mailbox, device_id) in blocks {
        let Ok(id) = DeviceId::parse(&device_id) else {
            continue;
        };
        cx.state
            .exchange
            .block_device(&cx.t.tokens, &cx.t.tenant.id, &mailbox, &id, true)
            .await?;
        cx.store()
            .device_unblocked(&cx.run.tenant, &cx.run.id, &mailbox, &device_id)
            .await
            .map_err(store_err)?;
        tracing::info!(device_id = %device_id, "block removed by the cancel");
    }
    Ok(())
}
