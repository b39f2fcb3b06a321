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
    for table in [
        "targets",
        "unresolved",
        "devices",
        "tasks",
        "deliveries",
        "records",
        "user_steps",
        "approvals",
    ] {
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

/// The benchmark's history: `n` finished runs of `tenant` spread over the
/// last 89 days (a busy MSSP's 90 days), each with its target, two wiped
/// and acknowledged devices, its three done tasks and its written record;
/// delivery keys only for the last 6 days (older ones are pruned). One
/// INSERT ... SELECT per table over a counted CTE; ids are UUID-shaped
/// (`00000000-0000-4000-8000-<i>`, its devices `0000000<d>-0000-...`),
/// which no UUIDv7 of a live run can be.
pub async fn fill_history(c: &mut Conn, tenant: &str, workspace: &str, n: i64) -> Result<()> {
    let now = now_ms();
    let span = 89 * 86_400_000i64;
    let step = (span / n.max(1)).max(1);
    let ids = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1),
        h(i, id, at) AS (SELECT i, '00000000-0000-4000-8000-' || substr('000000000000' || i, length('000000000000' || i) - 11, 12), $2 - i * $3 FROM n)";
    let statements: [(&str, Vec<String>); 7] = [
        (
            "INSERT INTO runs (id, tenant_id, incident_arm_id, incident_number, incident_title, severity, trigger_kind, caller, mode, force, status, reason, comment_id, created_at, updated_at, finished_at, trigger_scope)
             SELECT id, $4, $8 || '/providers/Microsoft.SecurityInsights/Incidents/' || id, i, 'history', 'High', $5, 'bench', $6, 0, $7, NULL, 'c-' || id, at, at, at + 5000, '{}' FROM h",
            vec![
                crate::domain::TriggerKind::Incident.as_str().into(),
                crate::domain::Mode::Enforce.as_str().into(),
                RunStatus::Completed.as_str().into(),
                workspace.to_string(),
            ],
        ),
        (
            "INSERT INTO targets (run_id, upn, source, state, reason, seq) SELECT id, 'user' || i || '@history.example', 'trigger', $4, NULL, 0 FROM h",
            vec![TargetState::Done.as_str().into()],
        ),
        (
            "INSERT INTO devices (run_id, upn, guid, device_id, device_type, model, os, client_type, client_version, outcome, requested_at, acked_at, updated_at)
             SELECT id, 'user' || i || '@history.example', '0000000' || d || substr(id, 9), 'dev' || i || '-' || d, 'iPhone', 'iPhone15', 'iOS 18', 'EAS', '16.1', $4, at + 200, at + 60000, at
             FROM h, (SELECT 1 AS d UNION ALL SELECT 2) two",
            vec![DeviceOutcome::Requested.as_str().into()],
        ),
        (
            "INSERT INTO wipes (tenant_id, guid, run_id, upn, state, requested_at, acked_at)
             SELECT $4, '0000000' || d || substr(id, 9), id, 'user' || i || '@history.example', $5, at + 200, at + 60000
             FROM h, (SELECT 1 AS d UNION ALL SELECT 2) two",
            vec![tenant.to_string(), WipeState::Acknowledged.as_str().into()],
        ),
        (
            "INSERT INTO tasks (id, run_id, tenant_id, kind, arg, seq, state, dirty, not_before, attempts, created_at, updated_at, lane)
             SELECT id || '-' || k, id, $4, k, CASE WHEN k = $6 THEN 'user' || i || '@history.example' ELSE '' END, 0, $5, 0, at, 1, at, at + 5000,
                    CASE WHEN k = $6 THEN $9 ELSE $10 END
             FROM h, (SELECT $6 AS k UNION ALL SELECT $7 UNION ALL SELECT $8) kinds",
            vec![
                tenant.to_string(),
                TaskState::Done.as_str().into(),
                TaskKind::Contain.as_str().into(),
                TaskKind::Entities.as_str().into(),
                TaskKind::Comment.as_str().into(),
                TaskKind::Contain.lane().as_str().into(),
                TaskKind::Comment.lane().as_str().into(),
            ],
        ),
        (
            "INSERT INTO records (run_id, seq, comment_id, verdict, facts, text, state, created_at, written_at)
             SELECT id, 1, 'c-' || id, $5, '[]', 'history', $4, at + 5000, at + 5100 FROM h",
            vec![
                RecordState::Written.as_str().into(),
                RunOutcome::Contained.as_str().into(),
            ],
        ),
        (
            "INSERT INTO deliveries (key, run_id, created_at) SELECT 'k-' || id, id, at FROM h WHERE at > $2 - 6 * 86400000",
            vec![],
        ),
    ];
    let mut tx = c.begin().await?;
    for (sql, words) in &statements {
        let text = format!("{ids} {sql}");
        let mut q = sqlx::query(AssertSqlSafe(text))
            .bind(n)
            .bind(now)
            .bind(step);
        if sql.starts_with("INSERT INTO runs") {
            q = q.bind(tenant);
        }
        for w in words {
            q = q.bind(w.as_str());
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    // Fresh statistics for the planner, as a long-lived store has.
    sqlx::raw_sql(ANALYZE).execute(&mut *c).await?;
    Ok(())
}

/// The database's plan for the worker's claim (one lane), line by line.
pub async fn explain_claim(c: &mut Conn) -> Result<Vec<String>> {
    let sql = format!("{EXPLAIN} {}", claim_sql(Some(Lane::Exchange), 0));
    let now = now_ms();
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind("explain")
        .bind(now)
        .bind(now)
        .bind(TaskState::Ready.as_str());
    q = bind_filters(q, Some(Lane::Exchange), &[]);
    let rows = q.fetch_all(&mut *c).await?;
    rows.iter()
        .map(|r| {
            r.try_get::<String, _>("detail")
                .or_else(|_| r.try_get::<String, _>(0))
                .map_err(Into::into)
        })
        .collect()
}
