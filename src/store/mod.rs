//! The durable store, by aggregate: runs (`runs`), their targets and device
//! outcomes (`targets`), the device-level wipe ledger (`ledger`), the task
//! queue (`queue`) and housekeeping. Each aggregate's typed API is
//! `store/<aggregate>.rs`; its SQL is `store/sql/<aggregate>.rs`, one text
//! compiled twice: on SQLite (the embedded default: one connection behind a
//! mutex, SQLite has one writer) and on PostgreSQL (a pool; several
//! replicas), each on its native driver. Records hold domain types; rows are
//! parsed once, in `sql/`. Every public function is exercised on both
//! databases by `tests/api/store_contract.rs`.

mod guard;
mod housekeeping;
mod ledger;
mod queue;
mod records;
mod runs;
mod steps;
mod targets;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Executor};
use tokio::sync::{Mutex, mpsc, oneshot};

pub use guard::{Approval, AuditEntry, BudgetLimits, KillSwitch, Reservation};
pub use housekeeping::StoreStats;
pub use ledger::{LedgerRow, WipeClaim};
pub use queue::{Task, TaskSummary};
pub use records::RecordRow;
pub use runs::{Accepted, Actor, NewRun, RunRecord, Unresolved};
pub use steps::{StepClaim, UserStep};
pub use targets::{DeviceRecord, NewTarget, Person, PriorWipe, TargetRecord};

use crate::config::StoreSettings;

/// The SQL of every aggregate, for one backend.
macro_rules! backend {
    ($db:ty, $lock:expr, $explain:expr, $analyze:expr) => {
        pub type Db = $db;
        /// Added to the claim's inner SELECT.
        const LOCK: &str = $lock;
        /// The prefix that asks for a statement's plan (the benchmark's EXPLAIN).
        const EXPLAIN: &str = $explain;
        /// Refresh the planner's statistics.
        const ANALYZE: &str = $analyze;
        include!("sql/common.rs");
        include!("sql/runs.rs");
        include!("sql/targets.rs");
        include!("sql/ledger.rs");
        include!("sql/queue.rs");
        include!("sql/records.rs");
        include!("sql/housekeeping.rs");
        include!("sql/guard.rs");
        include!("sql/steps.rs");
    };
}

mod sqlite {
    backend!(
        sqlx::Sqlite,
        "",
        "EXPLAIN QUERY PLAN",
        // As a long-lived store is: analysed, its write-ahead log checkpointed.
        "ANALYZE; PRAGMA wal_checkpoint(TRUNCATE)"
    );
}

mod postgres {
    // Replicas claim different tasks without waiting on each other.
    backend!(
        sqlx::Postgres,
        "FOR UPDATE SKIP LOCKED",
        "EXPLAIN",
        "ANALYZE"
    );
}

/// The schema, in order. A version is applied once, in its own transaction,
/// and recorded in `schema_version`; 0001 is idempotent, so a store made
/// before the version table existed is simply recorded as version 1.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_target_identity.sql")),
    (3, include_str!("migrations/0003_trigger_scope.sql")),
    (4, include_str!("migrations/0004_record.sql")),
    (5, include_str!("migrations/0005_guard.sql")),
    (7, include_str!("migrations/0007_account_steps.sql")),
    (8, include_str!("migrations/0008_claim_index.sql")),
    (9, include_str!("migrations/0009_task_lanes.sql")),
];

/// The schema version this build migrates a store to.
pub const LATEST_SCHEMA: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

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

/// Run one `sql/` function on this store's connection.
macro_rules! dispatch {
    ($self:ident, $f:ident($($arg:expr),*)) => {
        match &$self.inner {
            $crate::store::Inner::Sqlite(m) => $crate::store::sqlite::$f(&mut *m.lock().await, $($arg),*).await,
            $crate::store::Inner::Postgres(p) => $crate::store::postgres::$f(&mut *p.acquire().await?, $($arg),*).await,
        }
    };
}
use dispatch;

pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

impl Store {
    /// Connect and migrate. `sqlite://path` creates the file when missing.
    pub async fn connect(settings: &StoreSettings) -> Result<Store> {
        let store = Self::open(settings, true).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connect to a store that exists, without creating or migrating it
    /// (`wipehook doctor` reports the schema version it finds).
    pub async fn inspect(settings: &StoreSettings) -> Result<Store> {
        Self::open(settings, false).await
    }

    async fn open(settings: &StoreSettings, create: bool) -> Result<Store> {
        let open_err = || format!("cannot open the store at {}", settings.url.redacted());
        let inner = if settings.url.is_sqlite() {
            // WAL: readers never block the writer. FULL: a commit survives
            // power loss, not only a killed process.
            let sync = match settings.sqlite_synchronous {
                crate::config::SqliteSynchronous::Normal => SqliteSynchronous::Normal,
                crate::config::SqliteSynchronous::Full => SqliteSynchronous::Full,
            };
            let conn = SqliteConnectOptions::from_str(settings.url.expose())
                .with_context(open_err)?
                .create_if_missing(create)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(sync)
                .busy_timeout(Duration::from_secs(10))
                // A negative cache_size is in KiB.
                .pragma(
                    "cache_size",
                    format!("-{}", u64::from(settings.sqlite_cache_mib.max(1)) * 1024),
                )
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
                .connect(settings.url.expose())
                .await
                .with_context(open_err)?;
            Inner::Postgres(pool)
        };
        let (tx, rx) = mpsc::channel(4096);
        let store = Store {
            inner: inner.clone(),
            intake: tx,
        };
        tokio::spawn(group_commit(inner, rx));
        Ok(store)
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
