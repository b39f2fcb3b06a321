// Account steps and device blocks. The ledger (`account_ledger`) has one
// row per (tenant, person, step) across runs: a later run sees that a step
// was taken and does not repeat it (unless forced); `user_steps` is each
// run's view. `device_blocks` holds the blocks wipehook added, so a cancel
// removes only those.

const LEDGER_TAKING: &str = "taking";
const LEDGER_DONE: &str = "done";
const LEDGER_UNDONE: &str = "undone";
const BLOCKED: &str = "blocked";
const UNBLOCKED: &str = "unblocked";

pub async fn claim_step(
    c: &mut Conn,
    tenant: &TenantId,
    object_id: &str,
    step: AccountStep,
    run: &RunId,
    target: &Upn,
    force: bool,
) -> Result<StepClaim> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO account_ledger (tenant_id, object_id, step, run_id, upn, state, at) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, object_id, step) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(object_id)
    .bind(step.as_str())
    .bind(run.as_str())
    .bind(target.as_str())
    .bind(LEDGER_TAKING)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if fresh.rows_affected() == 1 {
        tx.commit().await?;
        return Ok(StepClaim::Mine { resumed: false });
    }
    let taken_over = sqlx::query(
        "UPDATE account_ledger SET run_id = $1, upn = $2, state = $3, at = $4
         WHERE tenant_id = $5 AND object_id = $6 AND step = $7
           AND (state = $8 OR ($9 = 1 AND run_id <> $1))",
    )
    .bind(run.as_str())
    .bind(target.as_str())
    .bind(LEDGER_TAKING)
    .bind(now)
    .bind(tenant.as_str())
    .bind(object_id)
    .bind(step.as_str())
    .bind(LEDGER_UNDONE)
    .bind(force as i64)
    .execute(&mut *tx)
    .await?;
    if taken_over.rows_affected() == 1 {
        tx.commit().await?;
        return Ok(StepClaim::Mine { resumed: false });
    }
    let row = sqlx::query(
        "SELECT run_id, upn, at FROM account_ledger WHERE tenant_id = $1 AND object_id = $2 AND step = $3",
    )
    .bind(tenant.as_str())
    .bind(object_id)
    .bind(step.as_str())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let owner: RunId = parsed(&row, "run_id")?;
    let owner_upn: String = row.try_get("upn")?;
    Ok(if &owner == run && owner_upn == target.as_str() {
        StepClaim::Mine { resumed: true }
    } else {
        StepClaim::TakenBy {
            run_id: owner,
            at: row.try_get("at")?,
        }
    })
}

async fn put_user_step_tx(tx: &mut Tx<'_>, run: &RunId, s: &UserStep) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_steps (run_id, upn, step, state, reason, relies_on, at) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (run_id, upn, step) DO UPDATE SET state = excluded.state, reason = excluded.reason, relies_on = excluded.relies_on, at = excluded.at",
    )
    .bind(run.as_str())
    .bind(s.upn.as_str())
    .bind(s.step.as_str())
    .bind(s.state.as_str())
    .bind(s.reason.as_deref().map(|r| truncate(r, 1000)))
    .bind(s.relies_on.as_ref().map(|r| r.as_str()))
    .bind(s.at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Move the run's ledger row of a step to `state`, with the run's view, together.
async fn ledger_state(
    c: &mut Conn,
    tenant: &TenantId,
    object_id: &str,
    s: &UserStep,
    run: &RunId,
    state: &str,
) -> Result<()> {
    let mut tx = c.begin().await?;
    sqlx::query(
        "UPDATE account_ledger SET state = $1, at = $2 WHERE tenant_id = $3 AND object_id = $4 AND step = $5 AND run_id = $6",
    )
    .bind(state)
    .bind(s.at)
    .bind(tenant.as_str())
    .bind(object_id)
    .bind(s.step.as_str())
    .bind(run.as_str())
    .execute(&mut *tx)
    .await?;
    put_user_step_tx(&mut tx, run, s).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn step_done(
    c: &mut Conn,
    tenant: &TenantId,
    object_id: &str,
    s: &UserStep,
    run: &RunId,
) -> Result<()> {
    ledger_state(c, tenant, object_id, s, run, LEDGER_DONE).await
}

pub async fn step_not_taken(
    c: &mut Conn,
    tenant: &TenantId,
    object_id: &str,
    s: &UserStep,
    run: &RunId,
) -> Result<()> {
    let mut tx = c.begin().await?;
    sqlx::query(
        "DELETE FROM account_ledger WHERE tenant_id = $1 AND object_id = $2 AND step = $3 AND run_id = $4 AND upn = $5 AND state = $6",
    )
    .bind(tenant.as_str())
    .bind(object_id)
    .bind(s.step.as_str())
    .bind(run.as_str())
    .bind(s.upn.as_str())
    .bind(LEDGER_TAKING)
    .execute(&mut *tx)
    .await?;
    put_user_step_tx(&mut tx, run, s).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn put_user_step(c: &mut Conn, run: &RunId, s: &UserStep) -> Result<()> {
    let mut tx = c.begin().await?;
    put_user_step_tx(&mut tx, run, s).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn step_owner(
    c: &mut Conn,
    tenant: &TenantId,
    object_id: &str,
    step: AccountStep,
) -> Result<Option<(RunId, String)>> {
    let row = sqlx::query(
        "SELECT run_id, state FROM account_ledger WHERE tenant_id = $1 AND object_id = $2 AND step = $3",
    )
    .bind(tenant.as_str())
    .bind(object_id)
    .bind(step.as_str())
    .fetch_optional(&mut *c)
    .await?;
    row.map(|r| Ok((parsed(&r, "run_id")?, r.try_get("state")?)))
        .transpose()
}

pub async fn step_reliers(c: &mut Conn, run: &RunId, step: AccountStep) -> Result<Vec<RunId>> {
    let rows = sqlx::query(
        "SELECT s.run_id FROM user_steps s JOIN runs r ON r.id = s.run_id
         WHERE s.relies_on = $1 AND s.step = $2 AND s.state = $3 AND r.cancelled_at IS NULL ORDER BY s.at",
    )
    .bind(run.as_str())
    .bind(step.as_str())
    .bind(StepState::AlreadyDone.as_str())
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(|r| parsed(r, "run_id")).collect()
}

pub async fn hand_step_over(
    c: &mut Conn,
    tenant: &TenantId,
    object_id: &str,
    step: AccountStep,
    from: &RunId,
    to: &RunId,
) -> Result<()> {
    sqlx::query(
        "UPDATE account_ledger SET run_id = $1 WHERE tenant_id = $2 AND object_id = $3 AND step = $4 AND run_id = $5",
    )
    .bind(to.as_str())
    .bind(tenant.as_str())
    .bind(object_id)
    .bind(step.as_str())
    .bind(from.as_str())
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn step_undone(
    c: &mut Conn,
    tenant: &TenantId,
    object_id: &str,
    s: &UserStep,
    run: &RunId,
) -> Result<()> {
    ledger_state(c, tenant, object_id, s, run, LEDGER_UNDONE).await
}

pub async fn user_steps(c: &mut Conn, run: &RunId) -> Result<Vec<UserStep>> {
    let rows = sqlx::query(
        "SELECT upn, step, state, reason, relies_on, at FROM user_steps WHERE run_id = $1 ORDER BY upn, at, step",
    )
    .bind(run.as_str())
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(UserStep {
                upn: parsed(r, "upn")?,
                step: parsed(r, "step")?,
                state: parsed(r, "state")?,
                reason: r.try_get("reason")?,
                relies_on: parsed_opt(r, "relies_on")?,
                at: r.try_get("at")?,
            })
        })
        .collect()
}

pub async fn device_blocked(
    c: &mut Conn,
    tenant: &TenantId,
    run: &RunId,
    mailbox: &Upn,
    guid: &DeviceGuid,
    device_id: &str,
) -> Result<()> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    sqlx::query(
        "INSERT INTO device_blocks (tenant_id, upn, device_id, run_id, state, at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, upn, device_id) DO UPDATE SET run_id = excluded.run_id, state = excluded.state, at = excluded.at",
    )
    .bind(tenant.as_str())
    .bind(mailbox.as_str())
    .bind(device_id)
    .bind(run.as_str())
    .bind(BLOCKED)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE devices SET blocked_at = $1, updated_at = $1 WHERE run_id = $2 AND guid = $3",
    )
    .bind(now)
    .bind(run.as_str())
    .bind(guid.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn blocks_of(c: &mut Conn, tenant: &TenantId, run: &RunId) -> Result<Vec<(Upn, String)>> {
    let rows = sqlx::query(
        "SELECT upn, device_id FROM device_blocks WHERE tenant_id = $1 AND run_id = $2 AND state = $3 ORDER BY upn, device_id",
    )
    .bind(tenant.as_str())
    .bind(run.as_str())
    .bind(BLOCKED)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| Ok((parsed(r, "upn")?, r.try_get("device_id")?)))
        .collect()
}

pub async fn device_unblocked(
    c: &mut Conn,
    tenant: &TenantId,
    run: &RunId,
    mailbox: &Upn,
    device_id: &str,
) -> Result<()> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    sqlx::query(
        "UPDATE device_blocks SET state = $1, at = $2 WHERE tenant_id = $3 AND upn = $4 AND device_id = $5 AND run_id = $6",
    )
    .bind(UNBLOCKED)
    .bind(now)
    .bind(tenant.as_str())
    .bind(mailbox.as_str())
    .bind(device_id)
    .bind(run.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE devices SET blocked_at = NULL, updated_at = $1 WHERE run_id = $2 AND device_id = $3",
    )
    .bind(now)
    .bind(run.as_str())
    .bind(device_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
