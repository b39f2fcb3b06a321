//! The users of a run (targets), the entities that yielded none, and each
//! device's outcome in the run.

use anyhow::Result;

use super::{Store, Unresolved, dispatch};
use crate::domain::{
    Claims, ClientType, DeviceClass, DeviceGuid, DeviceOutcome, DirectoryUser, MobileDevice, RunId,
    SkipCause, TargetState, TenantId, Upn, Verification, WipeState,
};

pub use crate::domain::NewTarget;

/// The person a target's address resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub upn: Upn,
    pub display_name: String,
    pub object_id: Option<String>,
}

/// A target of a run, as stored.
#[derive(Clone, Debug)]
pub struct TargetRecord {
    /// The address the entity named (the target's key within the run).
    pub upn: Upn,
    pub source: String,
    pub state: TargetState,
    pub reason: Option<String>,
    pub claims: Claims,
    /// Once resolved.
    pub person: Option<Person>,
}

impl TargetRecord {
    /// The address Exchange is asked about: the resolved person's UPN, else
    /// the address as named.
    pub fn mailbox(&self) -> &Upn {
        self.person.as_ref().map(|p| &p.upn).unwrap_or(&self.upn)
    }
}

/// An earlier run's wipe of the same device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorWipe {
    pub run_id: RunId,
    pub at: i64,
    /// Where that wipe is (acknowledged, requested...).
    pub state: Option<WipeState>,
}

/// One device's outcome in a run.
#[derive(Clone, Debug)]
pub struct DeviceRecord {
    pub run_id: RunId,
    /// The target (as named) whose mailbox the device belongs to.
    pub upn: Upn,
    pub guid: DeviceGuid,
    pub device_id: String,
    pub device_type: String,
    pub model: String,
    pub os: String,
    pub client_type: ClientType,
    pub client_version: String,
    pub outcome: DeviceOutcome,
    pub reason: Option<String>,
    pub notes: Vec<String>,
    pub requested_at: Option<i64>,
    pub acked_at: Option<i64>,
    pub verification: Option<Verification>,
    pub prior: Option<PriorWipe>,
    /// Skipped by policy: why.
    pub skip_cause: Option<SkipCause>,
    /// Followed until then (Unix ms): the verification deadline.
    pub verify_until: Option<i64>,
    /// What the device is (triage), and why.
    pub triage: Option<DeviceClass>,
    pub triage_reason: Option<String>,
    /// A suspected attacker device: when wipehook blocked it (Unix ms).
    pub blocked_at: Option<i64>,
}

impl DeviceRecord {
    /// A device of `target` as Exchange listed it, with the outcome decided.
    pub fn decided(
        run_id: &RunId,
        target: &Upn,
        d: &MobileDevice,
        outcome: DeviceOutcome,
        reason: Option<String>,
        notes: Vec<String>,
    ) -> DeviceRecord {
        DeviceRecord {
            run_id: run_id.clone(),
            upn: target.clone(),
            guid: d.guid.clone(),
            device_id: d.device_id.clone(),
            device_type: d.device_type.clone(),
            model: d.model.clone(),
            os: d.os.clone(),
            client_type: d.client_type.clone(),
            client_version: d.client_version.clone(),
            outcome,
            reason,
            notes,
            requested_at: None,
            acked_at: None,
            verification: None,
            prior: None,
            skip_cause: None,
            verify_until: None,
            triage: d.class.as_ref().map(|(c, _)| *c),
            triage_reason: d.class.as_ref().map(|(_, r)| r.clone()),
            blocked_at: None,
        }
    }
}

impl Store {
    /// The targets of a run, in the order they were found.
    pub async fn targets(&self, run: &RunId) -> Result<Vec<TargetRecord>> {
        dispatch!(self, targets(run))
    }

    /// One target of a run.
    pub async fn target(&self, run: &RunId, upn: &Upn) -> Result<Option<TargetRecord>> {
        dispatch!(self, target(run, upn))
    }

    /// Add targets found after intake (ARM entities, Graph look-ups), with a
    /// contain task for each pending one; known addresses are left alone.
    /// With `max_targets` (an unapproved run), pending targets beyond it are
    /// held. Returns the addresses actually added.
    pub async fn add_targets(
        &self,
        run: &RunId,
        tenant: &TenantId,
        targets: &[NewTarget],
        unresolved: &[Unresolved],
        max_targets: Option<usize>,
    ) -> Result<Vec<Upn>> {
        dispatch!(
            self,
            add_targets(run, tenant, targets, unresolved, max_targets)
        )
    }

    pub async fn set_target(
        &self,
        run: &RunId,
        upn: &Upn,
        state: TargetState,
        reason: Option<&str>,
    ) -> Result<()> {
        dispatch!(self, set_target(run, upn, state, reason))
    }

    /// Move a target from `from` to `to`; false when it was no longer in
    /// `from` (a cancel or another decision got there first).
    pub async fn move_target(
        &self,
        run: &RunId,
        upn: &Upn,
        from: TargetState,
        to: TargetState,
        reason: Option<&str>,
    ) -> Result<bool> {
        dispatch!(self, move_target(run, upn, from, to, reason))
    }

    /// Record the person a target's address resolved to.
    pub async fn set_target_person(
        &self,
        run: &RunId,
        upn: &Upn,
        person: &DirectoryUser,
    ) -> Result<()> {
        dispatch!(self, set_target_person(run, upn, person))
    }

    pub async fn add_unresolved(&self, run: &RunId, u: &Unresolved) -> Result<()> {
        dispatch!(self, add_unresolved(run, u))
    }

    pub async fn unresolved(&self, run: &RunId) -> Result<Vec<Unresolved>> {
        dispatch!(self, unresolved(run))
    }

    pub async fn device(&self, run: &RunId, guid: &DeviceGuid) -> Result<Option<DeviceRecord>> {
        dispatch!(self, device(run, guid))
    }

    pub async fn devices(&self, run: &RunId) -> Result<Vec<DeviceRecord>> {
        dispatch!(self, devices(run))
    }

    /// One user's devices in a run.
    pub async fn devices_of(&self, run: &RunId, upn: &Upn) -> Result<Vec<DeviceRecord>> {
        dispatch!(self, devices_of(run, upn))
    }

    /// Insert or replace a device outcome of a run.
    pub async fn put_device(&self, d: &DeviceRecord) -> Result<()> {
        dispatch!(self, put_device(d))
    }

    pub async fn set_verify(&self, run: &RunId, guid: &DeviceGuid, v: Verification) -> Result<()> {
        dispatch!(self, set_verify(run, guid, v))
    }
}
