//! Domain types, with no client and no store behind them: identifiers
//! (`ids`), the closed sets of stored words and their state machines
//! (`state`), the durable jobs (`job`), who a target is (`person`) and what
//! a device is (`device`), a user found and planned (`target`). Raw input becomes these once, at the edge.

mod device;
mod ids;
mod job;
mod person;
mod state;
mod target;

pub use device::{ClientType, EasVersion, MobileDevice};
pub use ids::{
    DeviceGuid, IncidentRef, RunId, TaskId, TenantId, Upn, WorkspaceRef, is_format_char, visible,
};
pub use job::Job;
pub use person::{Claims, DirectoryUser};
pub use state::{
    AccountStep, AuditAction, BudgetState, ContainmentOrder, DeviceClass, DeviceOutcome, Lane,
    Mode, RecordState, RunOutcome, RunStatus, Severity, SkipCause, StepState, TargetState,
    TaskKind, TaskState, TriggerKind, UserOutcome, Verification, WipeState,
};
pub use target::{Found, NewTarget, TriggerScope};
