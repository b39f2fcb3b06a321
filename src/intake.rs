//! Turning an authenticated call into a durable run: parse the trigger,
//! check the workspace, derive the delivery key, apply the policy that needs
//! no Exchange call, and commit run + targets + tasks in one transaction.
//! No HTTP here and no Exchange call: only decisions and the store.

use serde_json::Value;

use crate::app::App;
use crate::auth::Caller;
use crate::config::{Mode, PolicySettings};
use crate::domain::{Claims, Upn};
use crate::policy::{self, TargetDecision};
use crate::sentinel::{self, Candidate, Trigger, TriggerError, TriggerKind};
use crate::store::{Accepted, NewRun, NewTarget, kind, status, target};

/// Logic Apps' tracking headers, when present.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    pub workflow_run_id: Option<String>,
    pub workflow_name: Option<String>,
    pub action_tracking_id: Option<String>,
    pub client_tracking_id: Option<String>,
}

impl Delivery {
    pub const RUN_ID: &'static str = "x-ms-workflow-run-id";
    pub const NAME: &'static str = "x-ms-workflow-name";
    pub const ACTION: &'static str = "x-ms-action-tracking-id";
    pub const CLIENT: &'static str = "x-ms-client-tracking-id";
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Re-send wipes already requested by an earlier run.
    pub force: bool,
    /// `dry_run` may be asked per call; `enforce` never overrides a dry-run policy.
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    #[error("workspace {0} is not configured for tenant {1}")]
    WorkspaceNotAllowed(String, String),
    #[error("tenant {0} is not configured")]
    UnknownTenant(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The delivery key: the same delivery always maps to the same run, and two
/// callers never share a key. Kept in one place so the choice is easy to
/// change once Logic Apps' headers are verified against a real tenant.
pub fn delivery_key(
    caller: &Caller,
    route: &str,
    opts: &Options,
    d: &Delivery,
    t: &Trigger,
    body: &[u8],
) -> String {
    let base = format!(
        "{}|{}|force={}|dry={}",
        caller.oid, route, opts.force, opts.dry_run
    );
    let material = match (&d.workflow_run_id, &t.event_unique_id) {
        // One playbook run: its HTTP action's retries carry the same run id and body.
        (Some(run), _) => format!(
            "{base}|run|{}|{}|{}|{}|{}",
            d.workflow_name.as_deref().unwrap_or(""),
            run,
            d.action_tracking_id.as_deref().unwrap_or(""),
            d.client_tracking_id.as_deref().unwrap_or(""),
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, body)
        ),
        (None, Some(evt)) => format!("{base}|event|{evt}"),
        (None, None) => {
            let mut targets: Vec<String> = t.candidates.iter().map(candidate_key).collect();
            targets.sort();
            format!(
                "{base}|hash|{}|{}",
                t.incident
                    .as_ref()
                    .map(|i| i.arm_id().to_ascii_lowercase())
                    .unwrap_or_default(),
                targets.join(",")
            )
        }
    };
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, material.as_bytes()).to_string()
}

fn candidate_key(c: &Candidate) -> String {
    match c {
        Candidate::Upn { upn, .. } => upn.to_string(),
        Candidate::AadUser { object_id, .. } => object_id.clone(),
        Candidate::Unresolved { entity, .. } => entity.clone(),
    }
}

pub fn comment_id(run_id: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("wipehook:comment:{run_id}").as_bytes(),
    )
    .to_string()
}

/// A user found in the entities: the address, where it came from, and what
/// else the entity claims about the person.
#[derive(Clone, Debug)]
pub struct Found {
    pub upn: Upn,
    pub source: String,
    pub claims: Claims,
}

/// Decide the state of new targets: policy refusals, then (with
/// `blast_radius`, at intake) the hold when there are too many. Targets found
/// after intake get their blast radius from the store, under the run's lock.
/// This judges the address as named; the worker judges the mailbox it
/// resolves to again before anything is sent.
pub fn plan_targets(p: &PolicySettings, found: &[Found], blast_radius: bool) -> Vec<NewTarget> {
    let mut planned: Vec<NewTarget> = found
        .iter()
        .map(
            |Found {
                 upn,
                 source,
                 claims,
             }| {
                let (state, reason) = match policy::target(p, upn) {
                    TargetDecision::Proceed => (target::PENDING, None),
                    TargetDecision::Refused(r) => (target::REFUSED, Some(r)),
                    TargetDecision::Protected(r) => (target::PROTECTED, Some(r)),
                };
                NewTarget {
                    upn: upn.to_string(),
                    source: source.clone(),
                    state: state.into(),
                    reason,
                    claims: claims.clone(),
                }
            },
        )
        .collect();
    let eligible = planned
        .iter()
        .filter(|t| t.state == target::PENDING)
        .count();
    if blast_radius && eligible > p.max_targets_per_run {
        for t in planned.iter_mut().filter(|t| t.state == target::PENDING) {
            t.state = target::HELD.into();
            t.reason = Some(format!(
                "blast radius: {eligible} users exceed policy.max_targets_per_run = {}; approval required",
                p.max_targets_per_run
            ));
        }
    }
    planned
}

/// Accept a trigger body from an authenticated caller.
pub async fn accept(
    app: &App,
    caller: &Caller,
    body: &Value,
    raw: &[u8],
    d: &Delivery,
    opts: &Options,
) -> Result<(Accepted, Trigger, bool), IntakeError> {
    let trigger = sentinel::parse_trigger(body)?;
    let tenant = app
        .tenant(&caller.tenant)
        .ok_or_else(|| IntakeError::UnknownTenant(caller.tenant.to_string()))?;
    if let Some(inc) = &trigger.incident
        && !tenant.tenant.workspaces.contains(&inc.workspace)
    {
        return Err(IntakeError::WorkspaceNotAllowed(
            inc.workspace.arm_id(),
            caller.tenant.to_string(),
        ));
    }
    let p = &tenant.tenant.policy;
    let mode = if opts.dry_run || p.mode == Mode::DryRun {
        Mode::DryRun
    } else {
        Mode::Enforce
    };
    let run_id = uuid::Uuid::now_v7().to_string();
    let key = delivery_key(caller, "incidents", opts, d, &trigger, raw);

    let mut upns = vec![];
    let mut unresolved = vec![];
    let mut tasks: Vec<(String, String)> = vec![];
    for c in &trigger.candidates {
        match c {
            Candidate::Upn {
                upn,
                source,
                claims,
            } => upns.push(Found {
                upn: upn.clone(),
                source: source.clone(),
                claims: claims.clone(),
            }),
            Candidate::AadUser {
                object_id, claims, ..
            } => tasks.push((
                kind::RESOLVE.into(),
                kind::resolve_arg(object_id, &claims.notes),
            )),
            Candidate::Unresolved { entity, reason } => {
                unresolved.push((entity.clone(), reason.clone()))
            }
        }
    }
    let mut run_status = status::QUEUED.to_string();
    let mut reason = None;
    let targets;
    let severity_check = if trigger.kind == TriggerKind::Incident {
        policy::severity(p, trigger.severity)
    } else {
        Ok(())
    };
    if let Err(why) = severity_check {
        // Recorded and commented, nothing contained.
        run_status = status::SKIPPED.into();
        reason = Some(why);
        targets = upns
            .iter()
            .map(|f| NewTarget {
                upn: f.upn.to_string(),
                source: f.source.clone(),
                state: "skipped".into(),
                reason: Some("below minimum severity".into()),
                claims: f.claims.clone(),
            })
            .collect();
        tasks.clear();
    } else {
        targets = plan_targets(p, &upns, true);
        for (i, t) in targets.iter().enumerate() {
            if t.state == target::PENDING {
                tasks.insert(i.min(tasks.len()), (kind::CONTAIN.into(), t.upn.clone()));
            }
        }
        if trigger.kind == TriggerKind::Incident {
            // The body's entity list can be incomplete: read the incident's own.
            tasks.push((kind::ENTITIES.into(), String::new()));
        }
        if tasks.is_empty() {
            let held = targets.iter().any(|t| t.state == target::HELD);
            run_status = if held {
                status::HELD.into()
            } else {
                status::COMPLETED.into()
            };
            reason = targets
                .iter()
                .find(|t| t.state == target::HELD)
                .and_then(|t| t.reason.clone());
        }
    }
    if status::is_final(&run_status) && trigger.incident.is_some() {
        tasks.push((kind::COMMENT.into(), String::new()));
    }
    let held_at_intake = run_status == status::HELD;
    let new = NewRun {
        id: run_id.clone(),
        delivery_key: key,
        tenant_id: caller.tenant.to_string(),
        incident_arm_id: trigger.incident.as_ref().map(|i| i.arm_id()),
        incident_number: trigger.incident_number,
        incident_title: trigger.title.clone(),
        severity: trigger.severity.map(|s| s.as_str().to_string()),
        trigger_kind: trigger.kind.as_str().into(),
        caller: caller.display(),
        mode: mode.as_str().into(),
        force: opts.force,
        status: run_status,
        reason,
        comment_id: trigger.incident.as_ref().map(|_| comment_id(&run_id)),
        targets,
        unresolved,
        expire_at: held_at_intake
            .then(|| crate::store::now_ms() + p.hold_expiry.as_millis() as i64),
        tasks,
    };
    let accepted = app.store.accept(&new).await?;
    let has_work = accepted.created && !new.tasks.is_empty();
    Ok((accepted, trigger, has_work))
}
