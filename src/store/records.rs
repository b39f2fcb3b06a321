//! The append-only record on the incident: one comment per phase of a run,
//! each written once under a deterministic id, with the facts it reported
//! (so the next comment says only what changed) and its text (so a retry
//! writes the same words, never an edit).

use anyhow::Result;

use super::{Store, dispatch};
use crate::domain::{IncidentRef, RecordState, RunId, RunOutcome};

#[derive(Clone, Debug)]
pub struct RecordRow {
    pub run_id: RunId,
    pub seq: i64,
    pub comment_id: String,
    /// The verdict this comment's first line states.
    pub verdict: RunOutcome,
    /// The facts it reported (keys such as `decision`, `ack:<guid>`).
    pub facts: Vec<String>,
    pub text: String,
    pub state: RecordState,
    /// The copy on the Defender incident (Graph), when configured.
    pub mirror_state: Option<RecordState>,
    pub created_at: i64,
    pub written_at: Option<i64>,
}

impl Store {
    /// A run's record so far, oldest first.
    pub async fn records(&self, run: &RunId) -> Result<Vec<RecordRow>> {
        dispatch!(self, records(run))
    }

    /// Store the next comment before it is written (state `writing`). False:
    /// that `seq` exists already (another attempt got there).
    pub async fn begin_record(&self, r: &RecordRow) -> Result<bool> {
        dispatch!(self, begin_record(r))
    }

    /// The comment is on the incident (or was refused for good).
    pub async fn mark_record(&self, run: &RunId, seq: i64, state: RecordState) -> Result<()> {
        dispatch!(self, mark_record(run, seq, state))
    }

    /// Its copy on the Defender incident.
    pub async fn mark_mirror(&self, run: &RunId, seq: i64, state: RecordState) -> Result<()> {
        dispatch!(self, mark_mirror(run, seq, state))
    }

    /// Comments wipehook has written on an incident, over every run.
    pub async fn comments_written_on(&self, incident: &IncidentRef) -> Result<i64> {
        dispatch!(self, comments_written_on(incident))
    }
}
