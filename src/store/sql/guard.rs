// The guard: the destructive budget, the kill switch, approvals, the audit
// trail. The guard row ('service') is both the kill switch and the lock
// every reservation takes first: on PostgreSQL the UPDATE holds its row
// lock until commit, so reservations of every replica are serialised and
// each counts what the others committed (READ COMMITTED reads a fresh
// snapshot per statement); SQLite has one writer already.

const GUARD_SCOPE: &str = "service";
const KILL_SWITCH: &str =
    "SELECT engaged, engaged_by, engaged_at, reason, engaged_tenant FROM guard WHERE scope = $1";

fn kill_switch_of(r: &DbRow) -> Result<KillSwitch> {
    Ok(KillSwitch {
        engaged: r.try_get::<i64, _>("engaged")? != 0,
        by: r.try_get("engaged_by")?,
        at: r.try_get("engaged_at")?,
        reason: r.try_get("reason")?,
        tenant: parsed_opt(r, "engaged_tenant")?,
    })
}

pub async fn reserve_wipes(
    c: &mut Conn,
    tenant: &TenantId,
    run: &RunId,
    target: &Upn,
    guids: &[DeviceGuid],
    limits: BudgetLimits,
    bypass: bool,
) -> Result<Reservation> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    sqlx::query("UPDATE guard SET engaged = engaged WHERE scope = $1")
        .bind(GUARD_SCOPE)
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query(KILL_SWITCH)
        .bind(GUARD_SCOPE)
        .fetch_one(&mut *tx)
        .await?;
    let ks = kill_switch_of(&row)?;
    if ks.engaged {
        tx.rollback().await?;
        return Ok(Reservation::KillSwitch(ks));
    }
    let mine: Vec<String> =
        sqlx::query("SELECT guid FROM budget WHERE run_id = $1 AND state <> $2")
            .bind(run.as_str())
            .bind(BudgetState::Released.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("guid"))
            .collect::<Result<_, _>>()?;
    let new: Vec<&DeviceGuid> = guids
        .iter()
        .filter(|g| !mine.iter().any(|m| m == g.as_str()))
        .collect();
    if new.is_empty() {
        tx.commit().await?;
        return Ok(Reservation::Reserved);
    }
    let wanted = new.len() as i64;
    if !bypass {
        let since = now - limits.window_ms;
        let (t, s) = used_tx(&mut tx, tenant, since).await?;
        let over = if t + wanted > limits.tenant_max {
            Some(("tenant", t, limits.tenant_max))
        } else if s + wanted > limits.service_max {
            Some(("service", s, limits.service_max))
        } else {
            None
        };
        if let Some((scope, used, max)) = over {
            tx.rollback().await?;
            return Ok(Reservation::OverBudget {
                scope,
                used,
                max,
                wanted,
            });
        }
    }
    for g in new {
        sqlx::query(
            "INSERT INTO budget (run_id, guid, tenant_id, upn, state, created_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (run_id, guid) DO UPDATE SET state = excluded.state, upn = excluded.upn, created_at = excluded.created_at",
        )
        .bind(run.as_str())
        .bind(g.as_str())
        .bind(tenant.as_str())
        .bind(target.as_str())
        .bind(BudgetState::Reserved.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Reservation::Reserved)
}

async fn used_tx(tx: &mut Tx<'_>, tenant: &TenantId, since: i64) -> Result<(i64, i64)> {
    let t: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM budget WHERE tenant_id = $1 AND created_at >= $2 AND state <> $3",
    )
    .bind(tenant.as_str())
    .bind(since)
    .bind(BudgetState::Released.as_str())
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?;
    let s: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM budget WHERE created_at >= $1 AND state <> $2")
            .bind(since)
            .bind(BudgetState::Released.as_str())
            .fetch_one(&mut **tx)
            .await?
            .try_get("n")?;
    Ok((t, s))
}

pub async fn budget_used(c: &mut Conn, tenant: &TenantId, window_ms: i64) -> Result<(i64, i64)> {
    let mut tx = c.begin().await?;
    let used = used_tx(&mut tx, tenant, now_ms() - window_ms).await?;
    tx.commit().await?;
    Ok(used)
}

pub async fn kill_switch(c: &mut Conn) -> Result<KillSwitch> {
    let row = sqlx::query(KILL_SWITCH)
        .bind(GUARD_SCOPE)
        .fetch_one(&mut *c)
        .await?;
    kill_switch_of(&row)
}

pub async fn set_kill_switch(
    c: &mut Conn,
    engaged: bool,
    by: &str,
    tenant: &TenantId,
    reason: Option<&str>,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE guard SET engaged = $1, engaged_by = $2, engaged_at = $3, reason = $4, engaged_tenant = $6 WHERE scope = $5 AND engaged <> $1",
    )
    .bind(engaged as i64)
    .bind(by)
    .bind(now_ms())
    .bind(reason.map(|r| truncate(r, 500)))
    .bind(GUARD_SCOPE)
    .bind(tenant.as_str())
    .execute(&mut *c)
    .await?;
    Ok(r.rows_affected() == 1)
}

fn approval_of(r: &DbRow) -> Result<Approval> {
    Ok(Approval {
        approver_oid: r.try_get("approver_oid")?,
        approver: r.try_get("approver")?,
        at: r.try_get("at")?,
    })
}

pub async fn add_approval(
    c: &mut Conn,
    run: &RunId,
    approver_oid: &str,
    approver: &str,
) -> Result<Vec<Approval>> {
    let mut tx = c.begin().await?;
    // The run row's lock: two approvers at once on PostgreSQL each see the
    // other's approval (else neither would release the run).
    sqlx::query("UPDATE runs SET updated_at = updated_at WHERE id = $1")
        .bind(run.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO approvals (run_id, approver_oid, approver, at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (run_id, approver_oid) DO UPDATE SET consumed = 0, at = excluded.at
         WHERE approvals.consumed = 1",
    )
    .bind(run.as_str())
    .bind(approver_oid)
    .bind(approver)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    // Only the approvals of the current hold count (an earlier hold's were
    // consumed when it was released).
    let rows = sqlx::query(
        "SELECT approver_oid, approver, at FROM approvals WHERE run_id = $1 AND consumed = 0 ORDER BY at, approver_oid",
    )
    .bind(run.as_str())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter().map(approval_of).collect()
}

pub async fn approvals(c: &mut Conn, run: &RunId) -> Result<Vec<Approval>> {
    let rows = sqlx::query(
        "SELECT approver_oid, approver, at FROM approvals WHERE run_id = $1 ORDER BY at, approver_oid",
    )
    .bind(run.as_str())
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(approval_of).collect()
}

pub async fn audit(c: &mut Conn, e: &AuditEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit (id, at, tenant_id, actor, actor_oid, action, run_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(e.at)
    .bind(e.tenant.as_ref().map(|t| t.as_str()))
    .bind(truncate(&e.actor, 300))
    .bind(&e.actor_oid)
    .bind(e.action.as_str())
    .bind(e.run_id.as_ref().map(|r| r.as_str()))
    .bind(truncate(&e.detail, 1000))
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn audit_log(
    c: &mut Conn,
    tenant: &TenantId,
    run: Option<&RunId>,
    limit: i64,
) -> Result<Vec<AuditEntry>> {
    let rows = sqlx::query(
        "SELECT at, tenant_id, actor, actor_oid, action, run_id, detail FROM audit
         WHERE tenant_id = $1 AND ($2 = '' OR run_id = $2)
         ORDER BY at DESC, id LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(run.map(|r| r.as_str()).unwrap_or(""))
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                at: r.try_get("at")?,
                tenant: parsed_opt(r, "tenant_id")?,
                actor: r.try_get("actor")?,
                actor_oid: r.try_get("actor_oid")?,
                action: parsed(r, "action")?,
                run_id: parsed_opt(r, "run_id")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect()
}
