//! Discovery: the incident's own entity list (read through ARM, since the
//! trigger body's can be incomplete) and Account entities that carry only
//! an object id (resolved through Graph). What is found joins the run under
//! its lock, with the same policy and blast radius as at intake.

use std::time::Duration;

use super::{Cx, Done, OnPermanent, RetryRule, store_err};
use crate::domain::{Claims, Found, Job, RunId, RunStatus};
use crate::policy;
use crate::sentinel::Candidate;
use crate::state::WorkerState;
use crate::store::{Unresolved, now_ms};
use crate::upstream::CallError;

/// Up to `worker.max_attempts` with backoff up to 2 minutes; a permanent
/// failure is recorded on the run as an entity that could not be resolved.
pub const RETRY: RetryRule = RetryRule {
    bounded: true,
    backoff_cap: Duration::from_secs(120),
    on_permanent: OnPermanent::RecordAndComplete,
};

pub async fn entities_given_up(
    state: &WorkerState,
    run: &RunId,
    reason: &str,
) -> anyhow::Result<()> {
    let u = Unresolved {
        entity: "incident entities (ARM)".into(),
        reason: format!("could not be read: {reason}"),
    };
    state.store.add_unresolved(run, &u).await
}

pub async fn resolve_given_up(
    state: &WorkerState,
    run: &RunId,
    object_id: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let u = Unresolved {
        entity: format!("Account aadUserId {object_id}"),
        reason: reason.to_string(),
    };
    state.store.add_unresolved(run, &u).await
}

/// Merge the incident's entities (read through ARM) into the run.
pub async fn entities(cx: &Cx<'_>) -> Result<Done, CallError> {
    let Some(inc) = &cx.run.incident else {
        return Ok(Done::Complete);
    };
    let candidates = cx.state.arm.incident_entities(&cx.t.tokens, inc).await?;
    let mut found = vec![];
    let mut unresolved = vec![];
    for c in candidates {
        match c {
            Candidate::Upn {
                upn,
                source,
                claims,
            } => found.push(Found {
                upn,
                source: format!("{source}, from the incident's entities"),
                claims,
            }),
            Candidate::AadUser {
                object_id, claims, ..
            } => {
                let job = Job::Resolve {
                    object_id,
                    notes: claims.notes,
                };
                cx.store()
                    .enqueue(&cx.run.id, &cx.run.tenant, &job, now_ms())
                    .await
                    .map_err(store_err)?;
            }
            Candidate::Unresolved { entity, reason } => {
                unresolved.push(Unresolved { entity, reason })
            }
        }
    }
    add_found(cx, found, unresolved).await?;
    Ok(Done::Complete)
}

/// Resolve an Account that carries only `aadUserId`.
pub async fn resolve(cx: &Cx<'_>, object_id: &str, notes: &[String]) -> Result<Done, CallError> {
    match cx
        .state
        .graph
        .user_principal_name(&cx.t.tokens, object_id)
        .await?
    {
        Some(upn) => {
            // The person that UPN belongs to must be this very object.
            let claims = Claims {
                object_ids: vec![object_id.to_ascii_lowercase()],
                notes: notes.to_vec(),
                ..Default::default()
            };
            let found = Found {
                upn,
                source: "Account entity (aadUserId via Microsoft Graph)".into(),
                claims,
            };
            add_found(cx, vec![found], vec![]).await?
        }
        None => {
            let u = Unresolved {
                entity: format!("Account aadUserId {object_id}"),
                reason: "no such user in Microsoft Graph".into(),
            };
            cx.store()
                .add_unresolved(&cx.run.id, &u)
                .await
                .map_err(store_err)?;
        }
    }
    Ok(Done::Complete)
}

async fn add_found(
    cx: &Cx<'_>,
    found: Vec<Found>,
    unresolved: Vec<Unresolved>,
) -> Result<(), CallError> {
    let store = cx.store();
    // Fresh state: the run may have been cancelled or approved meanwhile.
    let Some(run) = store.run(&cx.run.id).await.map_err(store_err)? else {
        return Ok(());
    };
    if run.status == RunStatus::Skipped || run.cancelled.is_some() {
        return Ok(());
    }
    let existing = store.targets(&run.id).await.map_err(store_err)?;
    let new: Vec<Found> = found
        .into_iter()
        .filter(|f| !existing.iter().any(|e| e.upn == f.upn))
        .collect();
    // Policy refusals here; the blast radius is decided in the store, under
    // the run's lock.
    let planned = policy::plan_targets(cx.policy(), &new, false);
    let limit = run
        .approved
        .is_none()
        .then_some(cx.policy().max_targets_per_run);
    let added = store
        .add_targets(&run.id, &run.tenant, &planned, &unresolved, limit)
        .await
        .map_err(store_err)?;
    if !added.is_empty() {
        tracing::info!(added = added.len(), "targets added after intake");
        cx.state.wake.notify_one();
    }
    Ok(())
}
