//! Containment beyond the wipe: account steps (a ledger per person and step
//! across runs, claimed before the step is taken, and each run's view of its
//! steps) and the device blocks wipehook added.

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
    /// With `already_done`: the run whose step this one relies on.
    pub relies_on: Option<RunId>,
    /// Unix ms.
    pub at: i64,
}

/// Who may take a step for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepClaim {
    /// This target of this run; `resumed`: it had claimed it before (an
    /// earlier attempt whose answer may have been lost).
    Mine { resumed: bool },
    /// Another run (or another target of this run) took it or is taking it.
    TakenBy { run_id: RunId, at: i64 },
}

impl Store {
    /// Claim a step for a person before taking it (one claim per tenant,
    /// person and step across runs): a fresh step, an undone one, or `force`
    /// give `Mine`.
    pub async fn claim_step(
        &self,
        tenant: &TenantId,
        object_id: &str,
        step: AccountStep,
        run: &RunId,
        target: &Upn,
        force: bool,
    ) -> Result<StepClaim> {
        dispatch!(
            self,
            claim_step(tenant, object_id, step, run, target, force)
        )
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

    /// A claimed step was not taken (skipped, refused): free the claim and
    /// record the run's view.
    pub async fn step_not_taken(
        &self,
        tenant: &TenantId,
        object_id: &str,
        s: &UserStep,
        run: &RunId,
    ) -> Result<()> {
        dispatch!(self, step_not_taken(tenant, object_id, s, run))
    }

    /// A step of the run recorded without a claim (would do, already done,
    /// no object id).
    pub async fn put_user_step(&self, run: &RunId, s: &UserStep) -> Result<()> {
        dispatch!(self, put_user_step(run, s))
    }

    /// Who owns the ledger row of a step now: (run, state).
    pub async fn step_owner(
        &self,
        tenant: &TenantId,
        object_id: &str,
        step: AccountStep,
    ) -> Result<Option<(RunId, String)>> {
        dispatch!(self, step_owner(tenant, object_id, step))
    }

    /// Runs not cancelled that recorded `already_done` relying on `run`'s step.
    pub async fn step_reliers(&self, run: &RunId, step: AccountStep) -> Result<Vec<RunId>> {
        dispatch!(self, step_reliers(run, step))
    }

    /// Hand the ledger row of a step to another run (it relies on the step).
    pub async fn hand_step_over(
        &self,
        tenant: &TenantId,
        object_id: &str,
        step: AccountStep,
        from: &RunId,
        to: &RunId,
    ) -> Result<()> {
        dispatch!(self, hand_step_over(tenant, object_id, step, from, to))
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
