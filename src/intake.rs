//! Turning an authenticated call into a durable run: parse the trigger,
//! check the workspace, derive the delivery key, apply the policy that needs
//! no Exchange call, and commit run + targets + tasks in one transaction.
//! No HTTP here and no Exchange call: only decisions and the store.

use serde_json::Value;

use crate::auth::Caller;
use crate::domain::{
    Found, Job, Mode, NewTarget, RunId, RunStatus, TargetState, TriggerKind, TriggerScope,
};
use crate::policy;
use crate::sentinel::{self, Candidate, Trigger, TriggerError};
use crate::state::Shared;
use crate::store::{Accepted, NewRun, Unresolved};

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
    #[error(
        "the incident has no '{CONTAIN_TAG}<address>' tag: tag it with the account to contain, then run the playbook"
    )]
    NoAccountTag,
    #[error(
        "the incident's entities do not include {0} yet; a Defender incident can reach Sentinel minutes after it is created: retry"
    )]
    NotSynchronised(String),
    #[error(
        "{0} is not an Account or Mailbox entity of this incident; only the incident's own accounts can be contained from it"
    )]
    NotInIncident(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The tag an analyst puts on an incident to contain one of its accounts
/// from the Defender portal, where playbooks cannot be run on an entity.
pub const CONTAIN_TAG: &str = "wipehook:contain:";

/// Which of the trigger's users a call contains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every account of the incident (and those found by re-reading it).
    Incident,
    /// Only the accounts the incident is tagged with (`wipehook:contain:<address>`),
    /// each of which must be one of the incident's entities.
    TaggedAccounts,
}

impl Selection {
    fn route(self) -> &'static str {
        match self {
            Selection::Incident => "incidents",
            Selection::TaggedAccounts => "accounts",
        }
    }
}

/// The candidates the incident's `wipehook:contain:` tags name; every tag
/// must name one of the incident's own entities.
fn tagged(
    trigger: &Trigger,
    sync_wait: std::time::Duration,
) -> Result<Vec<Candidate>, IntakeError> {
    let tags: Vec<String> = trigger
        .labels
        .iter()
        .filter_map(|l| {
            let (head, rest) = l.split_at_checked(CONTAIN_TAG.len())?;
            head.eq_ignore_ascii_case(CONTAIN_TAG)
                .then(|| rest.trim().to_ascii_lowercase())
        })
        .filter(|t| !t.is_empty())
        .collect();
    if tags.is_empty() {
        return Err(IntakeError::NoAccountTag);
    }
    let names = |c: &Candidate, tag: &str| match c {
        Candidate::Upn { upn, claims, .. } => {
            upn.as_str() == tag
                || claims.addresses.iter().any(|a| a.as_str() == tag)
                || claims.object_ids.iter().any(|o| o == tag)
        }
        Candidate::AadUser {
            object_id, claims, ..
        } => object_id == tag || claims.object_ids.iter().any(|o| o == tag),
        Candidate::Unresolved { .. } => false,
    };
    let missing: Vec<&String> = tags
        .iter()
        .filter(|t| !trigger.candidates.iter().any(|c| names(c, t)))
        .collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|t| format!("'{}'", crate::domain::visible(t)))
            .collect::<Vec<_>>()
            .join(", ");
        let recent = trigger
            .created_at
            .is_some_and(|at| crate::store::now_ms() - at < sync_wait.as_millis() as i64);
        return Err(if recent {
            IntakeError::NotSynchronised(list)
        } else {
            IntakeError::NotInIncident(list)
        });
    }
    Ok(trigger
        .candidates
        .iter()
        .filter(|c| tags.iter().any(|t| names(c, t)))
        .cloned()
        .collect())
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

pub fn comment_id(run_id: &RunId) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("wipehook:comment:{run_id}").as_bytes(),
    )
    .to_string()
}

/// Who and what the trigger body names: every address and object id of its
/// candidates, and its alerts.
fn scope(t: &Trigger) -> TriggerScope {
    let mut s = TriggerScope {
        alert_ids: t.alert_ids.clone(),
        ..Default::default()
    };
    for c in &t.candidates {
        match c {
            Candidate::Upn { upn, claims, .. } => {
                s.addresses.push(upn.clone());
                s.addresses.extend(claims.addresses.iter().cloned());
                s.object_ids.extend(claims.object_ids.iter().cloned());
            }
            Candidate::AadUser {
                object_id, claims, ..
            } => {
                s.object_ids.push(object_id.clone());
                s.object_ids.extend(claims.object_ids.iter().cloned());
                if !claims.notes.is_empty() {
                    s.notes.push((object_id.clone(), claims.notes.clone()));
                }
            }
            Candidate::Unresolved { .. } => {}
        }
    }
    s
}

/// Accept a trigger body from an authenticated caller.
pub async fn accept(
    shared: &Shared,
    caller: &Caller,
    body: &Value,
    raw: &[u8],
    d: &Delivery,
    opts: &Options,
    selection: Selection,
) -> Result<(Accepted, Trigger, bool), IntakeError> {
    let mut trigger = sentinel::parse_trigger(body)?;
    let tenant = shared
        .tenant(&caller.tenant)
        .ok_or_else(|| IntakeError::UnknownTenant(caller.tenant.to_string()))?;
    if let Some(inc) = &trigger.incident
        && !tenant.workspaces.contains(&inc.workspace)
    {
        return Err(IntakeError::WorkspaceNotAllowed(
            inc.workspace.arm_id(),
            caller.tenant.to_string(),
        ));
    }
    if selection == Selection::TaggedAccounts {
        trigger.candidates = tagged(&trigger, shared.settings.policy.entity_sync_wait)?;
    }
    let p = &tenant.policy;
    let mode = if opts.dry_run || p.mode == Mode::DryRun {
        Mode::DryRun
    } else {
        Mode::Enforce
    };
    let run_id = RunId::new();
    let key = delivery_key(caller, selection.route(), opts, d, &trigger, raw);

    let mut found = vec![];
    let mut unresolved = vec![];
    let mut jobs: Vec<Job> = vec![];
    for c in &trigger.candidates {
        match c {
            Candidate::Upn {
                upn,
                source,
                claims,
            } => found.push(Found {
                upn: upn.clone(),
                source: source.clone(),
                claims: claims.clone(),
            }),
            Candidate::AadUser { object_id, .. } => jobs.push(Job::Resolve {
                object_id: object_id.clone(),
            }),
            Candidate::Unresolved { entity, reason } => unresolved.push(Unresolved {
                entity: entity.clone(),
                reason: reason.clone(),
            }),
        }
    }
    let mut status = RunStatus::Queued;
    let mut reason = None;
    let targets;
    let severity_check = if trigger.kind == TriggerKind::Incident {
        policy::severity(p, trigger.severity)
    } else {
        Ok(())
    };
    if let Err(why) = severity_check {
        // Recorded and commented, nothing contained.
        status = RunStatus::Skipped;
        reason = Some(why);
        targets = found
            .iter()
            .map(|f| NewTarget {
                upn: f.upn.clone(),
                source: f.source.clone(),
                state: TargetState::Skipped,
                reason: Some("below minimum severity".into()),
                claims: f.claims.clone(),
            })
            .collect();
        jobs.clear();
    } else {
        targets = policy::plan_targets(p, &found, true);
        for (i, t) in targets.iter().enumerate() {
            if t.state == TargetState::Pending {
                jobs.insert(i.min(jobs.len()), Job::Contain { upn: t.upn.clone() });
            }
        }
        if trigger.kind == TriggerKind::Incident && selection == Selection::Incident {
            // The body's entity list can be incomplete: read the incident's own.
            jobs.push(Job::Entities);
        }
        if jobs.is_empty() {
            let held = targets.iter().find(|t| t.state == TargetState::Held);
            status = if held.is_some() {
                RunStatus::Held
            } else {
                RunStatus::Completed
            };
            reason = held.and_then(|t| t.reason.clone());
        }
    }
    if status.is_final() && trigger.incident.is_some() {
        jobs.push(Job::Comment);
    }
    let new = NewRun {
        id: run_id.clone(),
        delivery_key: key,
        tenant: caller.tenant.clone(),
        incident: trigger.incident.clone(),
        incident_number: trigger.incident_number,
        incident_title: trigger.title.clone(),
        severity: trigger.severity,
        trigger: trigger.kind,
        caller: caller.display(),
        caller_oid: caller.oid.clone(),
        mode,
        force: opts.force,
        status,
        reason,
        comment_id: trigger.incident.as_ref().map(|_| comment_id(&run_id)),
        targets,
        unresolved,
        expire_at: (status == RunStatus::Held)
            .then(|| crate::store::now_ms() + p.hold_expiry.as_millis() as i64),
        jobs,
        trigger_scope: scope(&trigger),
        provider_incident_id: trigger.provider_incident_id.clone(),
        comments_baseline: trigger.comments_count,
        first_activity_at: trigger.first_activity_at,
        attack_disruption: trigger.attack_disruption(),
    };
    let accepted = shared.store.accept(&new).await?;
    let has_work = accepted.created && !new.jobs.is_empty();
    Ok((accepted, trigger, has_work))
}
