//! Containment beyond the wipe: account steps (a ledger per person and step
//! across runs, and each run's view of its steps) and the device blocks
//! wipehook added.

use anyhow::Result;

use super::{Store, dispatch};
use crate::domain::{AccountStep, DeviceGuid, RunId, StepState, TenantId, Upn};

/// One account step of a run, as the run sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserStep {
    pub upn: Upn,
    pub step: AccountStep,
    pub state: StepState,
    pub reason: Option<String>,
    /// Unix ms.
    pub at: i64,
}

/// Whether another run already took a step for this person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepClaim {
    Free,
    /// Done by another run, not undone since.
    DoneBy {
        run_id: RunId,
        at: i64,
    },
}

impl Store {
    /// Has another run taken this step for this person (and not undone it)?
    pub async fn step_taken(
        &self,
        tenant: &TenantId,
        object_id: &str,
        step: AccountStep,
        run: &RunId,
    ) -> Result<StepClaim> {
        dispatch!(self, step_taken(tenant, object_id, step, run))
    }

    /// The step was taken by `run` (the ledger), and the run's view, together.
    pub async fn step_done(
        &self,
        tenant: &TenantId,
        object_id: &str,
        s: &UserStep,
        run: &RunId,
    ) -> Result<()> {
        dispatch!(self, step_done(tenant, object_id, s, run))
    }

    /// A step of the run that was not taken (would do, already done, skipped, failed).
    pub async fn put_user_step(&self, run: &RunId, s: &UserStep) -> Result<()> {
        dispatch!(self, put_user_step(run, s))
    }

    /// Undone by the run's cancel (the ledger frees it for later runs).
    pub async fn step_undone(
        &self,
        tenant: &TenantId,
        object_id: &str,
        s: &UserStep,
        run: &RunId,
    ) -> Result<()> {
        dispatch!(self, step_undone(tenant, object_id, s, run))
    }

    /// Every account step of a run, by user and in the order taken.
    pub async fn user_steps(&self, run: &RunId) -> Result<Vec<UserStep>> {
        dispatch!(self, user_steps(run))
    }

    /// wipehook blocked this device id for this mailbox in `run` (the
    /// ledger and the device row, together).
    pub async fn device_blocked(
        &self,
        tenant: &TenantId,
        run: &RunId,
        mailbox: &Upn,
        guid: &DeviceGuid,
        device_id: &str,
    ) -> Result<()> {
        dispatch!(self, device_blocked(tenant, run, mailbox, guid, device_id))
    }

    /// The blocks `run` added and has not removed: (mailbox, device id).
    pub async fn blocks_of(&self, tenant: &TenantId, run: &RunId) -> Result<Vec<(Upn, String)>> {
        dispatch!(self, blocks_of(tenant, run))
    }

    /// The run's cancel removed its block.
    pub async fn device_unblocked(
        &self,
        tenant: &TenantId,
        run: &RunId,
        mailbox: &Upn,
        device_id: &str,
    ) -> Result<()> {
        dispatch!(self, device_unblocked(tenant, run, mailbox, device_id))
    }
}
