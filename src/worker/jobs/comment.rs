//! The record on the incident, append-only: each phase of a run is a new
//! comment, written once under an id derived from (run, number), saying
//! only what no earlier comment of the run said, its first line the verdict.
//! The Defender portal does not show edits to comments, so nothing is ever
//! rewritten: a comment's text is stored before it is sent, and a retry
//! sends the same text, after checking the comment is not there already.

use std::collections::HashSet;
use std::time::Duration;

use super::{Cx, Done, OnPermanent, RetryRule, store_err};
use crate::domain::{IncidentRef, RecordState, RunOutcome};
use crate::report::RunReport;
use crate::sentinel::comment::{self, Context, Phase};
use crate::store::{RecordRow, now_ms};
use crate::upstream::CallError;

/// The audit trail is retried until it is written (backoff up to 15
/// seconds, so it follows ARM's return closely); a permanent refusal (the
/// incident deleted, the comment refused) gives the task up at once and
/// lists the error on the run.
pub const RETRY: RetryRule = RetryRule {
    bounded: false,
    backoff_cap: Duration::from_secs(15),
    on_permanent: OnPermanent::Dead,
};

/// Sentinel's limit of comments per incident.
const INCIDENT_LIMIT: i64 = 100;
/// Below this many comments on the incident, no count is read first.
const COUNT_BELOW: i64 = 95;

/// The comment id of a run's `seq`th note: the first keeps the id earlier
/// versions used for their one comment.
pub fn comment_id(run_comment_id: &str, run: &str, seq: i64) -> String {
    if seq == 1 {
        return run_comment_id.to_string();
    }
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("wipehook:comment:{run}:{seq}").as_bytes(),
    )
    .to_string()
}

/// The marker that names a note in its Defender copy (Graph comments have
/// no id of ours).
fn marker(run: &str, seq: i64) -> String {
    format!("[wipehook {run} note {seq}]")
}

pub async fn run(cx: &Cx<'_>) -> Result<Done, CallError> {
    let (Some(inc), Some(first_id)) = (&cx.run.incident, cx.run.comment_id.as_deref()) else {
        return Ok(Done::Complete);
    };
    let store = cx.store();
    let mut records = store.records(&cx.run.id).await.map_err(store_err)?;
    // A note begun by an earlier attempt: finish it, with the same words.
    for r in records.iter_mut() {
        if r.state == RecordState::Writing {
            write(cx, inc, r, true).await?;
        }
        if r.state == RecordState::Written && r.mirror_state == Some(RecordState::Writing) {
            mirror(cx, r, true).await?;
        }
    }
    let Some(report) = crate::report::load(store, &cx.run.id)
        .await
        .map_err(store_err)?
    else {
        return Ok(Done::Complete);
    };
    if report.outcome == RunOutcome::InProgress {
        return Ok(Done::Complete); // nothing decided yet: nothing to say
    }
    let said: HashSet<&String> = records.iter().flat_map(|r| &r.facts).collect();
    let facts = report.facts();
    let new: Vec<String> = facts
        .iter()
        .filter(|f| !said.contains(f))
        .cloned()
        .collect();
    if new.is_empty() {
        return Ok(Done::Complete);
    }
    let max = cx.state.settings.record.max_comments_per_run as i64;
    let seq = records.len() as i64 + 1;
    // The last note a run may write is kept for its final truth.
    if seq > max || (seq == max && !report.settled()) {
        tracing::info!(
            seq,
            "record budget of this run reached; keeping the last note for the final truth"
        );
        cx.state
            .metrics
            .record_skipped("skipped_run_budget", report.outcome.as_str());
        return Ok(Done::Complete);
    }
    if !room_on_incident(cx, inc, &report).await? {
        return Ok(Done::Complete);
    }
    let cxt = Context {
        approve_playbook: cx.state.settings.record.approve_playbook.clone(),
        cancel_playbook: cx.state.settings.record.cancel_playbook.clone(),
        seq,
    };
    let phase = if seq == 1 {
        Phase::First
    } else {
        Phase::Update { new_facts: new }
    };
    let mirror_on = cx.t.tenant.defender_mirror && cx.run.provider_incident_id.is_some();
    let mut row = RecordRow {
        run_id: cx.run.id.clone(),
        seq,
        comment_id: comment_id(first_id, cx.run.id.as_str(), seq),
        verdict: report.outcome,
        facts,
        text: comment::render(&report, &cxt, &phase),
        state: RecordState::Writing,
        mirror_state: mirror_on.then_some(RecordState::Writing),
        created_at: now_ms(),
        written_at: None,
    };
    if !store.begin_record(&row).await.map_err(store_err)? {
        // Another attempt stored this note first: finish it next time.
        return Err(CallError::transient("the record changed meanwhile"));
    }
    write(cx, inc, &mut row, false).await?;
    if row.mirror_state == Some(RecordState::Writing) {
        mirror(cx, &mut row, false).await?;
    }
    Ok(Done::Complete)
}

/// Put a stored note on the incident. On a retry the comment may be there
/// already (the answer was lost): then it is not sent again.
async fn write(
    cx: &Cx<'_>,
    inc: &IncidentRef,
    r: &mut RecordRow,
    retry: bool,
) -> Result<(), CallError> {
    let arm = &cx.state.arm;
    let exists = retry && arm.comment_exists(&cx.t.tokens, inc, &r.comment_id).await?;
    if !exists {
        let started = std::time::Instant::now();
        let sent = arm
            .put_comment(&cx.t.tokens, inc, &r.comment_id, &r.text)
            .await;
        cx.state.metrics.upstream_latency(
            "arm",
            "put-comment",
            if sent.is_ok() { 200 } else { 0 },
            started.elapsed(),
        );
        if let Err(CallError::Permanent { reason }) = &sent {
            // The incident refuses it for good: say so on the run (the
            // API keeps the whole story).
            tracing::error!(reason = %reason, seq = r.seq, "the incident refused the record");
            cx.store()
                .mark_record(&r.run_id, r.seq, RecordState::Refused)
                .await
                .map_err(store_err)?;
            r.state = RecordState::Refused;
            return sent;
        }
        sent?;
    }
    cx.store()
        .mark_record(&r.run_id, r.seq, RecordState::Written)
        .await
        .map_err(store_err)?;
    r.state = RecordState::Written;
    cx.state.metrics.record_written(r.verdict.as_str());
    tracing::info!(seq = r.seq, verdict = %r.verdict, chars = r.text.chars().count(), "incident record written");
    Ok(())
}

/// The same note on the Defender incident, through Graph.
async fn mirror(cx: &Cx<'_>, r: &mut RecordRow, retry: bool) -> Result<(), CallError> {
    let Some(id) = cx.run.provider_incident_id.as_deref() else {
        return Ok(());
    };
    let graph = &cx.state.graph;
    let mark = marker(r.run_id.as_str(), r.seq);
    let exists = retry && graph.incident_has_comment(&cx.t.tokens, id, &mark).await?;
    if !exists {
        let text = format!("{}\n{mark}", comment::plain_text(&r.text));
        match graph.post_incident_comment(&cx.t.tokens, id, &text).await {
            Ok(()) => {}
            Err(CallError::Permanent { reason }) => {
                tracing::error!(reason = %reason, "the Defender incident refused the record's copy");
                cx.store()
                    .mark_mirror(&r.run_id, r.seq, RecordState::Refused)
                    .await
                    .map_err(store_err)?;
                r.mirror_state = Some(RecordState::Refused);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    cx.store()
        .mark_mirror(&r.run_id, r.seq, RecordState::Written)
        .await
        .map_err(store_err)?;
    r.mirror_state = Some(RecordState::Written);
    Ok(())
}

/// Is there room on the incident for this note? Sentinel allows 100
/// comments per incident; a run never takes the last ones for anything but
/// its final truth. The count is read from ARM only when the incident may
/// be near the limit (the trigger's comment count plus wipehook's own).
async fn room_on_incident(
    cx: &Cx<'_>,
    inc: &IncidentRef,
    report: &RunReport,
) -> Result<bool, CallError> {
    let ours = cx
        .store()
        .comments_written_on(inc)
        .await
        .map_err(store_err)?;
    let estimate = cx.run.comments_baseline.unwrap_or(0) + ours;
    if estimate + 1 < COUNT_BELOW {
        return Ok(true);
    }
    let count = cx.state.arm.count_comments(&cx.t.tokens, inc).await? as i64;
    let reserve = if report.settled() { 0 } else { 2 };
    let room = count + 1 + reserve <= INCIDENT_LIMIT;
    if !room {
        tracing::warn!(
            count,
            "the incident is at Sentinel's comment limit: this note is not written (the run's API answer has it)"
        );
        cx.state
            .metrics
            .record_skipped("skipped_incident_limit", report.outcome.as_str());
    }
    Ok(room)
}
