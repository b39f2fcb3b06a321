//! The wipe ledger: one row per (tenant, device) across every run. A run
//! claims a device before sending its wipe, so a device is wiped once,
//! however many runs, entities or replicas reach it.

use anyhow::Result;

use super::{DeviceRecord, Store, dispatch};
use crate::domain::{DeviceGuid, RunId, TenantId, Upn, WipeState};

/// Who owns the wipe of a device.
#[derive(Clone, Debug, PartialEq)]
pub enum WipeClaim {
    /// This run may send the wipe (a fresh claim, or its own earlier claim).
    Mine,
    /// Another run (or another target of this run) has it.
    Existing {
        run_id: RunId,
        state: WipeState,
        requested_at: i64,
    },
}

/// A ledger row (tests and operators).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    pub guid: DeviceGuid,
    pub run_id: RunId,
    pub state: WipeState,
}

impl Store {
    /// Claim the right to wipe a device for `target` of `run`. A fresh
    /// device, this target's own earlier claim, a cancelled wipe, or `force`
    /// (once per run) give `Mine`.
    pub async fn claim_wipe(
        &self,
        tenant: &TenantId,
        guid: &DeviceGuid,
        run: &RunId,
        target: &Upn,
        force: bool,
    ) -> Result<WipeClaim> {
        dispatch!(self, claim_wipe(tenant, guid, run, target, force))
    }

    /// A target gave up or was refused: release its claims still `sending`.
    pub async fn release_claims(
        &self,
        tenant: &TenantId,
        run: &RunId,
        target: &Upn,
    ) -> Result<u64> {
        dispatch!(self, release_claims(tenant, run, target))
    }

    /// After Exchange accepted the wipe: the ledger and the run's device row, together.
    pub async fn wipe_requested(&self, tenant: &TenantId, d: &DeviceRecord) -> Result<()> {
        dispatch!(self, wipe_requested(tenant, d))
    }

    /// Exchange refused the wipe: release the claim so a later run may try.
    pub async fn release_wipe(
        &self,
        tenant: &TenantId,
        guid: &DeviceGuid,
        run: &RunId,
    ) -> Result<()> {
        dispatch!(self, release_wipe(tenant, guid, run))
    }

    pub async fn wipe_acknowledged(
        &self,
        tenant: &TenantId,
        run: &RunId,
        guid: &DeviceGuid,
        at: i64,
    ) -> Result<()> {
        dispatch!(self, wipe_acknowledged(tenant, run, guid, at))
    }

    pub async fn wipe_cancelled(
        &self,
        tenant: &TenantId,
        run: &RunId,
        guid: &DeviceGuid,
        by: &str,
    ) -> Result<()> {
        dispatch!(self, wipe_cancelled(tenant, run, guid, by))
    }

    /// Wipe requests (any run, any tenant) since `since` (Unix ms).
    pub async fn wipes_since(&self, since: i64) -> Result<i64> {
        dispatch!(self, wipes_since(since))
    }

    /// Every ledger row of a tenant.
    pub async fn ledger(&self, tenant: &TenantId) -> Result<Vec<LedgerRow>> {
        dispatch!(self, ledger(tenant))
    }
}
