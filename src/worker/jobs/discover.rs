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

/// Up to `worker.max_attempts` with backoff up to 15 seconds (a run's end
/// waits on it; containment and the record do not); a permanent failure is
/// recorded on the run as an entity that could not be resolved.
pub const RETRY: RetryRule = RetryRule {
    bounded: true,
    backoff_cap: Duration::from_secs(15),
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

/// Merge the incident's entities (read through ARM) into the run. While
/// the run knows nobody and the incident has no account yet (a Defender
/// incident can reach Sentinel after its automation ran), read again until
/// `policy.entity_sync_wait` has passed.
pub async fn entities(cx: &Cx<'_>) -> Result<Done, CallError> {
    let Some(inc) = &cx.run.incident else {
        return Ok(Done::Complete);
    };
    let read = cx.state.arm.incident_entities(&cx.t.tokens, inc).await?;
    let has_people =
        |c: &Vec<Candidate>| c.iter().any(|c| !matches!(c, Candidate::Unresolved { .. }));
    if !read.as_ref().is_some_and(has_people)
        && let Some(at) = not_synchronised_yet(cx).await?
    {
        tracing::info!("the incident has no account yet: reading its entities again");
        return Ok(Done::Reschedule(at));
    }
    let Some(candidates) = read else {
        let u = Unresolved {
            entity: "incident entities (ARM)".into(),
            reason: "ARM does not know the incident (404)".into(),
        };
        cx.store()
            .add_unresolved(&cx.run.id, &u)
            .await
            .map_err(store_err)?;
        return Ok(Done::Complete);
    };
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
            Candidate::AadUser { object_id, .. } => {
                let job = Job::Resolve { object_id };
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
pub async fn resolve(cx: &Cx<'_>, object_id: &str) -> Result<Done, CallError> {
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
                notes: cx.run.trigger_scope.notes_for(object_id),
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

/// The run knows nobody yet and is younger than `policy.entity_sync_wait`:
/// when to read the entities again.
async fn not_synchronised_yet(cx: &Cx<'_>) -> Result<Option<i64>, CallError> {
    let wait = cx.state.settings.policy.entity_sync_wait.as_millis() as i64;
    let age = now_ms() - cx.run.created_at;
    if age >= wait {
        return Ok(None);
    }
    let knows_someone = !cx
        .store()
        .targets(&cx.run.id)
        .await
        .map_err(store_err)?
        .is_empty()
        || !cx.run.trigger_scope.object_ids.is_empty();
    if knows_someone {
        return Ok(None);
    }
    let every = (wait / 20).clamp(100, 30_000);
    Ok(Some((now_ms() + every).min(cx.run.created_at + wait)))
}

/// Why users not named by the trigger are in the incident: the alerts
/// correlation added since the trigger, when ARM can say.
async fn why_later(cx: &Cx<'_>) -> String {
    let base = "first seen in the incident's entities after the trigger (correlation can merge other alerts into an incident)";
    let Some(inc) = &cx.run.incident else {
        return base.into();
    };
    match cx.state.arm.incident_alerts(&cx.t.tokens, inc).await {
        Ok(alerts) => {
            let added: Vec<String> = alerts
                .into_iter()
                .filter(|a| !cx.run.trigger_scope.alert_ids.contains(&a.system_alert_id))
                .map(|a| {
                    if a.product.is_empty() {
                        format!("'{}'", a.name)
                    } else {
                        format!("'{}' ({})", a.name, a.product)
                    }
                })
                .collect();
            if added.is_empty() {
                base.into()
            } else {
                format!(
                    "first seen in the incident's entities after the trigger; alerts added to the incident since: {}",
                    added.join(", ")
                )
            }
        }
        Err(e) => {
            tracing::warn!(reason = %e.reason(), "cannot list the incident's alerts");
            base.into()
        }
    }
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
    // the run's lock. Users the trigger did not name are held by default.
    let mut planned = policy::plan_targets(cx.policy(), &new, false);
    let later: Vec<usize> = planned
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            let scope = &run.trigger_scope;
            !scope.names_nobody()
                && !scope.names(&t.upn, t.claims.object_ids.first().map(String::as_str))
        })
        .map(|(i, _)| i)
        .collect();
    if !later.is_empty() {
        let why = why_later(cx).await;
        for i in later {
            policy::hold_found_later(cx.policy(), &mut planned[i], &why);
        }
    }
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
