//! The guard against wipehook becoming the attacker's wipe button: the
//! destructive budget (a reservation per device, taken atomically before its
//! wipe is sent), the kill switch, the approvals of a run (two-person rule)
//! and the audit trail of who approved, was refused, cancelled or threw the
//! switch.

use anyhow::Result;
use serde::Serialize;

use super::{Store, dispatch};
use crate::domain::{AuditAction, DeviceGuid, RunId, TenantId, Upn};

/// The rolling-window limits a reservation is checked against.
#[derive(Clone, Copy, Debug)]
pub struct BudgetLimits {
    /// Wipe requests per window for the run's tenant.
    pub tenant_max: i64,
    /// Wipe requests per window for the whole service (every tenant).
    pub service_max: i64,
    pub window_ms: i64,
}

/// What a reservation came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Reservation {
    /// Every device is reserved (some perhaps by an earlier attempt).
    Reserved,
    /// The window has no room for these devices: nothing was reserved.
    OverBudget {
        /// `tenant` or `service`.
        scope: &'static str,
        used: i64,
        max: i64,
        wanted: i64,
    },
    /// The kill switch is engaged: nothing was reserved.
    KillSwitch(KillSwitch),
}

/// The kill switch as the store holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KillSwitch {
    pub engaged: bool,
    pub by: Option<String>,
    /// The tenant of the approver who last threw it (only that tenant's
    /// approvers may lift it).
    #[serde(skip)]
    pub tenant: Option<TenantId>,
    /// Unix ms.
    pub at: Option<i64>,
    pub reason: Option<String>,
}

/// One approval of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub approver_oid: String,
    pub approver: String,
    /// Unix ms.
    pub at: i64,
}

/// One line of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Unix ms.
    pub at: i64,
    pub tenant: Option<TenantId>,
    pub actor: String,
    pub actor_oid: String,
    pub action: AuditAction,
    pub run_id: Option<RunId>,
    pub detail: String,
}

impl Store {
    /// Reserve the destructive budget for these devices of `target` in
    /// `run`, atomically for every slot, run and replica (under the lock of
    /// the guard row): all of them or none. Devices this run reserved before
    /// are not counted again. `bypass` (an approved run) reserves without
    /// checking the limits, so its wipes still count for others; the kill
    /// switch is never bypassed.
    pub async fn reserve_wipes(
        &self,
        tenant: &TenantId,
        run: &RunId,
        target: &Upn,
        guids: &[DeviceGuid],
        limits: BudgetLimits,
        bypass: bool,
    ) -> Result<Reservation> {
        dispatch!(
            self,
            reserve_wipes(tenant, run, target, guids, limits, bypass)
        )
    }

    /// Wipe requests reserved or used in the window ending now: the tenant's
    /// and the service's.
    pub async fn budget_used(&self, tenant: &TenantId, window_ms: i64) -> Result<(i64, i64)> {
        dispatch!(self, budget_used(tenant, window_ms))
    }

    /// The kill switch as stored (the configuration key is read by the caller).
    pub async fn kill_switch(&self) -> Result<KillSwitch> {
        dispatch!(self, kill_switch())
    }

    /// Engage or lift the kill switch; `false` when it already was so.
    pub async fn set_kill_switch(
        &self,
        engaged: bool,
        by: &str,
        tenant: &TenantId,
        reason: Option<&str>,
    ) -> Result<bool> {
        dispatch!(self, set_kill_switch(engaged, by, tenant, reason))
    }

    /// Record an approval (once per approver) and return every approval of the run.
    pub async fn add_approval(
        &self,
        run: &RunId,
        approver_oid: &str,
        approver: &str,
    ) -> Result<Vec<Approval>> {
        dispatch!(self, add_approval(run, approver_oid, approver))
    }

    pub async fn approvals(&self, run: &RunId) -> Result<Vec<Approval>> {
        dispatch!(self, approvals(run))
    }

    pub async fn audit(&self, e: &AuditEntry) -> Result<()> {
        dispatch!(self, audit(e))
    }

    /// The audit trail, newest first: of one tenant (and the service-wide
    /// kill switch), or of one run.
    pub async fn audit_log(
        &self,
        tenant: &TenantId,
        run: Option<&RunId>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        dispatch!(self, audit_log(tenant, run, limit))
    }
}
