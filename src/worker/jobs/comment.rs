//! The record on the incident: the run's report rendered as HTML and PUT
//! under the run's comment id, so a retry replaces rather than duplicates.

use std::time::Duration;

use super::{Cx, Done, OnPermanent, RetryRule, store_err};
use crate::sentinel::comment;
use crate::upstream::CallError;

/// The audit trail is retried until it is written (backoff up to 5
/// minutes); a permanent refusal (the incident deleted, the comment refused)
/// gives the task up at once and lists the error on the run.
pub const RETRY: RetryRule = RetryRule {
    bounded: false,
    backoff_cap: Duration::from_secs(300),
    on_permanent: OnPermanent::Dead,
};

pub async fn run(cx: &Cx<'_>) -> Result<Done, CallError> {
    let (Some(inc), Some(cid)) = (&cx.run.incident, cx.run.comment_id.as_deref()) else {
        return Ok(Done::Complete);
    };
    let Some(report) = crate::report::load(cx.store(), &cx.run.id)
        .await
        .map_err(store_err)?
    else {
        return Ok(Done::Complete);
    };
    let html = comment::render(
        &report,
        &cx.state.settings.server.public_url,
        &crate::config::format_duration(cx.policy().hold_expiry),
    );
    let started = std::time::Instant::now();
    let r = cx
        .state
        .arm
        .put_comment(&cx.t.tokens, inc, cid, &html)
        .await;
    cx.state.metrics.upstream_latency(
        "arm",
        "put-comment",
        if r.is_ok() { 200 } else { 0 },
        started.elapsed(),
    );
    r?;
    tracing::info!(chars = html.chars().count(), "incident comment written");
    Ok(Done::Complete)
}
