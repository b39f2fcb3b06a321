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
    .bind(new.id.as_str())
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    if inserted.is_none() {
        let row = sqlx::query(
            "SELECT d.run_id, r.status FROM deliveries d JOIN runs r ON r.id = d.run_id WHERE d.key = $1",
        )
        .bind(&new.delivery_key)
        .fetch_one(&mut **tx)
        .await?;
        return Ok(Accepted {
            run_id: parsed(&row, "run_id")?,
            created: false,
            status: parsed(&row, "status")?,
        });
    }
    sqlx::query(
        "INSERT INTO runs (id, tenant_id, incident_arm_id, incident_number, incident_title, severity, trigger_kind, caller, mode, force, status, reason, comment_id, created_at, updated_at, trigger_scope, hold_until, provider_incident_id, comments_baseline, caller_oid, first_activity_at, attack_disruption)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(new.id.as_str())
    .bind(new.tenant.as_str())
    .bind(new.incident.as_ref().map(IncidentRef::arm_id))
    .bind(new.incident_number)
    .bind(&new.incident_title)
    .bind(new.severity.map(|s| s.as_str()))
    .bind(new.trigger.as_str())
    .bind(&new.caller)
    .bind(new.mode.as_str())
    .bind(new.force as i64)
    .bind(new.status.as_str())
    .bind(&new.reason)
    .bind(&new.comment_id)
    .bind(now)
    .bind(serde_json::to_string(&new.trigger_scope)?)
    .bind(new.expire_at)
    .bind(new.provider_incident_id.as_deref().map(|p| truncate(p, 100)))
    .bind(new.comments_baseline)
    .bind(&new.caller_oid)
    .bind(new.first_activity_at)
    .bind(new.attack_disruption as i64)
    .execute(&mut **tx)
    .await?;
    for (i, t) in new.targets.iter().enumerate() {
        insert_target(tx, &new.id, t, i as i64).await?;
    }
    for u in &new.unresolved {
        insert_unresolved(tx, &new.id, u).await?;
    }
    for (i, job) in new.jobs.iter().enumerate() {
        enqueue_tx(tx, &new.id, &new.tenant, job, i as i64, now).await?;
    }
    if let Some(at) = new.expire_at {
        enqueue_tx(tx, &new.id, &new.tenant, &Job::Expire, 0, at).await?;
    }
    Ok(Accepted {
        run_id: new.id.clone(),
        created: true,
        status: new.status,
    })
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
