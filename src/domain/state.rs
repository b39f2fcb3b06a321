//! The closed sets of words wipehook stores as `TEXT`: run, target, device,
//! wipe and task states, task kinds, modes, triggers, severities. This module
//! is the only home of those strings: SQL binds them, never spells them, and
//! rows are parsed back into these types once, in the store.
//!
//! The state machines (who moves what, and when) are drawn in
//! docs/ARCHITECTURE.md, "States".

use std::fmt;

use serde::{Deserialize, Serialize};

/// An enum whose every variant has exactly one stored string form.
macro_rules! text_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $var),+
        }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// The stored (and serialized) form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
        }
        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                match s {
                    $($s => Ok($name::$var),)+
                    other => Err(format!(concat!("unknown ", stringify!($name), " '{}'"), other)),
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Where a run is. `queued -> running -> completed`, or `-> held ->
    /// (approved) running | expired`; `skipped` below the minimum severity.
    pub enum RunStatus {
        Queued = "queued",
        Running = "running",
        Held = "held",
        Completed = "completed",
        Expired = "expired",
        Skipped = "skipped",
    }
}

impl RunStatus {
    /// Nothing more happens without an analyst: `GET /runs/{id}` answers 200.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Held | RunStatus::Completed | RunStatus::Expired | RunStatus::Skipped
        )
    }
    /// Work tasks may still change the run.
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

text_enum! {
    /// One device's place in the destructive budget: `reserved` (counted,
    /// the wipe about to be sent) -> `used` (Exchange accepted it), or
    /// `released` (not sent: refused for good, given up, cancelled first).
    pub enum BudgetState {
        Reserved = "reserved",
        Used = "used",
        Released = "released",
    }
}

text_enum! {
    /// What a device is, decided before acting on it (recorded with its reason).
    pub enum DeviceClass {
        /// First synced at or after the incident's first activity (minus a
        /// margin): the attacker may have paired it. Wiped and blocked.
        SuspectedAttacker = "suspected_attacker",
        /// No sync for `policy.stale_after`: the wipe will probably never land.
        Stale = "stale",
        /// EAS below 16.1: cannot connect to Exchange Online at all.
        EasBelow16_1 = "eas_below_16_1",
        /// Outlook for iOS/Android: one partnership covers all the user's Outlook devices.
        OutlookRest = "outlook_rest",
        Normal = "normal",
    }
}

text_enum! {
    /// A step on the account, through Microsoft Graph.
    pub enum AccountStep {
        /// `POST /users/{id}/revokeSignInSessions`.
        RevokeSessions = "revoke_sessions",
        /// `PATCH /users/{id}` `accountEnabled: false`.
        BlockSignIn = "block_sign_in",
        /// `POST /identityProtection/riskyUsers/confirmCompromised` (Entra ID P2).
        ConfirmCompromised = "confirm_compromised",
    }
}

text_enum! {
    /// What became of an account step in a run.
    pub enum StepState {
        /// Dry run: would have been taken.
        WouldDo = "would_do",
        Done = "done",
        /// Another run took it already: not repeated (force repeats it).
        AlreadyDone = "already_done",
        /// Not taken, with the reason (already disabled, no P2 licence).
        Skipped = "skipped",
        Failed = "failed",
        /// Undone by the run's cancel (only a sign-in block wipehook set).
        Undone = "undone",
    }
}

text_enum! {
    /// The order of the wipe and the account steps, per tenant.
    pub enum ContainmentOrder {
        /// Wipes first; the account steps when every active phone
        /// acknowledged, or at `policy.account_steps_after`.
        WipeFirst = "wipe_first",
        /// Account steps at once, then the wipes (phones that have not synced
        /// may never receive them).
        ContainFirst = "contain_first",
    }
}

text_enum! {
    /// What the audit trail records: who approved, who was refused, who threw
    /// or lifted the kill switch, who cancelled.
    pub enum AuditAction {
        Approved = "approved",
        ApprovalRecorded = "approval_recorded",
        ApprovalRefused = "approval_refused",
        Cancelled = "cancelled",
        KillSwitchEngaged = "kill_switch_engaged",
        KillSwitchLifted = "kill_switch_lifted",
    }
}

text_enum! {
    /// Where one user of a run is.
    pub enum TargetState {
        /// Waiting for its contain task.
        Pending = "pending",
        /// Devices listed and decided.
        Done = "done",
        /// Waiting for approval (blast radius, hourly budget).
        Held = "held",
        /// Refused by policy (domain, claims disagree).
        Refused = "refused",
        /// A protected account.
        Protected = "protected",
        /// Could not be contained (Exchange or Graph refused, gave up).
        Failed = "failed",
        /// The hold expired unapproved.
        Expired = "expired",
        /// Cancelled before any wipe was sent.
        Cancelled = "cancelled",
        /// The run is below the minimum severity.
        Skipped = "skipped",
    }
}

impl TargetState {
    /// Counted against the blast radius (a user who is or may be wiped).
    pub fn counts_for_blast_radius(self) -> bool {
        matches!(
            self,
            TargetState::Pending | TargetState::Done | TargetState::Held | TargetState::Failed
        )
    }
}

text_enum! {
    /// What happened to one device in a run.
    pub enum DeviceOutcome {
        Requested = "requested",
        /// Dry run: the wipe that would have been requested.
        WouldRequest = "would_request",
        /// An earlier run already requested it.
        AlreadyRequested = "already_requested",
        Skipped = "skipped",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// Following a requested wipe until the phone acknowledges it.
    pub enum Verification {
        Pending = "pending",
        Acknowledged = "acknowledged",
        /// The deadline passed, or Exchange would not report on the mailbox.
        Unconfirmed = "unconfirmed",
    }
}

text_enum! {
    /// The device-level wipe ledger (one row per tenant and device, across runs).
    pub enum WipeState {
        /// Claimed by a run, the request not yet answered.
        Sending = "sending",
        Requested = "requested",
        Acknowledged = "acknowledged",
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// The kinds of durable task; see `Job` for their arguments.
    pub enum TaskKind {
        Contain = "contain",
        Resolve = "resolve",
        Entities = "entities",
        Comment = "comment",
        Verify = "verify",
        Cancel = "cancel",
        Expire = "expire",
        Block = "block",
        Account = "account",
    }
}

/// The upstream that bounds a task, each with its own worker slots, so a
/// task waiting for Exchange capacity never holds a slot that an ARM or
/// Graph task (a record, an entity read, an account step) could use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Tasks that call Exchange (and wait on its per-tenant limiter).
    Exchange,
    /// Tasks that call only ARM, Graph or the store.
    ArmGraph,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Exchange, Lane::ArmGraph];

    /// The task kinds of this lane.
    pub fn kinds(self) -> &'static [TaskKind] {
        match self {
            Lane::Exchange => &[
                TaskKind::Contain,
                TaskKind::Verify,
                TaskKind::Cancel,
                TaskKind::Block,
            ],
            Lane::ArmGraph => &[
                TaskKind::Resolve,
                TaskKind::Entities,
                TaskKind::Comment,
                TaskKind::Expire,
                TaskKind::Account,
            ],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Exchange => "exchange",
            Lane::ArmGraph => "arm_graph",
        }
    }
}

impl TaskKind {
    /// The lane whose slots run this kind.
    pub fn lane(self) -> Lane {
        match self {
            TaskKind::Contain | TaskKind::Verify | TaskKind::Cancel | TaskKind::Block => {
                Lane::Exchange
            }
            TaskKind::Resolve
            | TaskKind::Entities
            | TaskKind::Comment
            | TaskKind::Expire
            | TaskKind::Account => Lane::ArmGraph,
        }
    }

    /// Work kinds decide whether a run is finished.
    pub const WORK: [TaskKind; 3] = [TaskKind::Contain, TaskKind::Resolve, TaskKind::Entities];
    pub fn is_work(self) -> bool {
        TaskKind::WORK.contains(&self)
    }
}

text_enum! {
    /// Where a task is in the queue.
    pub enum TaskState {
        Ready = "ready",
        Done = "done",
        /// Given up after its retries.
        Dead = "dead",
    }
}

text_enum! {
    /// Enforce, or only say what would be done.
    pub enum Mode {
        Enforce = "enforce",
        DryRun = "dry_run",
    }
}

text_enum! {
    /// Which playbook trigger sent the body.
    pub enum TriggerKind {
        /// `@triggerBody()` of the "Microsoft Sentinel incident" trigger.
        Incident = "incident",
        /// `@triggerBody()` of the "Microsoft Sentinel entity" trigger (Account).
        Entity = "entity",
    }
}

text_enum! {
    /// Why a device was not wiped by policy.
    pub enum SkipCause {
        /// EAS below 16.1: account-only wipe impossible (and, since 1 March
        /// 2026, the phone cannot connect to Exchange Online at all).
        OldEas = "old_eas",
        /// EAS of unknown version: account-only wipe not known to work.
        UnknownEasVersion = "unknown_eas_version",
        /// A client type wipehook does not know.
        UnknownClient = "unknown_client",
        /// A client type `policy.client_types` excludes.
        ClientTypeExcluded = "client_type_excluded",
    }
}

impl SkipCause {
    /// The device cannot be wiped account-only at all (not a policy choice).
    pub fn is_capability(self) -> bool {
        !matches!(self, SkipCause::ClientTypeExcluded)
    }
}

text_enum! {
    /// One comment of a run's append-only record on the incident.
    pub enum RecordState {
        /// Rendered and stored, not yet known to be on the incident.
        Writing = "writing",
        /// On the incident.
        Written = "written",
        /// The incident refused it for good (deleted, 100 comments).
        Refused = "refused",
    }
}

text_enum! {
    /// The truth about one user of a run, as the record and the API say it.
    pub enum UserOutcome {
        /// Every device that holds company mail acknowledged its wipe.
        Contained = "contained",
        /// No mobile device: no phone holds this mailbox's mail.
        NoDevices = "no_devices",
        /// Wipes requested; a phone has not acknowledged yet (before its deadline).
        PendingAcknowledgement = "pending_acknowledgement",
        /// Company mail may still be on a phone, or nothing could be done:
        /// a person must act (the record says what would contain them).
        NotContained = "not_contained",
        /// Waiting for approval.
        Held = "held",
        /// Dry run: what would have been wiped.
        DryRun = "dry_run",
        /// Cancelled by an analyst.
        Cancelled = "cancelled",
        /// Not decided yet.
        InProgress = "in_progress",
    }
}

text_enum! {
    /// The truth about a run: the first line of every record on the incident,
    /// and `outcome` in `GET /api/v1/runs/{id}`.
    pub enum RunOutcome {
        Contained = "contained",
        PartiallyContained = "partially_contained",
        NotContained = "not_contained",
        PendingAcknowledgement = "pending_acknowledgement",
        Held = "held",
        DryRun = "dry_run",
        Cancelled = "cancelled",
        NothingToDo = "nothing_to_do",
        InProgress = "in_progress",
    }
}

impl RunOutcome {
    /// A person must act.
    pub fn needs_someone(self) -> bool {
        matches!(
            self,
            RunOutcome::NotContained | RunOutcome::PartiallyContained | RunOutcome::Held
        )
    }
}

/// Incident severity, ordered from least to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn parse(raw: &str) -> Option<Severity> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "informational" => Some(Severity::Informational),
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            _ => None,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Severity, String> {
        Severity::parse(s).ok_or_else(|| format!("unknown severity '{s}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_kind_is_in_its_lane_once() {
        for k in TaskKind::ALL {
            for lane in Lane::ALL {
                assert_eq!(
                    lane.kinds().contains(k),
                    k.lane() == lane,
                    "{k:?} in {lane:?}"
                );
            }
        }
    }

    #[test]
    fn every_word_round_trips_through_its_stored_form() {
        fn check<T: Copy + PartialEq + fmt::Debug + std::str::FromStr + fmt::Display>(all: &[T])
        where
            T::Err: fmt::Debug,
        {
            for v in all {
                assert_eq!(v.to_string().parse::<T>().unwrap(), *v);
            }
        }
        check(RunStatus::ALL);
        check(TargetState::ALL);
        check(DeviceOutcome::ALL);
        check(Verification::ALL);
        check(WipeState::ALL);
        check(BudgetState::ALL);
        check(AuditAction::ALL);
        check(DeviceClass::ALL);
        check(AccountStep::ALL);
        check(StepState::ALL);
        check(ContainmentOrder::ALL);
        check(TaskKind::ALL);
        check(TaskState::ALL);
        check(Mode::ALL);
        check(TriggerKind::ALL);
        check(UserOutcome::ALL);
        check(SkipCause::ALL);
        check(RecordState::ALL);
        check(RunOutcome::ALL);
        assert!(
            "Held".parse::<RunStatus>().is_err(),
            "stored forms are exact"
        );
        assert_eq!(
            serde_json::to_value(DeviceOutcome::WouldRequest).unwrap(),
            "would_request"
        );
    }
}
