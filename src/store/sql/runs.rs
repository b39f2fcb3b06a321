// Runs: intake (with the delivery key), reads, approval, cancellation,
// expiry, and the run's end (`finalize_if_done`, under the run's lock).

const RUN_COLUMNS: &str = "id, tenant_id, incident_arm_id, incident_number, incident_title, severity, trigger_kind, caller, mode, force, status, reason, approved_by, approved_at, cancelled_by, cancelled_at, comment_id, created_at, finished_at, trigger_scope, hold_until, provider_incident_id, comments_baseline, caller_oid, first_activity_at, attack_disruption";

fn run_from_row(r: &DbRow) -> Result<RunRecord> {
    let actor = |by: &str, at: &str| -> Result<Option<Actor>> {
        let by: Option<String> = r.try_get(by)?;
        let at: Option<i64> = r.try_get(at)?;
        Ok(by.map(|by| Actor {
            by,
            at: at.unwrap_or_default(),
        }))
    };
    Ok(RunRecord {
        id: parsed(r, "id")?,
        tenant: parsed(r, "tenant_id")?,
        incident: parsed_opt(r, "incident_arm_id")?,
        incident_number: r.try_get("incident_number")?,
        incident_title: r.try_get("incident_title")?,
        severity: parsed_opt(r, "severity")?,
        trigger: parsed(r, "trigger_kind")?,
        caller: r.try_get("caller")?,
        caller_oid: r.try_get("caller_oid")?,
        first_activity_at: r.try_get("first_activity_at")?,
        attack_disruption: r
            .try_get::<Option<i64>, _>("attack_disruption")?
            .unwrap_or(0)
            != 0,
        mode: parsed(r, "mode")?,
        force: r.try_get::<i64, _>("force")? != 0,
        status: parsed(r, "status")?,
        reason: r.try_get("reason")?,
        approved: actor("approved_by", "approved_at")?,
        cancelled: actor("cancelled_by", "cancelled_at")?,
        comment_id: r.try_get("comment_id")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
        trigger_scope: match r.try_get::<Option<String>, _>("trigger_scope")? {
            Some(t) => serde_json::from_str(&t).context("column trigger_scope")?,
            None => TriggerScope::default(),
        },
        hold_until: r.try_get("hold_until")?,
        provider_incident_id: r.try_get("provider_incident_id")?,
        comments_baseline: r.try_get("comments_baseline")?,
    })
}

/// Record accepted calls in one transaction (group commit): each a run with
/// its targets and tasks, with its delivery key. A key already present
/// (stored before, or earlier in the same batch) returns its run instead.
///
/// A batch costs a constant number of statements, whatever its size (one
/// multi-row INSERT per table, chunked far below both databases' parameter
/// limits): on SQLite each statement is a hand-off to sqlx's worker thread,
/// so the hand-offs per batch no longer grow with the calls in it.
pub async fn accept_batch(c: &mut Conn, news: &[NewRun]) -> Result<Vec<Accepted>> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    // The delivery keys first: a run is new when its key went in.
    let mut created = std::collections::HashSet::new();
    for chunk in news.chunks(ROWS_PER_STATEMENT) {
        let mut q =
            sqlx::QueryBuilder::<Db>::new("INSERT INTO deliveries (key, run_id, created_at) ");
        q.push_values(chunk, |mut b, n| {
            b.push_bind(n.delivery_key.as_str())
                .push_bind(n.id.as_str())
                .push_bind(now);
        });
        q.push(" ON CONFLICT (key) DO NOTHING RETURNING run_id");
        for r in q.build().persistent(false).fetch_all(&mut *tx).await? {
            created.insert(r.try_get::<String, _>("run_id")?);
        }
    }
    let fresh: Vec<&NewRun> = news
        .iter()
        .filter(|n| created.contains(n.id.as_str()))
        .collect();
    insert_runs(&mut tx, &fresh, now).await?;
    let targets: Vec<(&RunId, &NewTarget, i64)> = fresh
        .iter()
        .flat_map(|n| {
            n.targets
                .iter()
                .enumerate()
                .map(|(i, t)| (&n.id, t, i as i64))
        })
        .collect();
    insert_targets(&mut tx, &targets).await?;
    let unresolved: Vec<(&RunId, &Unresolved)> = fresh
        .iter()
        .flat_map(|n| n.unresolved.iter().map(|u| (&n.id, u)))
        .collect();
    insert_unresolved_rows(&mut tx, &unresolved).await?;
    let mut tasks = vec![];
    for n in &fresh {
        let mut seen = std::collections::HashSet::new();
        for (i, job) in n.jobs.iter().enumerate() {
            if seen.insert((job.kind(), job.arg())) {
                tasks.push((*n, job.clone(), i as i64, now));
            }
        }
        if let Some(at) = n.expire_at {
            tasks.push((*n, Job::Expire, 0, at));
        }
    }
    insert_tasks(&mut tx, &tasks, now).await?;
    // Calls whose key was already there: the run that has it.
    let repeats: Vec<&NewRun> = news
        .iter()
        .filter(|n| !created.contains(n.id.as_str()))
        .collect();
    let mut existing = std::collections::HashMap::new();
    for chunk in repeats.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<Db>::new(
            "SELECT d.key, d.run_id, r.status FROM deliveries d JOIN runs r ON r.id = d.run_id WHERE d.key IN (",
        );
        let mut keys = q.separated(", ");
        for n in chunk {
            keys.push_bind(n.delivery_key.as_str());
        }
        q.push(")");
        for r in q.build().persistent(false).fetch_all(&mut *tx).await? {
            let key: String = r.try_get("key")?;
            existing.insert(
                key,
                Accepted {
                    run_id: parsed(&r, "run_id")?,
                    created: false,
                    status: parsed(&r, "status")?,
                },
            );
        }
    }
    tx.commit().await?;
    news.iter()
        .map(|n| {
            if created.contains(n.id.as_str()) {
                Ok(Accepted {
                    run_id: n.id.clone(),
                    created: true,
                    status: n.status,
                })
            } else {
                existing
                    .get(&n.delivery_key)
                    .cloned()
                    .with_context(|| format!("delivery key of run {} vanished", n.id))
            }
        })
        .collect()
}

/// Rows per multi-row statement: at most 22 parameters a row, so at most
/// 5,632 a statement (SQLite allows 32,766, PostgreSQL 65,535). These
/// statements are not kept in the connection's statement cache
/// (`persistent(false)`): their text varies with the batch's size, and a
/// cache of a hundred large prepared statements is megabytes of memory.
const ROWS_PER_STATEMENT: usize = 256;

async fn insert_runs(tx: &mut Tx<'_>, runs: &[&NewRun], now: i64) -> Result<()> {
    for chunk in runs.chunks(ROWS_PER_STATEMENT) {
        let mut scopes = Vec::with_capacity(chunk.len());
        for n in chunk {
            scopes.push(serde_json::to_string(&n.trigger_scope)?);
        }
        let mut q = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO runs (id, tenant_id, incident_arm_id, incident_number, incident_title, severity, trigger_kind, caller, mode, force, status, reason, comment_id, created_at, updated_at, trigger_scope, hold_until, provider_incident_id, comments_baseline, caller_oid, first_activity_at, attack_disruption) ",
        );
        q.push_values(chunk.iter().zip(scopes), |mut b, (n, scope)| {
            b.push_bind(n.id.as_str())
                .push_bind(n.tenant.as_str())
                .push_bind(n.incident.as_ref().map(IncidentRef::arm_id))
                .push_bind(n.incident_number)
                .push_bind(n.incident_title.as_deref())
                .push_bind(n.severity.map(|s| s.as_str()))
                .push_bind(n.trigger.as_str())
                .push_bind(n.caller.as_str())
                .push_bind(n.mode.as_str())
                .push_bind(n.force as i64)
                .push_bind(n.status.as_str())
                .push_bind(n.reason.as_deref())
                .push_bind(n.comment_id.as_deref())
                .push_bind(now)
                .push_bind(now)
                .push_bind(scope)
                .push_bind(n.expire_at)
                .push_bind(n.provider_incident_id.as_deref().map(|p| truncate(p, 100)))
                .push_bind(n.comments_baseline)
                .push_bind(n.caller_oid.as_str())
                .push_bind(n.first_activity_at)
                .push_bind(n.attack_disruption as i64);
        });
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_tasks(tx: &mut Tx<'_>, tasks: &[(&NewRun, Job, i64, i64)], now: i64) -> Result<()> {
    for chunk in tasks.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO tasks (id, run_id, tenant_id, kind, arg, seq, state, dirty, not_before, attempts, created_at, updated_at, lane) ",
        );
        q.push_values(chunk, |mut b, (n, job, seq, not_before)| {
            b.push_bind(TaskId::new().as_str().to_string())
                .push_bind(n.id.as_str())
                .push_bind(n.tenant.as_str())
                .push_bind(job.kind().as_str())
                .push_bind(job.arg())
                .push_bind(*seq)
                .push_bind(TaskState::Ready.as_str())
                .push_bind(0i64)
                .push_bind(*not_before)
                .push_bind(0i64)
                .push_bind(now)
                .push_bind(now)
                .push_bind(job.kind().lane().as_str());
        });
        q.push(" ON CONFLICT (run_id, kind, arg) DO NOTHING");
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}

pub async fn run(c: &mut Conn, id: &RunId) -> Result<Option<RunRecord>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
    )))
    .bind(id.as_str())
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
pub async fn runs_for_incident(c: &mut Conn, incident: &IncidentRef) -> Result<Vec<RunRecord>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE lower(incident_arm_id) = lower($1) ORDER BY created_at DESC, id DESC LIMIT 50"
    )))
    .bind(incident.arm_id())
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(run_from_row).collect()
}

pub async fn mark_running(c: &mut Conn, run: &RunId) -> Result<()> {
    sqlx::query("UPDATE runs SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
        .bind(RunStatus::Running.as_str())
        .bind(now_ms())
        .bind(run.as_str())
        .bind(RunStatus::Queued.as_str())
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Approve a held run: held targets become pending with contain tasks, and
/// the record is queued in the same transaction.
pub async fn approve(c: &mut Conn, run: &RunId, who: &str) -> Result<usize> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    // A hold whose expiry is due is no longer approvable, even if the expiry
    // task has not run yet.
    let r = sqlx::query(
        "UPDATE runs SET status = $1, reason = NULL, approved_by = $2, approved_at = $3, updated_at = $3 WHERE id = $4 AND status = $5
         AND cancelled_at IS NULL
         AND NOT EXISTS (SELECT 1 FROM tasks WHERE run_id = $4 AND kind = $6 AND state = $7 AND not_before <= $3)",
    )
    .bind(RunStatus::Running.as_str())
    .bind(who)
    .bind(now)
    .bind(run.as_str())
    .bind(RunStatus::Held.as_str())
    .bind(TaskKind::Expire.as_str())
    .bind(TaskState::Ready.as_str())
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(0);
    }
    let rows =
        sqlx::query("SELECT upn, seq FROM targets WHERE run_id = $1 AND state = $2 ORDER BY seq")
            .bind(run.as_str())
            .bind(TargetState::Held.as_str())
            .fetch_all(&mut *tx)
            .await?;
    let row = sqlx::query("SELECT tenant_id, comment_id FROM runs WHERE id = $1")
        .bind(run.as_str())
        .fetch_one(&mut *tx)
        .await?;
    let tenant: TenantId = parsed(&row, "tenant_id")?;
    let has_record: Option<String> = row.try_get("comment_id")?;
    for r in &rows {
        let upn: Upn = parsed(r, "upn")?;
        let seq: i64 = r.try_get("seq")?;
        sqlx::query("UPDATE targets SET state = $1, reason = NULL WHERE run_id = $2 AND upn = $3")
            .bind(TargetState::Pending.as_str())
            .bind(run.as_str())
            .bind(upn.as_str())
            .execute(&mut *tx)
            .await?;
        enqueue_tx(&mut tx, run, &tenant, &Job::Contain { upn }, seq, now).await?;
    }
    if has_record.is_some() {
        enqueue_tx(&mut tx, run, &tenant, &Job::Comment, 0, now).await?;
    }
    // This hold's approvals are used up: a later hold needs its own.
    sqlx::query("UPDATE approvals SET consumed = 1 WHERE run_id = $1")
        .bind(run.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows.len())
}

/// Record a cancellation request and enqueue the task that sends it.
/// Held targets of the run can no longer be approved.
pub async fn request_cancel(
    c: &mut Conn,
    run: &RunId,
    tenant: &TenantId,
    who: &str,
) -> Result<bool> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    let r = sqlx::query(
        "UPDATE runs SET cancelled_by = $1, cancelled_at = $2, updated_at = $2 WHERE id = $3 AND cancelled_at IS NULL",
    )
    .bind(who)
    .bind(now)
    .bind(run.as_str())
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    // Held and not yet contained users are released: nothing more is sent.
    sqlx::query(
        "UPDATE targets SET state = $1, reason = $2 WHERE run_id = $3 AND state IN ($4, $5)",
    )
    .bind(TargetState::Cancelled.as_str())
    .bind(format!("cancelled by {who} before any wipe was sent"))
    .bind(run.as_str())
    .bind(TargetState::Held.as_str())
    .bind(TargetState::Pending.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE runs SET status = $1, reason = $2, finished_at = COALESCE(finished_at, $3) WHERE id = $4 AND status = $5",
    )
    .bind(RunStatus::Completed.as_str())
    .bind(format!("cancelled by {who} while held"))
    .bind(now)
    .bind(run.as_str())
    .bind(RunStatus::Held.as_str())
    .execute(&mut *tx)
    .await?;
    enqueue_tx(&mut tx, run, tenant, &Job::Cancel, 0, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// Is there anything a cancel would undo: a requested wipe the device has
/// not acknowledged, or a user still held or not yet contained?
pub async fn undoable(c: &mut Conn, run: &RunId) -> Result<bool> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM devices WHERE run_id = $1 AND outcome = $2 AND acked_at IS NULL)
              + (SELECT COUNT(*) FROM targets WHERE run_id = $1 AND state IN ($3, $4))
              + (SELECT COUNT(*) FROM devices WHERE run_id = $1 AND blocked_at IS NOT NULL)
              + (SELECT COUNT(*) FROM user_steps WHERE run_id = $1 AND step = $5 AND state = $6) AS n",
    )
    .bind(run.as_str())
    .bind(DeviceOutcome::Requested.as_str())
    .bind(TargetState::Held.as_str())
    .bind(TargetState::Pending.as_str())
    .bind(AccountStep::BlockSignIn.as_str())
    .bind(StepState::Done.as_str())
    .fetch_one(&mut *c)
    .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// A hold that was not approved in time: nothing held will be wiped.
pub async fn expire_hold(c: &mut Conn, run: &RunId) -> Result<bool> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    let r = sqlx::query(
        "UPDATE runs SET status = $1, reason = 'the hold expired without approval; nothing held was wiped', finished_at = $2, updated_at = $2 WHERE id = $3 AND status = $4",
    )
    .bind(RunStatus::Expired.as_str())
    .bind(now)
    .bind(run.as_str())
    .bind(RunStatus::Held.as_str())
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 1 {
        sqlx::query(
            "UPDATE targets SET state = $1, reason = 'hold expired without approval' WHERE run_id = $2 AND state = $3",
        )
        .bind(TargetState::Expired.as_str())
        .bind(run.as_str())
        .bind(TargetState::Held.as_str())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

/// When no work task of the run is pending: the run is held (some target
/// waits for approval) or completed, and its record is queued. Returns the
/// new status, if any.
async fn finalize_if_done(
    tx: &mut Tx<'_>,
    run: &RunId,
    now: i64,
    hold_expiry: Duration,
) -> Result<Option<RunStatus>> {
    let row = sqlx::query("SELECT status, tenant_id FROM runs WHERE id = $1")
        .bind(run.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let status: RunStatus = parsed(&row, "status")?;
    let tenant: TenantId = parsed(&row, "tenant_id")?;
    if !status.is_active() {
        return Ok(None);
    }
    if pending_work(&mut **tx, run).await? > 0 {
        return Ok(None);
    }
    let held = sqlx::query(
        "SELECT reason FROM targets WHERE run_id = $1 AND state = $2 ORDER BY seq LIMIT 1",
    )
    .bind(run.as_str())
    .bind(TargetState::Held.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let new_status = match held {
        Some(row) => {
            let reason: Option<String> = row.try_get("reason")?;
            let until = now + hold_expiry.as_millis() as i64;
            sqlx::query(
                "UPDATE runs SET status = $1, reason = $2, updated_at = $3, hold_until = $4 WHERE id = $5",
            )
            .bind(RunStatus::Held.as_str())
            .bind(reason)
            .bind(now)
            .bind(until)
            .bind(run.as_str())
            .execute(&mut **tx)
            .await?;
            enqueue_tx(
                tx,
                run,
                &tenant,
                &Job::Expire,
                0,
                now + hold_expiry.as_millis() as i64,
            )
            .await?;
            RunStatus::Held
        }
        None => {
            sqlx::query(
                "UPDATE runs SET status = $1, finished_at = $2, updated_at = $2 WHERE id = $3",
            )
            .bind(RunStatus::Completed.as_str())
            .bind(now)
            .bind(run.as_str())
            .execute(&mut **tx)
            .await?;
            RunStatus::Completed
        }
    };
    enqueue_tx(tx, run, &tenant, &Job::Comment, 0, now).await?;
    Ok(Some(new_status))
}
