// One SQL text for both stores: the files of this folder are included
// together, once in `store::sqlite` (Db = Sqlite) and once in
// `store::postgres` (Db = Postgres), so each runs on its native sqlx driver.
// Only `TEXT` and `BIGINT` columns; the one dialect difference is `LOCK` in
// the claim. Stored words (states, kinds) are bound from `domain::state`,
// never spelled here. Format with `rustfmt --edition 2024 src/store/sql/*.rs`
// (cargo fmt does not see included files; .ci/run checks them).

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::{
    Accepted, Actor, Approval, AuditEntry, BudgetLimits, DeviceRecord, KillSwitch, LedgerRow,
    NewRun, NewTarget, Person, PriorWipe, RecordRow, Reservation, RunRecord, StepClaim, StoreStats,
    TargetRecord, Task, TaskSummary, Unresolved, UserStep, WipeClaim, now_ms, truncate,
};
use crate::domain::{
    AccountStep, BudgetState, Claims, ClientType, DeviceGuid, DeviceOutcome, DirectoryUser,
    IncidentRef, Job, Lane, RecordState, RunId, RunOutcome, RunStatus, StepState, TargetState,
    TaskId, TaskKind, TaskState, TenantId, TriggerScope, Upn, Verification, WipeState,
};

type Conn = <Db as sqlx::Database>::Connection;
type DbRow = <Db as sqlx::Database>::Row;
type Tx<'a> = sqlx::Transaction<'a, Db>;

/// A stored word parsed back into its type, once, here.
fn parsed<T: FromStr<Err = String>>(r: &DbRow, col: &str) -> Result<T> {
    let s: String = r.try_get(col)?;
    T::from_str(&s)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("column {col}"))
}

fn parsed_opt<T: FromStr<Err = String>>(r: &DbRow, col: &str) -> Result<Option<T>> {
    let s: Option<String> = r.try_get(col)?;
    s.map(|s| T::from_str(&s).map_err(anyhow::Error::msg))
        .transpose()
        .with_context(|| format!("column {col}"))
}

/// Apply the migrations newer than the recorded version, each in its own
/// transaction with its version row.
pub async fn migrate(c: &mut Conn, migrations: &[(i64, &str)]) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *c)
    .await?;
    let current = schema_version(c).await?;
    for (version, text) in migrations.iter().filter(|(v, _)| *v > current) {
        let mut tx = c.begin().await?;
        sqlx::raw_sql(AssertSqlSafe(*text))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("schema version {version}"))?;
        sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The schema version of this store.
pub async fn schema_version(c: &mut Conn) -> Result<i64> {
    Ok(
        sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
            .fetch_one(&mut *c)
            .await?
            .try_get("v")?,
    )
}

pub async fn ping(c: &mut Conn) -> Result<()> {
    sqlx::query("SELECT 1").execute(&mut *c).await?;
    Ok(())
}

/// Lock the run's row for the rest of the transaction (touching it takes
/// the row lock on PostgreSQL, the write lock on SQLite): decisions about one
/// run (is it finished? how many targets?) are then never taken twice at once.
async fn lock_run(tx: &mut Tx<'_>, run: &RunId, now: i64) -> Result<()> {
    sqlx::query("UPDATE runs SET updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(run.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
