// One SQL text for both stores: this file is included twice, in
// `store::sqlite` (Db = Sqlite) and `store::postgres` (Db = Postgres), so
// each runs on its native sqlx driver. Only `TEXT` and `BIGINT` columns; the
// one dialect difference is `LOCK` in `claim`.

use std::time::Duration;

use anyhow::Result;
use sqlx::{AssertSqlSafe, Connection, Row};

use super::{
    Accepted, DeviceRecord, NewRun, NewTarget, RunRecord, StoreStats, TargetRow, Task, WipeClaim, kind, now_ms, status, target,
    truncate,
};
use crate::domain::{Claims, DirectoryUser};

type Conn = <Db as sqlx::Database>::Connection;
type DbRow = <Db as sqlx::Database>::Row;
type Tx<'a> = sqlx::Transaction<'a, Db>;

const RUN_COLUMNS: &str = "id, tenant_id, incident_arm_id, incident_number, incident_title, severity, trigger_kind, caller, mode, force, status, reason, approved_by, approved_at, cancelled_by, cancelled_at, comment_id, created_at, finished_at";

fn run_from_row(r: &DbRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        incident_arm_id: r.try_get("incident_arm_id")?,
        incident_number: r.try_get("incident_number")?,
        incident_title: r.try_get("incident_title")?,
        severity: r.try_get("severity")?,
        trigger_kind: r.try_get("trigger_kind")?,
        caller: r.try_get("caller")?,
        mode: r.try_get("mode")?,
        force: r.try_get::<i64, _>("force")? != 0,
        status: r.try_get("status")?,
        reason: r.try_get("reason")?,
        approved_by: r.try_get("approved_by")?,
        approved_at: r.try_get("approved_at")?,
        cancelled_by: r.try_get("cancelled_by")?,
        cancelled_at: r.try_get("cancelled_at")?,
        comment_id: r.try_get("comment_id")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// Apply the migrations newer than the recorded version, each in its own
/// transaction with its version row.
pub async fn migrate(c: &mut Conn, migrations: &[(i64, &str)]) -> Result<()> {
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .execute(&mut *c)
        .await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        .fetch_one(&mut *c)
        .await?
        .try_get("v")?;
    for (version, text) in migrations.iter().filter(|(v, _)| *v > current) {
        let mut tx = c.begin().await?;
        sqlx::raw_sql(AssertSqlSafe(*text)).execute(&mut *tx).await?;
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
    Ok(sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        .fetch_one(&mut *c)
        .await?
        .try_get("v")?)
}

pub async fn ping(c: &mut Conn) -> Result<()> {
    sqlx::query("SELECT 1").execute(&mut *c).await?;
    Ok(())
}

/// Record an accepted call as a run with its targets and tasks, in one
/// transaction with its delivery key. The same key returns the same run.
/// Record accepted calls in one transaction (group commit): each a run with
/// its targets and tasks, with its delivery key. A key already present
/// returns its run instead.
pub async fn accept_batch(c: &mut Conn, news: &[NewRun]) -> Result<Vec<Accepted>> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    let mut out = Vec::with_capacity(news.len());
    for new in news {
        out.push(accept_tx(&mut tx, new, now).await?);
    }
    tx.commit().await?;
    Ok(out)
}

async fn accept_tx(tx: &mut Tx<'_>, new: &NewRun, now: i64) -> Result<Accepted> {
    let inserted = sqlx::query(
        "INSERT INTO deliveries (key, run_id, created_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING RETURNING run_id",
    )
    .bind(&new.delivery_key)
    .bind(&new.id)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    if inserted.is_none() {
        let row = sqlx::query("SELECT d.run_id, r.status FROM deliveries d JOIN runs r ON r.id = d.run_id WHERE d.key = $1")
            .bind(&new.delivery_key)
            .fetch_one(&mut **tx)
            .await?;
        return Ok(Accepted { run_id: row.try_get("run_id")?, created: false, status: row.try_get("status")? });
    }
    sqlx::query(
        "INSERT INTO runs (id, tenant_id, incident_arm_id, incident_number, incident_title, severity, trigger_kind, caller, mode, force, status, reason, comment_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
    )
    .bind(&new.id)
    .bind(&new.tenant_id)
    .bind(&new.incident_arm_id)
    .bind(new.incident_number)
    .bind(&new.incident_title)
    .bind(&new.severity)
    .bind(&new.trigger_kind)
    .bind(&new.caller)
    .bind(&new.mode)
    .bind(new.force as i64)
    .bind(&new.status)
    .bind(&new.reason)
    .bind(&new.comment_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    for (i, t) in new.targets.iter().enumerate() {
        insert_target(tx, &new.id, t, i as i64).await?;
    }
    for (entity, reason) in &new.unresolved {
        insert_unresolved(tx, &new.id, entity, reason).await?;
    }
    for (i, (k, arg)) in new.tasks.iter().enumerate() {
        enqueue_tx(tx, &new.id, &new.tenant_id, k, arg, i as i64, now).await?;
    }
    if let Some(at) = new.expire_at {
        enqueue_tx(tx, &new.id, &new.tenant_id, kind::EXPIRE, "", 0, at).await?;
    }
    Ok(Accepted { run_id: new.id.clone(), created: true, status: new.status.clone() })
}

pub async fn run(c: &mut Conn, id: &str) -> Result<Option<RunRecord>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *c)
    .await?;
    row.as_ref().map(run_from_row).transpose()
}

pub async fn list_runs(c: &mut Conn, limit: i64) -> Result<Vec<RunRecord>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(run_from_row).collect()
}

/// Runs of one incident, newest first.
pub async fn runs_for_incident(c: &mut Conn, incident_arm_id: &str) -> Result<Vec<RunRecord>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE lower(incident_arm_id) = lower($1) ORDER BY created_at DESC, id DESC LIMIT 50"
    )))
    .bind(incident_arm_id)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(run_from_row).collect()
}

// ---------------------------------------------------------------- tasks

/// Claim the next ready task. Order: `seq` first, so the first target of a
/// new run goes before the 200th target of an older one (fair across runs).
pub async fn claim(c: &mut Conn, owner: &str, lease: Duration) -> Result<Option<Task>> {
    let now = now_ms();
    let lock = LOCK;
    let sql = format!(
        "UPDATE tasks SET lease_owner = $1, lease_until = $2, attempts = attempts + 1, dirty = 0, updated_at = $3
         WHERE id = (SELECT id FROM tasks WHERE state = 'ready' AND not_before <= $3 AND (lease_until IS NULL OR lease_until < $3)
                     ORDER BY seq, not_before, created_at LIMIT 1 {lock})
         RETURNING id, run_id, tenant_id, kind, arg, attempts"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(owner)
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .fetch_optional(&mut *c)
        .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(Task {
        id: r.try_get("id")?,
        run_id: r.try_get("run_id")?,
        tenant_id: r.try_get("tenant_id")?,
        kind: r.try_get("kind")?,
        arg: r.try_get("arg")?,
        attempts: r.try_get("attempts")?,
        owner: owner.to_string(),
    }))
}

/// Extend a lease; false when this owner lost it.
pub async fn renew(c: &mut Conn, task: &Task, lease: Duration) -> Result<bool> {
    let r = sqlx::query("UPDATE tasks SET lease_until = $1 WHERE id = $2 AND lease_owner = $3")
        .bind(now_ms() + lease.as_millis() as i64)
        .bind(&task.id)
        .bind(&task.owner)
        .execute(&mut *c)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// When the earliest ready task becomes due (for the worker's sleep).
pub async fn next_due(c: &mut Conn) -> Result<Option<i64>> {
    let row = sqlx::query("SELECT MIN(not_before) AS t FROM tasks WHERE state = 'ready' AND (lease_until IS NULL OR lease_until < $1)")
        .fetch_one(&mut *c)
        .await?;
    Ok(row.try_get::<Option<i64>, _>("t")?)
}

/// Finish a task. A task marked dirty while it ran goes back to ready.
/// For work tasks, the run is finalised when its last work task ends.
pub async fn complete(c: &mut Conn, task: &Task, hold_expiry: Duration) -> Result<Option<String>> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    lock_run(&mut tx, &task.run_id, now).await?;
    sqlx::query(
        "UPDATE tasks SET state = CASE WHEN dirty = 1 THEN 'ready' ELSE 'done' END, lease_owner = NULL, lease_until = NULL, last_error = NULL, updated_at = $1
         WHERE id = $2 AND lease_owner = $3",
    )
    .bind(now)
    .bind(&task.id)
    .bind(&task.owner)
    .execute(&mut *tx)
    .await?;
    let finished = finalize_if_done(&mut tx, &task.run_id, now, hold_expiry).await?;
    tx.commit().await?;
    Ok(finished)
}

/// Record a failed attempt: retry at `retry_at`, or give up after `max`.
/// Returns true when the task was given up (dead).
pub async fn fail(c: &mut Conn, task: &Task, error: &str, retry_at: i64, max: Option<u32>, hold_expiry: Duration) -> Result<bool> {
    let now = now_ms();
    let dead = max.is_some_and(|m| task.attempts >= m as i64);
    let mut tx = c.begin().await?;
    lock_run(&mut tx, &task.run_id, now).await?;
    sqlx::query(
        "UPDATE tasks SET state = $1, not_before = $2, last_error = $3, lease_owner = NULL, lease_until = NULL, updated_at = $4
         WHERE id = $5 AND lease_owner = $6",
    )
    .bind(if dead { "dead" } else { "ready" })
    .bind(retry_at)
    .bind(truncate(error, 2000))
    .bind(now)
    .bind(&task.id)
    .bind(&task.owner)
    .execute(&mut *tx)
    .await?;
    if dead {
        finalize_if_done(&mut tx, &task.run_id, now, hold_expiry).await?;
    }
    tx.commit().await?;
    Ok(dead)
}

/// Give back every lease of this owner (graceful shutdown).
pub async fn release_all(c: &mut Conn, owner: &str) -> Result<u64> {
    let r = sqlx::query("UPDATE tasks SET lease_owner = NULL, lease_until = NULL, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END WHERE lease_owner = $1 AND state = 'ready'")
        .bind(owner)
        .execute(&mut *c)
        .await?;
    Ok(r.rows_affected())
}

/// Enqueue a task, or mark the existing one dirty so it runs again.
pub async fn enqueue(c: &mut Conn, run_id: &str, tenant_id: &str, kind: &str, arg: &str, not_before: i64) -> Result<()> {
    let mut tx = c.begin().await?;
    // Follow-up polls of Exchange go after every run's containment work.
    let seq = if kind == kind::VERIFY { 1_000_000 } else { 0 };
    enqueue_tx(&mut tx, run_id, tenant_id, kind, arg, seq, not_before).await?;
    tx.commit().await?;
    Ok(())
}

/// Reschedule the running task itself (verification backoff) and finish it.
pub async fn reschedule(c: &mut Conn, task: &Task, at: i64) -> Result<()> {
    sqlx::query(
        "UPDATE tasks SET state = 'ready', not_before = $1, lease_owner = NULL, lease_until = NULL, attempts = 0, updated_at = $2 WHERE id = $3 AND lease_owner = $4",
    )
    .bind(at)
    .bind(now_ms())
    .bind(&task.id)
    .bind(&task.owner)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn set_status(c: &mut Conn, run_id: &str, status: &str, reason: Option<&str>) -> Result<()> {
    let now = now_ms();
    let fin = if status::is_final(status) && status != status::HELD {
        Some(now)
    } else {
        None
    };
    sqlx::query("UPDATE runs SET status = $1, reason = $2, updated_at = $3, finished_at = COALESCE($4, finished_at) WHERE id = $5")
        .bind(status)
        .bind(reason)
        .bind(now)
        .bind(fin)
        .bind(run_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn mark_running(c: &mut Conn, run_id: &str) -> Result<()> {
    sqlx::query("UPDATE runs SET status = 'running', updated_at = $1 WHERE id = $2 AND status = 'queued'")
        .bind(now_ms())
        .bind(run_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

// -------------------------------------------------------------- targets

pub async fn targets(c: &mut Conn, run_id: &str) -> Result<Vec<(String, String)>> {
    let rows =
        sqlx::query("SELECT upn, state FROM targets WHERE run_id = $1 ORDER BY seq, upn")
            .bind(run_id)
            .fetch_all(&mut *c)
            .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("upn")?, r.try_get("state")?)))
        .collect()
}

/// Add targets found after intake (ARM entities, Graph look-ups), with a
/// contain task for each pending one. Known UPNs are left alone. Returns
/// the UPNs actually added.
pub async fn add_targets(c: &mut Conn, run_id: &str, tenant_id: &str, targets: &[NewTarget], unresolved: &[(String, String)], max_targets: Option<usize>) -> Result<Vec<String>> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    lock_run(&mut tx, run_id, now).await?;
    let row = sqlx::query("SELECT COUNT(*) AS n FROM targets WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?;
    let mut seq: i64 = row.try_get("n")?;
    // The blast radius, decided under the run's row lock: concurrent
    // entity reads and look-ups cannot both slip under the limit.
    let row = sqlx::query(
        "SELECT COUNT(CASE WHEN state IN ('pending','done','held','failed') THEN 1 END) AS eligible, COUNT(CASE WHEN state = 'held' THEN 1 END) AS held FROM targets WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&mut *tx)
    .await?;
    let mut eligible = row.try_get::<i64, _>("eligible")? as usize;
    let held = row.try_get::<i64, _>("held")? > 0;
    let mut added = vec![];
    for t in targets {
        let mut t = t.clone();
        if let Some(max) = max_targets
            && t.state == target::PENDING
            && (held || eligible + 1 > max)
        {
            t.state = target::HELD.into();
            t.reason = Some(format!("blast radius: more than policy.max_targets_per_run = {max} users; approval required"));
        }
        if insert_target(&mut tx, run_id, &t, seq).await? {
            if t.state == target::PENDING {
                enqueue_tx(&mut tx, run_id, tenant_id, kind::CONTAIN, &t.upn, seq, now).await?;
            }
            if t.state == target::PENDING || t.state == target::HELD {
                eligible += 1;
            }
            added.push(t.upn.clone());
            seq += 1;
        }
    }
    for (e, r) in unresolved {
        insert_unresolved(&mut tx, run_id, e, r).await?;
    }
    tx.commit().await?;
    Ok(added)
}

pub async fn set_target(c: &mut Conn, run_id: &str, upn: &str, state: &str, reason: Option<&str>) -> Result<()> {
    sqlx::query("UPDATE targets SET state = $1, reason = $2 WHERE run_id = $3 AND upn = $4")
        .bind(state)
        .bind(reason)
        .bind(run_id)
        .bind(upn)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn add_unresolved(c: &mut Conn, run_id: &str, entity: &str, reason: &str) -> Result<()> {
    let mut tx = c.begin().await?;
    insert_unresolved(&mut tx, run_id, entity, reason).await?;
    tx.commit().await?;
    Ok(())
}

// -------------------------------------------------------------- devices

pub async fn device(c: &mut Conn, run_id: &str, guid: &str) -> Result<Option<DeviceRecord>> {
    let row = sqlx::query("SELECT * FROM devices WHERE run_id = $1 AND guid = $2")
        .bind(run_id)
        .bind(guid)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(device_from_row).transpose()
}

pub async fn devices(c: &mut Conn, run_id: &str) -> Result<Vec<DeviceRecord>> {
    let rows = sqlx::query("SELECT * FROM devices WHERE run_id = $1 ORDER BY upn, guid")
        .bind(run_id)
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(device_from_row).collect()
}

/// Insert or replace a device outcome of a run.
pub async fn put_device(c: &mut Conn, d: &DeviceRecord) -> Result<()> {
    let mut tx = c.begin().await?;
    put_device_tx(&mut tx, d).await?;
    tx.commit().await?;
    Ok(())
}

/// Claim the right to wipe a device. A fresh device, this run's own earlier
/// claim, a cancelled wipe, or `force` give `Mine`.
pub async fn claim_wipe(c: &mut Conn, tenant: &str, guid: &str, run_id: &str, upn: &str, force: bool) -> Result<WipeClaim> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    let r = sqlx::query(
        "INSERT INTO wipes (tenant_id, guid, run_id, upn, state, requested_at) VALUES ($1, $2, $3, $4, 'sending', $5)
         ON CONFLICT (tenant_id, guid) DO UPDATE SET run_id = excluded.run_id, upn = excluded.upn, state = 'sending', requested_at = excluded.requested_at, acked_at = NULL
         WHERE wipes.state = 'cancelled'
            OR (wipes.run_id = excluded.run_id AND wipes.upn = excluded.upn AND wipes.state = 'sending')
            OR ($6 = 1 AND wipes.run_id <> excluded.run_id)",
    )
    .bind(tenant)
    .bind(guid)
    .bind(run_id)
    .bind(upn)
    .bind(now)
    .bind(force as i64)
    .execute(&mut *tx)
    .await?;
    let claim = if r.rows_affected() == 1 {
        WipeClaim::Mine
    } else {
        let row = sqlx::query(
            "SELECT run_id, state, requested_at FROM wipes WHERE tenant_id = $1 AND guid = $2",
        )
        .bind(tenant)
        .bind(guid)
        .fetch_one(&mut *tx)
        .await?;
        WipeClaim::Existing {
            run_id: row.try_get("run_id")?,
            state: row.try_get("state")?,
            requested_at: row.try_get("requested_at")?,
        }
    };
    tx.commit().await?;
    Ok(claim)
}

/// A target gave up or was refused: release its claims still `sending`.
pub async fn release_claims(c: &mut Conn, tenant: &str, run_id: &str, upn: &str) -> Result<u64> {
    let r = sqlx::query("DELETE FROM wipes WHERE tenant_id = $1 AND run_id = $2 AND upn = $3 AND state = 'sending'")
        .bind(tenant)
        .bind(run_id)
        .bind(upn)
        .execute(&mut *c)
        .await?;
    Ok(r.rows_affected())
}

/// After Exchange accepted the wipe: the ledger and the run's device row, together.
pub async fn wipe_requested(c: &mut Conn, tenant: &str, d: &DeviceRecord) -> Result<()> {
    let mut tx = c.begin().await?;
    sqlx::query("UPDATE wipes SET state = 'requested', requested_at = $1 WHERE tenant_id = $2 AND guid = $3 AND run_id = $4")
        .bind(d.requested_at.unwrap_or_else(now_ms))
        .bind(tenant)
        .bind(&d.guid)
        .bind(&d.run_id)
        .execute(&mut *tx)
        .await?;
    put_device_tx(&mut tx, d).await?;
    tx.commit().await?;
    Ok(())
}

/// Exchange refused the wipe: release the claim so a later run may try.
pub async fn release_wipe(c: &mut Conn, tenant: &str, guid: &str, run_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM wipes WHERE tenant_id = $1 AND guid = $2 AND run_id = $3 AND state = 'sending'")
        .bind(tenant)
        .bind(guid)
        .bind(run_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn wipe_acknowledged(c: &mut Conn, tenant: &str, run_id: &str, guid: &str, at: i64) -> Result<()> {
    let mut tx = c.begin().await?;
    sqlx::query("UPDATE wipes SET state = 'acknowledged', acked_at = $1 WHERE tenant_id = $2 AND guid = $3 AND run_id = $4")
        .bind(at)
        .bind(tenant)
        .bind(guid)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE devices SET acked_at = $1, verify = 'acknowledged', updated_at = $2 WHERE run_id = $3 AND guid = $4")
        .bind(at)
        .bind(now_ms())
        .bind(run_id)
        .bind(guid)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn wipe_cancelled(c: &mut Conn, tenant: &str, run_id: &str, guid: &str, by: &str) -> Result<()> {
    let mut tx = c.begin().await?;
    sqlx::query("UPDATE wipes SET state = 'cancelled' WHERE tenant_id = $1 AND guid = $2 AND run_id = $3")
        .bind(tenant)
        .bind(guid)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE devices SET outcome = 'cancelled', reason = $1, verify = NULL, updated_at = $2 WHERE run_id = $3 AND guid = $4")
        .bind(format!("wipe request cancelled by {by}"))
        .bind(now_ms())
        .bind(run_id)
        .bind(guid)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn set_verify(c: &mut Conn, run_id: &str, guid: &str, verify: &str) -> Result<()> {
    sqlx::query(
        "UPDATE devices SET verify = $1, updated_at = $2 WHERE run_id = $3 AND guid = $4",
    )
    .bind(verify)
    .bind(now_ms())
    .bind(run_id)
    .bind(guid)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Wipe requests (any run) in the last hour: the global budget.
pub async fn wipes_since(c: &mut Conn, since: i64) -> Result<i64> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM wipes WHERE requested_at >= $1 AND state <> 'cancelled'",
    )
    .bind(since)
    .fetch_one(&mut *c)
    .await?;
    Ok(row.try_get("n")?)
}

// ------------------------------------------------ approval, cancellation

/// Approve a held run: held targets become pending with contain tasks.
pub async fn approve(c: &mut Conn, run_id: &str, who: &str) -> Result<usize> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    // A hold whose expiry is due is no longer approvable, even if the expiry
    // task has not run yet.
    let r = sqlx::query(
        "UPDATE runs SET status = 'running', reason = NULL, approved_by = $1, approved_at = $2, updated_at = $2 WHERE id = $3 AND status = 'held'
         AND NOT EXISTS (SELECT 1 FROM tasks WHERE run_id = $3 AND kind = 'expire' AND state = 'ready' AND not_before <= $2)",
    )
        .bind(who)
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(0);
    }
    let rows = sqlx::query(
        "SELECT upn, seq FROM targets WHERE run_id = $1 AND state = 'held' ORDER BY seq",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    let tenant: String = sqlx::query("SELECT tenant_id FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("tenant_id")?;
    for r in &rows {
        let upn: String = r.try_get("upn")?;
        let seq: i64 = r.try_get("seq")?;
        sqlx::query("UPDATE targets SET state = 'pending', reason = NULL WHERE run_id = $1 AND upn = $2").bind(run_id).bind(&upn).execute(&mut *tx).await?;
        enqueue_tx(&mut tx, run_id, &tenant, kind::CONTAIN, &upn, seq, now).await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Record a cancellation request and enqueue the task that sends it.
/// Held targets of the run can no longer be approved.
pub async fn request_cancel(c: &mut Conn, run_id: &str, tenant: &str, who: &str) -> Result<bool> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    let r = sqlx::query("UPDATE runs SET cancelled_by = $1, cancelled_at = $2, updated_at = $2 WHERE id = $3 AND cancelled_at IS NULL")
        .bind(who)
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    // Held and not yet contained users are released: nothing more is sent.
    sqlx::query("UPDATE targets SET state = 'cancelled', reason = $1 WHERE run_id = $2 AND state IN ('held', 'pending')")
        .bind(format!("cancelled by {who} before any wipe was sent"))
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE runs SET status = 'completed', reason = $1, finished_at = COALESCE(finished_at, $2) WHERE id = $3 AND status = 'held'")
        .bind(format!("cancelled by {who} while held"))
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    enqueue_tx(&mut tx, run_id, tenant, kind::CANCEL, "", 0, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// A hold that was not approved in time: nothing held will be wiped.
pub async fn expire_hold(c: &mut Conn, run_id: &str) -> Result<bool> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    let r = sqlx::query("UPDATE runs SET status = 'expired', reason = 'the hold expired without approval; nothing held was wiped', finished_at = $1, updated_at = $1 WHERE id = $2 AND status = 'held'")
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() == 1 {
        sqlx::query("UPDATE targets SET state = 'expired', reason = 'hold expired without approval' WHERE run_id = $1 AND state = 'held'").bind(run_id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

// ------------------------------------------------------------ housekeeping

/// Delete finished runs older than the retention, and old delivery keys.
pub async fn prune(c: &mut Conn, run_retention: Duration, delivery_retention: Duration) -> Result<(u64, u64)> {
    let now = now_ms();
    let run_cut = now - run_retention.as_millis() as i64;
    let key_cut = now - delivery_retention.as_millis() as i64;
    let keys = sqlx::query("DELETE FROM deliveries WHERE created_at < $1")
        .bind(key_cut)
        .execute(&mut *c)
        .await?
        .rows_affected();
    let mut tx = c.begin().await?;
    let old = "SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1 AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = runs.id AND t.state = 'ready')";
    for table in ["targets", "unresolved", "devices", "tasks"] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE run_id IN ({old})"
        )))
        .bind(run_cut)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM deliveries WHERE run_id IN ({old})"
    )))
    .bind(run_cut)
    .execute(&mut *tx)
    .await?;
    let runs = sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM runs WHERE id IN ({old})"
    )))
    .bind(run_cut)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok((runs, keys))
}

pub async fn stats(c: &mut Conn) -> Result<StoreStats> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
        .fetch_all(&mut *c)
        .await?;
    let mut s = StoreStats::default();
    for r in &rows {
        let st: String = r.try_get("status")?;
        let n: i64 = r.try_get("n")?;
        if st == status::HELD {
            s.held_runs = n;
        }
        s.runs_by_status.push((st, n));
    }
    let now = now_ms();
    let row = sqlx::query("SELECT COUNT(*) AS n, MIN(not_before) AS oldest FROM tasks WHERE state = 'ready' AND not_before <= $1")
        .bind(now)
        .fetch_one(&mut *c)
        .await?;
    s.ready_tasks = row.try_get("n")?;
    s.oldest_ready_ms = row.try_get::<Option<i64>, _>("oldest")?.map(|t| now - t);
    s.dead_tasks = sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE state = 'dead'")
        .fetch_one(&mut *c)
        .await?
        .try_get("n")?;
    Ok(s)
}

/// Number of pending work tasks of a run, and the errors of given-up ones.
pub async fn task_summary(c: &mut Conn, run_id: &str) -> Result<(i64, Vec<String>)> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE run_id = $1 AND state = 'ready' AND kind IN ('contain','resolve','entities')")
        .bind(run_id)
        .fetch_one(&mut *c)
        .await?;
    let pending: i64 = row.try_get("n")?;
    let rows = sqlx::query("SELECT kind, arg, last_error FROM tasks WHERE run_id = $1 AND state = 'dead' ORDER BY kind, arg").bind(run_id).fetch_all(&mut *c).await?;
    let mut errors = vec![];
    for r in &rows {
        let k: String = r.try_get("kind")?;
        let a: String = r.try_get("arg")?;
        let e: Option<String> = r.try_get("last_error")?;
        errors.push(format!(
            "{k}{}{}: {}",
            if a.is_empty() { "" } else { " " },
            a,
            e.unwrap_or_default()
        ));
    }
    Ok((pending, errors))
}

pub async fn unresolved(c: &mut Conn, run_id: &str) -> Result<Vec<(String, String)>> {
    let rows =
        sqlx::query("SELECT entity, reason FROM unresolved WHERE run_id = $1 ORDER BY entity")
            .bind(run_id)
            .fetch_all(&mut *c)
            .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("entity")?, r.try_get("reason")?)))
        .collect()
}

pub async fn target_rows(c: &mut Conn, run_id: &str) -> Result<Vec<TargetRow>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {TARGET_COLUMNS} FROM targets WHERE run_id = $1 ORDER BY seq, upn"
    )))
    .bind(run_id)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(target_from_row).collect()
}

pub async fn target(c: &mut Conn, run_id: &str, upn: &str) -> Result<Option<TargetRow>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {TARGET_COLUMNS} FROM targets WHERE run_id = $1 AND upn = $2"
    )))
    .bind(run_id)
    .bind(upn)
    .fetch_optional(&mut *c)
    .await?;
    row.as_ref().map(target_from_row).transpose()
}

pub async fn set_target_mailbox(c: &mut Conn, run_id: &str, upn: &str, m: &DirectoryUser) -> Result<()> {
    sqlx::query("UPDATE targets SET mailbox_upn = $1, display_name = $2, object_id = $3 WHERE run_id = $4 AND upn = $5")
        .bind(m.upn.as_str())
        .bind(truncate(&m.display_name, 256))
        .bind(&m.object_id)
        .bind(run_id)
        .bind(upn)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Total wipe-ledger rows for a device (tests and operators).
pub async fn ledger(c: &mut Conn, tenant: &str) -> Result<Vec<(String, String, String)>> {
    let rows =
        sqlx::query("SELECT guid, run_id, state FROM wipes WHERE tenant_id = $1 ORDER BY guid")
            .bind(tenant)
            .fetch_all(&mut *c)
            .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("guid")?,
                r.try_get("run_id")?,
                r.try_get("state")?,
            ))
        })
        .collect()
}



/// Lock the run's row for the rest of the transaction (touching it takes
/// the row lock on PostgreSQL, the write lock on SQLite): decisions about one
/// run (is it finished? how many targets?) are then never taken twice at once.
async fn lock_run(tx: &mut Tx<'_>, run_id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE runs SET updated_at = $1 WHERE id = $2").bind(now).bind(run_id).execute(&mut **tx).await?;
    Ok(())
}

/// Insert a target unless the run already has one for this address; true when inserted.
async fn insert_target(tx: &mut Tx<'_>, run_id: &str, t: &NewTarget, seq: i64) -> Result<bool> {
    let claims = (!t.claims.is_empty()).then(|| serde_json::to_string(&t.claims)).transpose()?;
    let r = sqlx::query("INSERT INTO targets (run_id, upn, source, state, reason, seq, claims) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id, upn) DO NOTHING")
        .bind(run_id)
        .bind(&t.upn)
        .bind(&t.source)
        .bind(&t.state)
        .bind(&t.reason)
        .bind(seq)
        .bind(claims)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected() == 1)
}

const TARGET_COLUMNS: &str = "upn, source, state, reason, claims, mailbox_upn, display_name, object_id";

fn target_from_row(r: &DbRow) -> Result<TargetRow> {
    let claims: Option<String> = r.try_get("claims")?;
    Ok(TargetRow {
        upn: r.try_get("upn")?,
        source: r.try_get("source")?,
        state: r.try_get("state")?,
        reason: r.try_get("reason")?,
        claims: match claims {
            Some(c) => serde_json::from_str::<Claims>(&c)?,
            None => Claims::default(),
        },
        mailbox_upn: r.try_get("mailbox_upn")?,
        display_name: r.try_get("display_name")?,
        object_id: r.try_get("object_id")?,
    })
}

async fn insert_unresolved(
    tx: &mut Tx<'_>,
    run_id: &str,
    entity: &str,
    reason: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO unresolved (run_id, entity, reason) VALUES ($1, $2, $3) ON CONFLICT (run_id, entity) DO NOTHING")
        .bind(run_id)
        .bind(truncate(entity, 500))
        .bind(truncate(reason, 1000))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn enqueue_tx(
    tx: &mut Tx<'_>,
    run_id: &str,
    tenant: &str,
    kind: &str,
    arg: &str,
    seq: i64,
    not_before: i64,
) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO tasks (id, run_id, tenant_id, kind, arg, seq, state, dirty, not_before, attempts, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'ready', 0, $7, 0, $8, $8)
         ON CONFLICT (run_id, kind, arg) DO UPDATE SET dirty = 1, state = 'ready', attempts = 0,
             not_before = CASE WHEN tasks.state = 'ready' AND tasks.not_before < excluded.not_before THEN tasks.not_before ELSE excluded.not_before END,
             updated_at = excluded.updated_at",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(run_id)
    .bind(tenant)
    .bind(kind)
    .bind(arg)
    .bind(seq)
    .bind(not_before)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn put_device_tx(tx: &mut Tx<'_>, d: &DeviceRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO devices (run_id, upn, guid, device_id, device_type, model, os, client_type, client_version, outcome, reason, flags, requested_at, acked_at, verify, prior_run_id, prior_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
         ON CONFLICT (run_id, guid) DO UPDATE SET outcome = excluded.outcome, reason = excluded.reason, flags = excluded.flags,
             requested_at = excluded.requested_at, acked_at = excluded.acked_at, verify = excluded.verify,
             prior_run_id = excluded.prior_run_id, prior_at = excluded.prior_at, updated_at = excluded.updated_at",
    )
    .bind(&d.run_id)
    .bind(&d.upn)
    .bind(&d.guid)
    .bind(&d.device_id)
    .bind(&d.device_type)
    .bind(&d.model)
    .bind(&d.os)
    .bind(&d.client_type)
    .bind(&d.client_version)
    .bind(&d.outcome)
    .bind(&d.reason)
    .bind(&d.flags)
    .bind(d.requested_at)
    .bind(d.acked_at)
    .bind(&d.verify)
    .bind(&d.prior_run_id)
    .bind(d.prior_at)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn device_from_row(r: &DbRow) -> Result<DeviceRecord> {
    Ok(DeviceRecord {
        run_id: r.try_get("run_id")?,
        upn: r.try_get("upn")?,
        guid: r.try_get("guid")?,
        device_id: r.try_get("device_id")?,
        device_type: r.try_get("device_type")?,
        model: r.try_get("model")?,
        os: r.try_get("os")?,
        client_type: r.try_get("client_type")?,
        client_version: r.try_get("client_version")?,
        outcome: r.try_get("outcome")?,
        reason: r.try_get("reason")?,
        flags: r.try_get("flags")?,
        requested_at: r.try_get("requested_at")?,
        acked_at: r.try_get("acked_at")?,
        verify: r.try_get("verify")?,
        prior_run_id: r.try_get("prior_run_id")?,
        prior_at: r.try_get("prior_at")?,
    })
}

/// When no work task of the run is pending: the run is held (some target
/// waits for approval) or completed. Returns the new status, if any.
async fn finalize_if_done(
    tx: &mut Tx<'_>,
    run_id: &str,
    now: i64,
    hold_expiry: Duration,
) -> Result<Option<String>> {
    let row = sqlx::query("SELECT status, tenant_id FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let st: String = row.try_get("status")?;
    let tenant: String = row.try_get("tenant_id")?;
    if st != status::QUEUED && st != status::RUNNING {
        return Ok(None);
    }
    let pending: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE run_id = $1 AND state = 'ready' AND kind IN ('contain','resolve','entities')")
        .bind(run_id)
        .fetch_one(&mut **tx)
        .await?
        .try_get("n")?;
    if pending > 0 {
        return Ok(None);
    }
    let held: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM targets WHERE run_id = $1 AND state = 'held'")
            .bind(run_id)
            .fetch_one(&mut **tx)
            .await?
            .try_get("n")?;
    let new_status = if held > 0 {
        let reason: Option<String> = sqlx::query(
            "SELECT reason FROM targets WHERE run_id = $1 AND state = 'held' ORDER BY seq LIMIT 1",
        )
        .bind(run_id)
        .fetch_one(&mut **tx)
        .await?
        .try_get("reason")?;
        sqlx::query("UPDATE runs SET status = 'held', reason = $1, updated_at = $2 WHERE id = $3")
            .bind(reason)
            .bind(now)
            .bind(run_id)
            .execute(&mut **tx)
            .await?;
        enqueue_tx(
            tx,
            run_id,
            &tenant,
            kind::EXPIRE,
            "",
            0,
            now + hold_expiry.as_millis() as i64,
        )
        .await?;
        status::HELD
    } else {
        sqlx::query(
            "UPDATE runs SET status = 'completed', finished_at = $1, updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(run_id)
        .execute(&mut **tx)
        .await?;
        status::COMPLETED
    };
    enqueue_tx(tx, run_id, &tenant, kind::COMMENT, "", 0, now).await?;
    Ok(Some(new_status.to_string()))
}
