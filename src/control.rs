//! Analyst control of runs, below the HTTP layer: approve a held run, cancel
//! a run (undo its unacknowledged wipes, release its held and pending
//! users), and which runs of an incident a cancel applies to. Handlers only
//! authenticate and translate.

use serde::Serialize;

use crate::auth::Caller;
use crate::domain::{AuditAction, RunId, RunStatus, TenantId};
use crate::state::Shared;
use crate::store::{AuditEntry, KillSwitch, RunRecord, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("run {0} is {1}, not held")]
    NotHeld(RunId, RunStatus),
    #[error("run {0} is no longer held")]
    NoLongerHeld(RunId),
    #[error("run {0} was already cancelled")]
    AlreadyCancelled(RunId),
    #[error(
        "run {0} was caused by this identity ({1}); another identity must approve it (two-person rule)"
    )]
    SelfApproval(RunId, String),
    #[error("the kill switch is engaged: lift it first (POST /api/v1/kill-switch), then approve")]
    KillSwitchEngaged,
    #[error(
        "the kill switch is engaged by the configuration (guard.kill_switch = true): change the file to lift it"
    )]
    EngagedByConfiguration,
    #[error(
        "the kill switch was engaged by an approver of another tenant: only that tenant's approvers may lift it"
    )]
    EngagedByAnotherTenant,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

#[derive(Clone, Debug, Serialize)]
pub struct Approved {
    pub run_id: RunId,
    /// `running` when released; `held` while it waits for a second approver.
    pub status: RunStatus,
    pub approved_by: String,
    pub targets_released: usize,
    /// Distinct approvers so far, and how many this run needs.
    pub approvals: usize,
    pub approvals_needed: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct CancelRequested {
    pub run_id: RunId,
    pub cancellation: &'static str,
    pub cancelled_by: String,
}

/// Approve a held run: its held users are released for containment and its
/// record is queued, in one transaction. Refused to the identity that caused
/// the run and while the kill switch is engaged; a run of more than
/// `policy.two_person_above` users waits for a second, distinct approver.
/// Every approval and refusal goes on the audit trail.
pub async fn approve(
    shared: &Shared,
    caller: &Caller,
    run: &RunRecord,
) -> Result<Approved, ControlError> {
    if run.status != RunStatus::Held {
        return Err(ControlError::NotHeld(run.id.clone(), run.status));
    }
    let who = caller.display();
    if run
        .caller_oid
        .as_deref()
        .is_some_and(|oid| oid.eq_ignore_ascii_case(&caller.oid))
    {
        let e = ControlError::SelfApproval(run.id.clone(), who.clone());
        audit(
            shared,
            caller,
            AuditAction::ApprovalRefused,
            Some(run),
            &e.to_string(),
        )
        .await?;
        tracing::warn!(run_id = %run.id, approver = %who, "self-approval refused");
        return Err(e);
    }
    if kill_switch(shared).await?.engaged {
        let e = ControlError::KillSwitchEngaged;
        audit(
            shared,
            caller,
            AuditAction::ApprovalRefused,
            Some(run),
            &e.to_string(),
        )
        .await?;
        return Err(e);
    }
    let users = shared.store.targets(&run.id).await?.len();
    let threshold = shared
        .tenant(&run.tenant)
        .map(|t| t.policy.two_person_threshold())
        .unwrap_or_else(|| shared.settings.policy.two_person_threshold());
    let needed = if users > threshold { 2 } else { 1 };
    let approvals = shared
        .store
        .add_approval(&run.id, &caller.oid, &who)
        .await?;
    let have = approvals.len();
    let names: Vec<&str> = approvals.iter().map(|a| a.approver.as_str()).collect();
    if have < needed {
        let detail = format!(
            "approval {have} of {needed}: {users} users exceed policy.two_person_above = {threshold}; waiting for another approver"
        );
        audit(
            shared,
            caller,
            AuditAction::ApprovalRecorded,
            Some(run),
            &detail,
        )
        .await?;
        tracing::info!(run_id = %run.id, approver = %who, "first of two approvals recorded");
        return Ok(Approved {
            run_id: run.id.clone(),
            status: RunStatus::Held,
            approved_by: names.join(" and "),
            targets_released: 0,
            approvals: have,
            approvals_needed: needed,
        });
    }
    let by = names.join(" and ");
    let n = shared.store.approve(&run.id, &by).await?;
    if n == 0 {
        return Err(ControlError::NoLongerHeld(run.id.clone()));
    }
    audit(
        shared,
        caller,
        AuditAction::Approved,
        Some(run),
        &format!("{n} held user(s) released; approved by {by}"),
    )
    .await?;
    tracing::info!(run_id = %run.id, approver = %by, targets = n, "held run approved");
    shared.wake.notify_one();
    Ok(Approved {
        run_id: run.id.clone(),
        status: RunStatus::Running,
        approved_by: by,
        targets_released: n,
        approvals: have,
        approvals_needed: needed,
    })
}

async fn audit(
    shared: &Shared,
    caller: &Caller,
    action: AuditAction,
    run: Option<&RunRecord>,
    detail: &str,
) -> anyhow::Result<()> {
    shared
        .store
        .audit(&AuditEntry {
            at: now_ms(),
            tenant: run.map(|r| r.tenant.clone()),
            actor: caller.display(),
            actor_oid: caller.oid.clone(),
            action,
            run_id: run.map(|r| r.id.clone()),
            detail: detail.to_string(),
        })
        .await
}

/// The kill switch in force: the configuration key, else the stored switch.
pub async fn kill_switch(shared: &Shared) -> anyhow::Result<KillSwitch> {
    if shared.settings.guard.kill_switch {
        return Ok(KillSwitch {
            engaged: true,
            by: Some("the configuration (guard.kill_switch = true)".into()),
            tenant: None,
            at: None,
            reason: None,
        });
    }
    shared.store.kill_switch().await
}

/// The kill switch after a call to engage or lift it.
#[derive(Clone, Debug, Serialize)]
pub struct KillSwitchChange {
    #[serde(flatten)]
    pub state: KillSwitch,
    /// `false` when it already was so.
    pub changed: bool,
}

/// Engage or lift the stored kill switch (an approver's call). Lifting it
/// does not release what it held: held users wait for approval.
pub async fn set_kill_switch(
    shared: &Shared,
    caller: &Caller,
    engaged: bool,
    reason: Option<&str>,
) -> Result<KillSwitchChange, ControlError> {
    if !engaged && shared.settings.guard.kill_switch {
        return Err(ControlError::EngagedByConfiguration);
    }
    // Any tenant's approver may stop wipehook; only the tenant that stopped
    // it may lift it (another tenant's stolen token cannot un-brake it).
    if !engaged {
        let now = shared.store.kill_switch().await?;
        if now.engaged && now.tenant.as_ref().is_some_and(|t| t != &caller.tenant) {
            return Err(ControlError::EngagedByAnotherTenant);
        }
    }
    let who = caller.display();
    let changed = shared
        .store
        .set_kill_switch(engaged, &who, &caller.tenant, reason)
        .await?;
    if changed {
        let action = if engaged {
            AuditAction::KillSwitchEngaged
        } else {
            AuditAction::KillSwitchLifted
        };
        let detail = reason.unwrap_or("(no reason given)");
        shared
            .store
            .audit(&AuditEntry {
                at: now_ms(),
                tenant: Some(caller.tenant.clone()),
                actor: who.clone(),
                actor_oid: caller.oid.clone(),
                action,
                run_id: None,
                detail: format!("{detail} (caller's tenant {})", caller.tenant),
            })
            .await?;
        if engaged {
            tracing::warn!(by = %who, reason = detail, kill_switch = true, "kill switch engaged: no wipe is sent");
        } else {
            tracing::warn!(by = %who, reason = detail, kill_switch = false, "kill switch lifted: held users wait for approval");
        }
    }
    let state = kill_switch(shared).await?;
    shared.brake.set(state.engaged);
    shared.metrics.set_kill_switch(state.engaged);
    Ok(KillSwitchChange { state, changed })
}

/// The audit trail a caller of `tenant` may read.
pub async fn audit_log(
    shared: &Shared,
    tenant: &TenantId,
    run: Option<&RunId>,
) -> anyhow::Result<Vec<AuditEntry>> {
    shared.store.audit_log(tenant, run, 500).await
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
    audit(
        shared,
        caller,
        AuditAction::Cancelled,
        Some(run),
        "cancellation requested",
    )
    .await?;
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
