// Targets (the users of a run), what could not be resolved, and each
// device's outcome in the run.

const TARGET_COLUMNS: &str =
    "upn, source, state, reason, claims, mailbox_upn, display_name, object_id";

fn target_from_row(r: &DbRow) -> Result<TargetRecord> {
    let claims: Option<String> = r.try_get("claims")?;
    let person = match parsed_opt::<Upn>(r, "mailbox_upn")? {
        Some(upn) => Some(Person {
            upn,
            display_name: r
                .try_get::<Option<String>, _>("display_name")?
                .unwrap_or_default(),
            object_id: r.try_get("object_id")?,
        }),
        None => None,
    };
    Ok(TargetRecord {
        upn: parsed(r, "upn")?,
        source: r.try_get("source")?,
        state: parsed(r, "state")?,
        reason: r.try_get("reason")?,
        claims: match claims {
            Some(c) => serde_json::from_str::<Claims>(&c).context("column claims")?,
            None => Claims::default(),
        },
        person,
    })
}

/// The targets of a run, in the order they were found.
pub async fn targets(c: &mut Conn, run: &RunId) -> Result<Vec<TargetRecord>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {TARGET_COLUMNS} FROM targets WHERE run_id = $1 ORDER BY seq, upn"
    )))
    .bind(run.as_str())
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(target_from_row).collect()
}

pub async fn target(c: &mut Conn, run: &RunId, upn: &Upn) -> Result<Option<TargetRecord>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {TARGET_COLUMNS} FROM targets WHERE run_id = $1 AND upn = $2"
    )))
    .bind(run.as_str())
    .bind(upn.as_str())
    .fetch_optional(&mut *c)
    .await?;
    row.as_ref().map(target_from_row).transpose()
}

/// Insert a target unless the run already has one for this address; true when inserted.
async fn insert_target(tx: &mut Tx<'_>, run: &RunId, t: &NewTarget, seq: i64) -> Result<bool> {
    let claims = (!t.claims.is_empty())
        .then(|| serde_json::to_string(&t.claims))
        .transpose()?;
    let r = sqlx::query(
        "INSERT INTO targets (run_id, upn, source, state, reason, seq, claims) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id, upn) DO NOTHING",
    )
    .bind(run.as_str())
    .bind(t.upn.as_str())
    .bind(&t.source)
    .bind(t.state.as_str())
    .bind(&t.reason)
    .bind(seq)
    .bind(claims)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Add targets found after intake (ARM entities, Graph look-ups), with a
/// contain task for each pending one; known addresses are left alone. With
/// `max_targets` (an unapproved run), pending targets beyond it are held.
/// Returns the addresses actually added.
pub async fn add_targets(
    c: &mut Conn,
    run: &RunId,
    tenant: &TenantId,
    targets: &[NewTarget],
    unresolved: &[Unresolved],
    max_targets: Option<usize>,
) -> Result<Vec<Upn>> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    lock_run(&mut tx, run, now).await?;
    let rows = sqlx::query("SELECT state FROM targets WHERE run_id = $1")
        .bind(run.as_str())
        .fetch_all(&mut *tx)
        .await?;
    let mut seq = rows.len() as i64;
    // The blast radius, decided under the run's row lock: concurrent
    // entity reads and look-ups cannot both slip under the limit.
    let mut eligible = 0;
    let mut held = false;
    for r in &rows {
        let s: TargetState = parsed(r, "state")?;
        eligible += s.counts_for_blast_radius() as usize;
        held |= s == TargetState::Held;
    }
    let mut added = vec![];
    for t in targets {
        let mut t = t.clone();
        if let Some(max) = max_targets
            && t.state == TargetState::Pending
            && (held || eligible + 1 > max)
        {
            t.state = TargetState::Held;
            t.reason = Some(format!(
                "blast radius: more than policy.max_targets_per_run = {max} users; approval required"
            ));
        }
        if insert_target(&mut tx, run, &t, seq).await? {
            if t.state == TargetState::Pending {
                let job = Job::Contain { upn: t.upn.clone() };
                enqueue_tx(&mut tx, run, tenant, &job, seq, now).await?;
            }
            if matches!(t.state, TargetState::Pending | TargetState::Held) {
                eligible += 1;
            }
            added.push(t.upn.clone());
            seq += 1;
        }
    }
    for u in unresolved {
        insert_unresolved(&mut tx, run, u).await?;
    }
    tx.commit().await?;
    Ok(added)
}

pub async fn set_target(
    c: &mut Conn,
    run: &RunId,
    upn: &Upn,
    state: TargetState,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE targets SET state = $1, reason = $2 WHERE run_id = $3 AND upn = $4")
        .bind(state.as_str())
        .bind(reason)
        .bind(run.as_str())
        .bind(upn.as_str())
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Move a target from `from` to `to`; false when it was no longer in `from`
/// (cancelled or decided meanwhile).
pub async fn move_target(
    c: &mut Conn,
    run: &RunId,
    upn: &Upn,
    from: TargetState,
    to: TargetState,
    reason: Option<&str>,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE targets SET state = $1, reason = $2 WHERE run_id = $3 AND upn = $4 AND state = $5",
    )
    .bind(to.as_str())
    .bind(reason)
    .bind(run.as_str())
    .bind(upn.as_str())
    .bind(from.as_str())
    .execute(&mut *c)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Record the person a target's address resolved to.
pub async fn set_target_person(
    c: &mut Conn,
    run: &RunId,
    upn: &Upn,
    p: &DirectoryUser,
) -> Result<()> {
    sqlx::query(
        "UPDATE targets SET mailbox_upn = $1, display_name = $2, object_id = $3 WHERE run_id = $4 AND upn = $5",
    )
    .bind(p.upn.as_str())
    .bind(truncate(&p.display_name, 256))
    .bind(&p.object_id)
    .bind(run.as_str())
    .bind(upn.as_str())
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Many runs' targets in a constant number of statements (intake).
async fn insert_targets(tx: &mut Tx<'_>, targets: &[(&RunId, &NewTarget, i64)]) -> Result<()> {
    for chunk in targets.chunks(ROWS_PER_STATEMENT) {
        let mut claims = Vec::with_capacity(chunk.len());
        for (_, t, _) in chunk {
            claims.push(
                (!t.claims.is_empty())
                    .then(|| serde_json::to_string(&t.claims))
                    .transpose()?,
            );
        }
        let mut q = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO targets (run_id, upn, source, state, reason, seq, claims) ",
        );
        q.push_values(
            chunk.iter().zip(claims),
            |mut b, ((run, t, seq), claims)| {
                b.push_bind(run.as_str())
                    .push_bind(t.upn.as_str())
                    .push_bind(t.source.as_str())
                    .push_bind(t.state.as_str())
                    .push_bind(t.reason.as_deref())
                    .push_bind(*seq)
                    .push_bind(claims);
            },
        );
        q.push(" ON CONFLICT (run_id, upn) DO NOTHING");
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Many runs' unresolved entities in a constant number of statements (intake).
async fn insert_unresolved_rows(tx: &mut Tx<'_>, rows: &[(&RunId, &Unresolved)]) -> Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q =
            sqlx::QueryBuilder::<Db>::new("INSERT INTO unresolved (run_id, entity, reason) ");
        q.push_values(chunk, |mut b, (run, u)| {
            b.push_bind(run.as_str())
                .push_bind(truncate(&u.entity, 500))
                .push_bind(truncate(&u.reason, 1000));
        });
        q.push(" ON CONFLICT (run_id, entity) DO NOTHING");
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_unresolved(tx: &mut Tx<'_>, run: &RunId, u: &Unresolved) -> Result<()> {
    sqlx::query(
        "INSERT INTO unresolved (run_id, entity, reason) VALUES ($1, $2, $3) ON CONFLICT (run_id, entity) DO NOTHING",
    )
    .bind(run.as_str())
    .bind(truncate(&u.entity, 500))
    .bind(truncate(&u.reason, 1000))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn add_unresolved(c: &mut Conn, run: &RunId, u: &Unresolved) -> Result<()> {
    let mut tx = c.begin().await?;
    insert_unresolved(&mut tx, run, u).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn unresolved(c: &mut Conn, run: &RunId) -> Result<Vec<Unresolved>> {
    let rows =
        sqlx::query("SELECT entity, reason FROM unresolved WHERE run_id = $1 ORDER BY entity")
            .bind(run.as_str())
            .fetch_all(&mut *c)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(Unresolved {
                entity: r.try_get("entity")?,
                reason: r.try_get("reason")?,
            })
        })
        .collect()
}

// -------------------------------------------------------------- devices

fn device_from_row(r: &DbRow) -> Result<DeviceRecord> {
    let flags: Option<String> = r.try_get("flags")?;
    let prior = match parsed_opt::<RunId>(r, "prior_run_id")? {
        Some(run_id) => Some(PriorWipe {
            run_id,
            at: r.try_get::<Option<i64>, _>("prior_at")?.unwrap_or_default(),
            state: parsed_opt(r, "prior_state")?,
        }),
        None => None,
    };
    Ok(DeviceRecord {
        run_id: parsed(r, "run_id")?,
        upn: parsed(r, "upn")?,
        guid: parsed(r, "guid")?,
        device_id: r.try_get("device_id")?,
        device_type: r.try_get("device_type")?,
        model: r.try_get("model")?,
        os: r.try_get("os")?,
        client_type: ClientType::parse(&r.try_get::<String, _>("client_type")?),
        client_version: r.try_get("client_version")?,
        outcome: parsed(r, "outcome")?,
        reason: r.try_get("reason")?,
        notes: flags
            .map(|f| {
                f.split('\n')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        requested_at: r.try_get("requested_at")?,
        acked_at: r.try_get("acked_at")?,
        verification: parsed_opt(r, "verify")?,
        prior,
        skip_cause: parsed_opt(r, "skip_cause")?,
        verify_until: r.try_get("verify_until")?,
        triage: parsed_opt(r, "triage")?,
        triage_reason: r.try_get("triage_reason")?,
        blocked_at: r.try_get("blocked_at")?,
    })
}

pub async fn device(c: &mut Conn, run: &RunId, guid: &DeviceGuid) -> Result<Option<DeviceRecord>> {
    let row = sqlx::query("SELECT * FROM devices WHERE run_id = $1 AND guid = $2")
        .bind(run.as_str())
        .bind(guid.as_str())
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(device_from_row).transpose()
}

pub async fn devices(c: &mut Conn, run: &RunId) -> Result<Vec<DeviceRecord>> {
    let rows = sqlx::query("SELECT * FROM devices WHERE run_id = $1 ORDER BY upn, guid")
        .bind(run.as_str())
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(device_from_row).collect()
}

/// One user's devices in a run.
pub async fn devices_of(c: &mut Conn, run: &RunId, upn: &Upn) -> Result<Vec<DeviceRecord>> {
    let rows = sqlx::query("SELECT * FROM devices WHERE run_id = $1 AND upn = $2 ORDER BY guid")
        .bind(run.as_str())
        .bind(upn.as_str())
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

async fn put_device_tx(tx: &mut Tx<'_>, d: &DeviceRecord) -> Result<()> {
    let flags = (!d.notes.is_empty()).then(|| d.notes.join("\n"));
    sqlx::query(
        "INSERT INTO devices (run_id, upn, guid, device_id, device_type, model, os, client_type, client_version, outcome, reason, flags, requested_at, acked_at, verify, prior_run_id, prior_at, updated_at, prior_state, skip_cause, verify_until, triage, triage_reason, blocked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)
         ON CONFLICT (run_id, guid) DO UPDATE SET outcome = excluded.outcome, reason = excluded.reason, flags = excluded.flags,
             requested_at = excluded.requested_at, acked_at = excluded.acked_at, verify = excluded.verify,
             prior_run_id = excluded.prior_run_id, prior_at = excluded.prior_at, updated_at = excluded.updated_at,
             prior_state = excluded.prior_state, skip_cause = excluded.skip_cause, verify_until = excluded.verify_until,
             triage = excluded.triage, triage_reason = excluded.triage_reason, blocked_at = excluded.blocked_at",
    )
    .bind(d.run_id.as_str())
    .bind(d.upn.as_str())
    .bind(d.guid.as_str())
    .bind(&d.device_id)
    .bind(&d.device_type)
    .bind(&d.model)
    .bind(&d.os)
    .bind(d.client_type.as_str())
    .bind(&d.client_version)
    .bind(d.outcome.as_str())
    .bind(&d.reason)
    .bind(flags)
    .bind(d.requested_at)
    .bind(d.acked_at)
    .bind(d.verification.map(|v| v.as_str()))
    .bind(d.prior.as_ref().map(|p| p.run_id.as_str()))
    .bind(d.prior.as_ref().map(|p| p.at))
    .bind(now_ms())
    .bind(d.prior.as_ref().and_then(|p| p.state).map(|s| s.as_str()))
    .bind(d.skip_cause.map(|c| c.as_str()))
    .bind(d.verify_until)
    .bind(d.triage.map(|t| t.as_str()))
    .bind(&d.triage_reason)
    .bind(d.blocked_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn set_verify(
    c: &mut Conn,
    run: &RunId,
    guid: &DeviceGuid,
    v: Verification,
) -> Result<()> {
    sqlx::query("UPDATE devices SET verify = $1, updated_at = $2 WHERE run_id = $3 AND guid = $4")
        .bind(v.as_str())
        .bind(now_ms())
        .bind(run.as_str())
        .bind(guid.as_str())
        .execute(&mut *c)
        .await?;
    Ok(())
}
