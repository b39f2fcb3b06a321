//! The durable store: runs, their targets and device outcomes, the delivery
//! keys that deduplicate calls, the device-level wipe ledger, and the task
//! queue the worker drains. One SQL text (`sql.rs`) runs on SQLite (the
//! embedded default: one connection behind a mutex, SQLite has one writer)
//! and on PostgreSQL (a pool; several replicas), each on its native driver.

mod report;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Executor};
use tokio::sync::{Mutex, mpsc, oneshot};

pub use report::*;

use crate::config::StoreSettings;
use crate::domain::{Claims, DirectoryUser};

mod sqlite {
    pub type Db = sqlx::Sqlite;
    const LOCK: &str = "";
    include!("sql.rs");
}

mod postgres {
    pub type Db = sqlx::Postgres;
    /// Replicas claim different tasks without waiting on each other.
    const LOCK: &str = "FOR UPDATE SKIP LOCKED";
    include!("sql.rs");
}

/// The schema, in order. A version is applied once, in its own transaction,
/// and recorded in `schema_version`; 0001 is idempotent, so a store made
/// before the version table existed is simply recorded as version 1.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_target_identity.sql")),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Inner {
    /// One connection: SQLite has one writer anyway, and queueing on a
    /// mutex is cheaper than a pool's acquire and SQLITE_BUSY retries.
    Sqlite(Arc<Mutex<SqliteConnection>>),
    Postgres(PgPool),
}

type Intake = (NewRun, oneshot::Sender<Result<Accepted, String>>);

#[derive(Clone)]
pub struct Store {
    inner: Inner,
    /// Accepted calls go through one group-commit writer.
    intake: mpsc::Sender<Intake>,
}

/// Run one `sql.rs` function on this store's connection.
macro_rules! dispatch {
    ($self:ident, $f:ident($($arg:expr),*)) => {
        match &$self.inner {
            Inner::Sqlite(m) => sqlite::$f(&mut *m.lock().await, $($arg),*).await,
            Inner::Postgres(p) => postgres::$f(&mut *p.acquire().await?, $($arg),*).await,
        }
    };
}

pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// Task kinds. "Work" kinds decide whether a run is finished.
pub mod kind {
    pub const CONTAIN: &str = "contain";
    pub const RESOLVE: &str = "resolve";
    pub const ENTITIES: &str = "entities";
    pub const COMMENT: &str = "comment";
    pub const VERIFY: &str = "verify";
    pub const CANCEL: &str = "cancel";
    pub const EXPIRE: &str = "expire";
    pub const WORK: [&str; 3] = [CONTAIN, RESOLVE, ENTITIES];

    /// A resolve task's argument: the object id, then one note per line
    /// (entity fields that did not decide, shown on the record).
    pub fn resolve_arg(object_id: &str, notes: &[String]) -> String {
        let mut a = object_id.to_string();
        for n in notes {
            a.push('\n');
            a.push_str(&n.replace('\n', " "));
        }
        a
    }
    /// The object id and notes of a resolve task's argument.
    pub fn parse_resolve_arg(arg: &str) -> (&str, Vec<String>) {
        let mut lines = arg.split('\n');
        let id = lines.next().unwrap_or("");
        (id, lines.map(String::from).collect())
    }
}

/// Run statuses.
pub mod status {
    pub const QUEUED: &str = "queued";
    pub const RUNNING: &str = "running";
    pub const HELD: &str = "held";
    pub const COMPLETED: &str = "completed";
    pub const EXPIRED: &str = "expired";
    pub const SKIPPED: &str = "skipped";
    /// Statuses for which `GET /runs/{id}` answers 200.
    pub fn is_final(s: &str) -> bool {
        matches!(s, HELD | COMPLETED | EXPIRED | SKIPPED)
    }
}

/// Target states.
pub mod target {
    pub const PENDING: &str = "pending";
    pub const DONE: &str = "done";
    pub const HELD: &str = "held";
    pub const REFUSED: &str = "refused";
    pub const PROTECTED: &str = "protected";
    pub const FAILED: &str = "failed";
    pub const EXPIRED: &str = "expired";
    pub const CANCELLED: &str = "cancelled";
    pub const RESOLVING: &str = "resolving";
}

#[derive(Clone, Debug)]
pub struct NewRun {
    pub id: String,
    pub delivery_key: String,
    pub tenant_id: String,
    pub incident_arm_id: Option<String>,
    pub incident_number: Option<i64>,
    pub incident_title: Option<String>,
    pub severity: Option<String>,
    pub trigger_kind: String,
    pub caller: String,
    pub mode: String,
    pub force: bool,
    pub status: String,
    pub reason: Option<String>,
    pub comment_id: Option<String>,
    pub targets: Vec<NewTarget>,
    pub unresolved: Vec<(String, String)>,
    /// (task kind, arg) to enqueue with the run.
    pub tasks: Vec<(String, String)>,
    /// Held at intake: when the hold expires (its task commits with the run).
    pub expire_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct NewTarget {
    pub upn: String,
    pub source: String,
    pub state: String,
    pub reason: Option<String>,
    /// What the entity also says about the person, checked against the mailbox.
    pub claims: Claims,
}

/// A target of a run, as stored.
#[derive(Clone, Debug)]
pub struct TargetRow {
    /// The address the entity named (the target's key within the run).
    pub upn: String,
    pub source: String,
    pub state: String,
    pub reason: Option<String>,
    pub claims: Claims,
    /// The mailbox that address resolved to, once resolved.
    pub mailbox_upn: Option<String>,
    pub display_name: Option<String>,
    pub object_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Accepted {
    pub run_id: String,
    pub created: bool,
    /// The run's status (the existing run's, for a duplicate delivery).
    pub status: String,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub id: String,
    pub run_id: String,
    pub tenant_id: String,
    pub kind: String,
    pub arg: String,
    pub attempts: i64,
    pub owner: String,
}

#[derive(Clone, Debug)]
pub struct RunRecord {
    pub id: String,
    pub tenant_id: String,
    pub incident_arm_id: Option<String>,
    pub incident_number: Option<i64>,
    pub incident_title: Option<String>,
    pub severity: Option<String>,
    pub trigger_kind: String,
    pub caller: String,
    pub mode: String,
    pub force: bool,
    pub status: String,
    pub reason: Option<String>,
    pub approved_by: Option<String>,
    pub approved_at: Option<i64>,
    pub cancelled_by: Option<String>,
    pub cancelled_at: Option<i64>,
    pub comment_id: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct DeviceRecord {
    pub run_id: String,
    pub upn: String,
    pub guid: String,
    pub device_id: String,
    pub device_type: String,
    pub model: String,
    pub os: String,
    pub client_type: String,
    pub client_version: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub flags: Option<String>,
    pub requested_at: Option<i64>,
    pub acked_at: Option<i64>,
    pub verify: Option<String>,
    pub prior_run_id: Option<String>,
    pub prior_at: Option<i64>,
}

/// Who owns the wipe of a device.
#[derive(Clone, Debug, PartialEq)]
pub enum WipeClaim {
    /// This run may send the wipe (a fresh claim, or its own earlier claim).
    Mine,
    /// Another run requested it already.
    Existing {
        run_id: String,
        state: String,
        requested_at: i64,
    },
}

#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub runs_by_status: Vec<(String, i64)>,
    pub ready_tasks: i64,
    pub oldest_ready_ms: Option<i64>,
    pub held_runs: i64,
    pub dead_tasks: i64,
}

impl Store {
    /// Connect and migrate. `sqlite://path` creates the file when missing.
    pub async fn connect(settings: &StoreSettings) -> Result<Store> {
        let open_err = || {
            format!(
                "cannot open the store at {}",
                crate::config::redact_url(&settings.url)
            )
        };
        let inner = if settings.url.starts_with("sqlite:") {
            // WAL: readers never block the writer. FULL: a commit survives
            // power loss, not only a killed process.
            let sync = if settings.sqlite_synchronous == "normal" {
                SqliteSynchronous::Normal
            } else {
                SqliteSynchronous::Full
            };
            let conn = SqliteConnectOptions::from_str(&settings.url)
                .with_context(open_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(sync)
                .busy_timeout(Duration::from_secs(10))
                .connect()
                .await
                .with_context(open_err)?;
            Inner::Sqlite(Arc::new(Mutex::new(conn)))
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections.max(1))
                .acquire_timeout(Duration::from_secs(10))
                // A ping before every acquire doubles the round trips; a
                // broken connection surfaces as an error on the query.
                .test_before_acquire(false)
                .connect(&settings.url)
                .await
                .with_context(open_err)?;
            Inner::Postgres(pool)
        };
        let (tx, rx) = mpsc::channel(4096);
        let store = Store {
            inner: inner.clone(),
            intake: tx,
        };
        store.migrate().await?;
        tokio::spawn(group_commit(inner, rx));
        Ok(store)
    }

    /// Record an accepted call as a run with its targets and tasks, in one
    /// transaction with its delivery key, before the caller answers 202.
    /// Calls arriving together share a transaction (and its fsync); the same
    /// key returns the same run.
    pub async fn accept(&self, new: &NewRun) -> Result<Accepted> {
        let (tx, rx) = oneshot::channel();
        self.intake
            .send((new.clone(), tx))
            .await
            .map_err(|_| anyhow::anyhow!("the store's writer has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the store's writer has stopped"))?
            .map_err(anyhow::Error::msg)
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    async fn migrate(&self) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(m) => {
                let mut c = m.lock().await;
                sqlite::migrate(&mut c, MIGRATIONS)
                    .await
                    .context("migrating the store")?;
            }
            Inner::Postgres(p) => {
                let mut c = p.acquire().await?;
                // Two replicas starting at once: one migrates, the other waits.
                c.execute("SELECT pg_advisory_lock(7274046)").await?;
                let res = postgres::migrate(&mut c, MIGRATIONS).await;
                c.execute("SELECT pg_advisory_unlock(7274046)").await?;
                res.context("migrating the store")?;
            }
        }
        Ok(())
    }

    /// The schema version this store is at.
    pub async fn schema_version(&self) -> Result<i64> {
        dispatch!(self, schema_version())
    }

    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, ping())
    }

    pub async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        dispatch!(self, run(id))
    }

    pub async fn list_runs(&self, limit: i64) -> Result<Vec<RunRecord>> {
        dispatch!(self, list_runs(limit))
    }

    /// Runs of one incident, newest first.
    pub async fn runs_for_incident(&self, incident_arm_id: &str) -> Result<Vec<RunRecord>> {
        dispatch!(self, runs_for_incident(incident_arm_id))
    }

    /// Claim the next ready task. Order: `seq` first, so the first target of a
    /// new run goes before the 200th target of an older one (fair across runs).
    pub async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Task>> {
        dispatch!(self, claim(owner, lease))
    }

    /// Extend a lease; false when this owner lost it.
    pub async fn renew(&self, task: &Task, lease: Duration) -> Result<bool> {
        dispatch!(self, renew(task, lease))
    }

    /// When the earliest ready task becomes due (for the worker's sleep).
    pub async fn next_due(&self) -> Result<Option<i64>> {
        dispatch!(self, next_due())
    }

    /// Finish a task. A task marked dirty while it ran goes back to ready.
    /// For work tasks, the run is finalised when its last work task ends.
    pub async fn complete(&self, task: &Task, hold_expiry: Duration) -> Result<Option<String>> {
        dispatch!(self, complete(task, hold_expiry))
    }

    /// Record a failed attempt: retry at `retry_at`, or give up after `max`.
    /// Returns true when the task was given up (dead).
    pub async fn fail(
        &self,
        task: &Task,
        error: &str,
        retry_at: i64,
        max: Option<u32>,
        hold_expiry: Duration,
    ) -> Result<bool> {
        dispatch!(self, fail(task, error, retry_at, max, hold_expiry))
    }

    /// Give back every lease of this owner (graceful shutdown).
    pub async fn release_all(&self, owner: &str) -> Result<u64> {
        dispatch!(self, release_all(owner))
    }

    /// Enqueue a task, or mark the existing one dirty so it runs again.
    pub async fn enqueue(
        &self,
        run_id: &str,
        tenant_id: &str,
        kind: &str,
        arg: &str,
        not_before: i64,
    ) -> Result<()> {
        dispatch!(self, enqueue(run_id, tenant_id, kind, arg, not_before))
    }

    /// Reschedule the running task itself (verification backoff) and finish it.
    pub async fn reschedule(&self, task: &Task, at: i64) -> Result<()> {
        dispatch!(self, reschedule(task, at))
    }

    pub async fn set_status(&self, run_id: &str, status: &str, reason: Option<&str>) -> Result<()> {
        dispatch!(self, set_status(run_id, status, reason))
    }

    pub async fn mark_running(&self, run_id: &str) -> Result<()> {
        dispatch!(self, mark_running(run_id))
    }

    pub async fn targets(&self, run_id: &str) -> Result<Vec<(String, String)>> {
        dispatch!(self, targets(run_id))
    }

    /// Add targets found after intake (ARM entities, Graph look-ups), with a
    /// contain task for each pending one. Known UPNs are left alone. Returns
    /// the UPNs actually added.
    /// Add targets found after intake (ARM entities, Graph look-ups), with a
    /// contain task for each pending one; known UPNs are left alone. With
    /// `max_targets` (an unapproved run), pending targets beyond it are held.
    /// Returns the UPNs actually added.
    pub async fn add_targets(
        &self,
        run_id: &str,
        tenant_id: &str,
        targets: &[NewTarget],
        unresolved: &[(String, String)],
        max_targets: Option<usize>,
    ) -> Result<Vec<String>> {
        dispatch!(
            self,
            add_targets(run_id, tenant_id, targets, unresolved, max_targets)
        )
    }

    pub async fn set_target(
        &self,
        run_id: &str,
        upn: &str,
        state: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        dispatch!(self, set_target(run_id, upn, state, reason))
    }

    /// One target of a run.
    pub async fn target(&self, run_id: &str, upn: &str) -> Result<Option<TargetRow>> {
        dispatch!(self, target(run_id, upn))
    }

    /// Record the person a target's address resolved to.
    pub async fn set_target_mailbox(
        &self,
        run_id: &str,
        upn: &str,
        mailbox: &DirectoryUser,
    ) -> Result<()> {
        dispatch!(self, set_target_mailbox(run_id, upn, mailbox))
    }

    pub async fn add_unresolved(&self, run_id: &str, entity: &str, reason: &str) -> Result<()> {
        dispatch!(self, add_unresolved(run_id, entity, reason))
    }

    pub async fn device(&self, run_id: &str, guid: &str) -> Result<Option<DeviceRecord>> {
        dispatch!(self, device(run_id, guid))
    }

    pub async fn devices(&self, run_id: &str) -> Result<Vec<DeviceRecord>> {
        dispatch!(self, devices(run_id))
    }

    /// Insert or replace a device outcome of a run.
    pub async fn put_device(&self, d: &DeviceRecord) -> Result<()> {
        dispatch!(self, put_device(d))
    }

    /// Claim the right to wipe a device. A fresh device, this run's own earlier
    /// claim, a cancelled wipe, or `force` give `Mine`.
    pub async fn claim_wipe(
        &self,
        tenant: &str,
        guid: &str,
        run_id: &str,
        upn: &str,
        force: bool,
    ) -> Result<WipeClaim> {
        dispatch!(self, claim_wipe(tenant, guid, run_id, upn, force))
    }

    /// A target gave up or was refused: release its claims still `sending`.
    pub async fn release_claims(&self, tenant: &str, run_id: &str, upn: &str) -> Result<u64> {
        dispatch!(self, release_claims(tenant, run_id, upn))
    }

    /// After Exchange accepted the wipe: the ledger and the run's device row, together.
    pub async fn wipe_requested(&self, tenant: &str, d: &DeviceRecord) -> Result<()> {
        dispatch!(self, wipe_requested(tenant, d))
    }

    /// Exchange refused the wipe: release the claim so a later run may try.
    pub async fn release_wipe(&self, tenant: &str, guid: &str, run_id: &str) -> Result<()> {
        dispatch!(self, release_wipe(tenant, guid, run_id))
    }

    pub async fn wipe_acknowledged(
        &self,
        tenant: &str,
        run_id: &str,
        guid: &str,
        at: i64,
    ) -> Result<()> {
        dispatch!(self, wipe_acknowledged(tenant, run_id, guid, at))
    }

    pub async fn wipe_cancelled(
        &self,
        tenant: &str,
        run_id: &str,
        guid: &str,
        by: &str,
    ) -> Result<()> {
        dispatch!(self, wipe_cancelled(tenant, run_id, guid, by))
    }

    pub async fn set_verify(&self, run_id: &str, guid: &str, verify: &str) -> Result<()> {
        dispatch!(self, set_verify(run_id, guid, verify))
    }

    /// Wipe requests (any run) in the last hour: the global budget.
    pub async fn wipes_since(&self, since: i64) -> Result<i64> {
        dispatch!(self, wipes_since(since))
    }

    /// Approve a held run: held targets become pending with contain tasks.
    pub async fn approve(&self, run_id: &str, who: &str) -> Result<usize> {
        dispatch!(self, approve(run_id, who))
    }

    /// Record a cancellation request and enqueue the task that sends it.
    /// Held targets of the run can no longer be approved.
    pub async fn request_cancel(&self, run_id: &str, tenant: &str, who: &str) -> Result<bool> {
        dispatch!(self, request_cancel(run_id, tenant, who))
    }

    /// A hold that was not approved in time: nothing held will be wiped.
    pub async fn expire_hold(&self, run_id: &str) -> Result<bool> {
        dispatch!(self, expire_hold(run_id))
    }

    /// Delete finished runs older than the retention, and old delivery keys.
    pub async fn prune(
        &self,
        run_retention: Duration,
        delivery_retention: Duration,
    ) -> Result<(u64, u64)> {
        dispatch!(self, prune(run_retention, delivery_retention))
    }

    pub async fn stats(&self) -> Result<StoreStats> {
        dispatch!(self, stats())
    }

    /// Number of pending work tasks of a run, and the errors of given-up ones.
    pub async fn task_summary(&self, run_id: &str) -> Result<(i64, Vec<String>)> {
        dispatch!(self, task_summary(run_id))
    }

    pub async fn unresolved(&self, run_id: &str) -> Result<Vec<(String, String)>> {
        dispatch!(self, unresolved(run_id))
    }

    pub(crate) async fn target_rows(&self, run_id: &str) -> Result<Vec<TargetRow>> {
        dispatch!(self, target_rows(run_id))
    }

    /// Total wipe-ledger rows for a device (tests and operators).
    pub async fn ledger(&self, tenant: &str) -> Result<Vec<(String, String, String)>> {
        dispatch!(self, ledger(tenant))
    }
}

/// The group-commit writer: takes every call waiting, commits them in one
/// transaction, answers each. If the batch fails, each is retried alone so
/// one bad call cannot fail the others.
async fn group_commit(inner: Inner, mut rx: mpsc::Receiver<Intake>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(_) => break,
            }
        }
        let news: Vec<NewRun> = batch.iter().map(|(n, _)| n.clone()).collect();
        match accept_batch(&inner, &news).await {
            Ok(accepted) => {
                for ((_, reply), a) in batch.into_iter().zip(accepted) {
                    let _ = reply.send(Ok(a));
                }
            }
            Err(_) => {
                for (new, reply) in batch {
                    let r = accept_batch(&inner, std::slice::from_ref(&new)).await;
                    let _ = reply.send(r.map(|mut v| v.remove(0)).map_err(|e| format!("{e:#}")));
                }
            }
        }
    }
}

async fn accept_batch(inner: &Inner, news: &[NewRun]) -> Result<Vec<Accepted>> {
    match inner {
        Inner::Sqlite(m) => sqlite::accept_batch(&mut *m.lock().await, news).await,
        Inner::Postgres(p) => postgres::accept_batch(&mut *p.acquire().await?, news).await,
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
