// Housekeeping: retention and the figures /metrics shows.

/// Delete finished runs older than the retention, and old delivery keys.
pub async fn prune(
    c: &mut Conn,
    run_retention: Duration,
    delivery_retention: Duration,
) -> Result<(u64, u64)> {
    let now = now_ms();
    let run_cut = now - run_retention.as_millis() as i64;
    let key_cut = now - delivery_retention.as_millis() as i64;
    let keys = sqlx::query("DELETE FROM deliveries WHERE created_at < $1")
        .bind(key_cut)
        .execute(&mut *c)
        .await?
        .rows_affected();
    let mut tx = c.begin().await?;
    let old = "SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1 AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = runs.id AND t.state = $2)";
    for table in ["targets", "unresolved", "devices", "tasks", "deliveries"] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE run_id IN ({old})"
        )))
        .bind(run_cut)
        .bind(TaskState::Ready.as_str())
        .execute(&mut *tx)
        .await?;
    }
    let runs = sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM runs WHERE id IN ({old})"
    )))
    .bind(run_cut)
    .bind(TaskState::Ready.as_str())
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
        let status: RunStatus = parsed(r, "status")?;
        let n: i64 = r.try_get("n")?;
        if status == RunStatus::Held {
            s.held_runs = n;
        }
        s.runs_by_status.push((status, n));
    }
    let now = now_ms();
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(not_before) AS oldest FROM tasks WHERE state = $1 AND not_before <= $2",
    )
    .bind(TaskState::Ready.as_str())
    .bind(now)
    .fetch_one(&mut *c)
    .await?;
    s.ready_tasks = row.try_get("n")?;
    s.oldest_ready_ms = row.try_get::<Option<i64>, _>("oldest")?.map(|t| now - t);
    let [a, b, w] = TaskKind::WORK;
    let row = sqlx::query(
        "SELECT MIN(created_at) AS oldest FROM tasks WHERE state = $1 AND kind IN ($2, $3, $4)",
    )
    .bind(TaskState::Ready.as_str())
    .bind(a.as_str())
    .bind(b.as_str())
    .bind(w.as_str())
    .fetch_one(&mut *c)
    .await?;
    s.oldest_work_ms = row.try_get::<Option<i64>, _>("oldest")?.map(|t| now - t);
    s.dead_tasks = sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE state = $1")
        .bind(TaskState::Dead.as_str())
        .fetch_one(&mut *c)
        .await?
        .try_get("n")?;
    Ok(s)
}

/// Take the write path and roll it back: an insert into `schema_version` of a
/// version no migration has (-1), never committed. Measures the write lock
/// (SQLite) or the round trips (PostgreSQL), not a commit's flush.
pub async fn write_probe(c: &mut Conn) -> Result<()> {
    let mut tx = c.begin().await?;
    sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)")
        .bind(-1i64)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    tx.rollback().await?;
    Ok(())
}
