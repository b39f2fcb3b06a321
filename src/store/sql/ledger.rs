// The wipe ledger: one row per (tenant, device) across every run, claimed
// before a wipe is sent, so a device is wiped once however it is reached.

/// Claim the right to wipe a device. A fresh device, this run's own earlier
/// claim, a cancelled wipe, or `force` give `Mine`.
pub async fn claim_wipe(
    c: &mut Conn,
    tenant: &TenantId,
    guid: &DeviceGuid,
    run: &RunId,
    target: &Upn,
    force: bool,
) -> Result<WipeClaim> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    let r = sqlx::query(
        "INSERT INTO wipes (tenant_id, guid, run_id, upn, state, requested_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, guid) DO UPDATE SET run_id = excluded.run_id, upn = excluded.upn, state = excluded.state, requested_at = excluded.requested_at, acked_at = NULL
         WHERE wipes.state = $7
            OR (wipes.run_id = excluded.run_id AND wipes.upn = excluded.upn AND wipes.state = excluded.state)
            OR ($8 = 1 AND wipes.run_id <> excluded.run_id)",
    )
    .bind(tenant.as_str())
    .bind(guid.as_str())
    .bind(run.as_str())
    .bind(target.as_str())
    .bind(WipeState::Sending.as_str())
    .bind(now)
    .bind(WipeState::Cancelled.as_str())
    .bind(force as i64)
    .execute(&mut *tx)
    .await?;
    let claim = if r.rows_affected() == 1 {
        WipeClaim::Mine
    } else {
        let row = sqlx::query(
            "SELECT run_id, state, requested_at FROM wipes WHERE tenant_id = $1 AND guid = $2",
        )
        .bind(tenant.as_str())
        .bind(guid.as_str())
        .fetch_one(&mut *tx)
        .await?;
        WipeClaim::Existing {
            run_id: parsed(&row, "run_id")?,
            state: parsed(&row, "state")?,
            requested_at: row.try_get("requested_at")?,
        }
    };
    tx.commit().await?;
    Ok(claim)
}

/// A target gave up or was refused: release its claims still `sending`.
pub async fn release_claims(
    c: &mut Conn,
    tenant: &TenantId,
    run: &RunId,
    target: &Upn,
) -> Result<u64> {
    let r = sqlx::query(
        "DELETE FROM wipes WHERE tenant_id = $1 AND run_id = $2 AND upn = $3 AND state = $4",
    )
    .bind(tenant.as_str())
    .bind(run.as_str())
    .bind(target.as_str())
    .bind(WipeState::Sending.as_str())
    .execute(&mut *c)
    .await?;
    // Their budget reservations too: nothing was sent.
    sqlx::query("UPDATE budget SET state = $1 WHERE run_id = $2 AND upn = $3 AND state = $4")
        .bind(BudgetState::Released.as_str())
        .bind(run.as_str())
        .bind(target.as_str())
        .bind(BudgetState::Reserved.as_str())
        .execute(&mut *c)
        .await?;
    Ok(r.rows_affected())
}

/// After Exchange accepted the wipe: the ledger and the run's device row, together.
pub async fn wipe_requested(c: &mut Conn, tenant: &TenantId, d: &DeviceRecord) -> Result<()> {
    let mut tx = c.begin().await?;
    sqlx::query(
        "UPDATE wipes SET state = $1, requested_at = $2 WHERE tenant_id = $3 AND guid = $4 AND run_id = $5",
    )
    .bind(WipeState::Requested.as_str())
    .bind(d.requested_at.unwrap_or_else(now_ms))
    .bind(tenant.as_str())
    .bind(d.guid.as_str())
    .bind(d.run_id.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE budget SET state = $1 WHERE run_id = $2 AND guid = $3")
        .bind(BudgetState::Used.as_str())
        .bind(d.run_id.as_str())
        .bind(d.guid.as_str())
        .execute(&mut *tx)
        .await?;
    put_device_tx(&mut tx, d).await?;
    tx.commit().await?;
    Ok(())
}

/// Exchange refused the wipe: release the claim so a later run may try.
pub async fn release_wipe(
    c: &mut Conn,
    tenant: &TenantId,
    guid: &DeviceGuid,
    run: &RunId,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM wipes WHERE tenant_id = $1 AND guid = $2 AND run_id = $3 AND state = $4",
    )
    .bind(tenant.as_str())
    .bind(guid.as_str())
    .bind(run.as_str())
    .bind(WipeState::Sending.as_str())
    .execute(&mut *c)
    .await?;
    sqlx::query("UPDATE budget SET state = $1 WHERE run_id = $2 AND guid = $3 AND state = $4")
        .bind(BudgetState::Released.as_str())
        .bind(run.as_str())
        .bind(guid.as_str())
        .bind(BudgetState::Reserved.as_str())
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn wipe_acknowledged(
    c: &mut Conn,
    tenant: &TenantId,
    run: &RunId,
    guid: &DeviceGuid,
    at: i64,
) -> Result<()> {
    let mut tx = c.begin().await?;
    sqlx::query(
        "UPDATE wipes SET state = $1, acked_at = $2 WHERE tenant_id = $3 AND guid = $4 AND run_id = $5",
    )
    .bind(WipeState::Acknowledged.as_str())
    .bind(at)
    .bind(tenant.as_str())
    .bind(guid.as_str())
    .bind(run.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE devices SET acked_at = $1, verify = $2, updated_at = $3 WHERE run_id = $4 AND guid = $5",
    )
    .bind(at)
    .bind(Verification::Acknowledged.as_str())
    .bind(now_ms())
    .bind(run.as_str())
    .bind(guid.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn wipe_cancelled(
    c: &mut Conn,
    tenant: &TenantId,
    run: &RunId,
    guid: &DeviceGuid,
    by: &str,
) -> Result<()> {
    let mut tx = c.begin().await?;
    sqlx::query("UPDATE wipes SET state = $1 WHERE tenant_id = $2 AND guid = $3 AND run_id = $4")
        .bind(WipeState::Cancelled.as_str())
        .bind(tenant.as_str())
        .bind(guid.as_str())
        .bind(run.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE devices SET outcome = $1, reason = $2, verify = NULL, updated_at = $3 WHERE run_id = $4 AND guid = $5",
    )
    .bind(DeviceOutcome::Cancelled.as_str())
    .bind(format!("wipe request cancelled by {by}"))
    .bind(now_ms())
    .bind(run.as_str())
    .bind(guid.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Wipe requests (any run, any tenant) since `since`: the hourly budget.
pub async fn wipes_since(c: &mut Conn, since: i64) -> Result<i64> {
    let row =
        sqlx::query("SELECT COUNT(*) AS n FROM wipes WHERE requested_at >= $1 AND state <> $2")
            .bind(since)
            .bind(WipeState::Cancelled.as_str())
            .fetch_one(&mut *c)
            .await?;
    Ok(row.try_get("n")?)
}

/// Every ledger row of a tenant (tests and operators).
pub async fn ledger(c: &mut Conn, tenant: &TenantId) -> Result<Vec<LedgerRow>> {
    let rows =
        sqlx::query("SELECT guid, run_id, state FROM wipes WHERE tenant_id = $1 ORDER BY guid")
            .bind(tenant.as_str())
            .fetch_all(&mut *c)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(LedgerRow {
                guid: parsed(r, "guid")?,
                run_id: parsed(r, "run_id")?,
                state: parsed(r, "state")?,
            })
        })
        .collect()
}
