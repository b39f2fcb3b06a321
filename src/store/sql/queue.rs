// The durable task queue: claim under a lease, renew, complete, fail with a
// retry time or give up, enqueue (or re-mark a running task dirty).

fn task_from_row(r: &DbRow, owner: &str) -> Result<Task> {
    let kind: String = r.try_get("kind")?;
    let arg: String = r.try_get("arg")?;
    Ok(Task {
        id: TaskId::from_stored(r.try_get("id")?),
        run_id: parsed(r, "run_id")?,
        tenant: parsed(r, "tenant_id")?,
        job: Job::from_stored(&kind, &arg).map_err(anyhow::Error::msg)?,
        attempts: r.try_get("attempts")?,
        owner: owner.to_string(),
    })
}

/// The claim statement, for every task (`None`) or one lane's kinds, with
/// `skip` tenants left out.
pub fn claim_sql(lane: Option<Lane>, skip: usize) -> String {
    let lock = LOCK;
    let first_skip = 5 + usize::from(lane.is_some());
    let kinds = format!(
        "{}{}",
        lane_filter(lane, 5),
        tenants_filter(skip, first_skip)
    );
    format!(
        "UPDATE tasks SET lease_owner = $1, lease_until = $2, attempts = attempts + 1, dirty = 0, updated_at = $3
         WHERE id = (SELECT id FROM tasks WHERE state = $4 AND not_before <= $3 AND (lease_until IS NULL OR lease_until < $3){kinds}
                     ORDER BY seq, not_before, created_at LIMIT 1 {lock})
         RETURNING id, run_id, tenant_id, kind, arg, attempts"
    )
}

/// Claim the next ready task (of one lane, or of any). Order: `seq` first,
/// so the first target of a new run goes before the 200th target of an
/// older one (fair across runs).
pub async fn claim(
    c: &mut Conn,
    owner: &str,
    lease: Duration,
    lane: Option<Lane>,
    skip: &[TenantId],
) -> Result<Option<Task>> {
    let now = now_ms();
    let sql = claim_sql(lane, skip.len());
    loop {
        let mut q = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(owner)
            .bind(now + lease.as_millis() as i64)
            .bind(now)
            .bind(TaskState::Ready.as_str());
        q = bind_filters(q, lane, skip);
        let row = q.fetch_optional(&mut *c).await?;
        let Some(r) = row else { return Ok(None) };
        match task_from_row(&r, owner) {
            Ok(t) => return Ok(Some(t)),
            // A row no version of wipehook could act on: given up, said why,
            // and the next one claimed (it would otherwise be re-leased forever).
            Err(e) => {
                let id: String = r.try_get("id")?;
                sqlx::query(
                    "UPDATE tasks SET state = $1, last_error = $2, lease_owner = NULL, lease_until = NULL WHERE id = $3",
                )
                .bind(TaskState::Dead.as_str())
                .bind(truncate(&format!("unreadable task: {e:#}"), 2000))
                .bind(&id)
                .execute(&mut *c)
                .await?;
            }
        }
    }
}

/// Extend a lease; false when this owner lost it.
pub async fn renew(c: &mut Conn, task: &Task, lease: Duration) -> Result<bool> {
    let r = sqlx::query("UPDATE tasks SET lease_until = $1 WHERE id = $2 AND lease_owner = $3")
        .bind(now_ms() + lease.as_millis() as i64)
        .bind(task.id.as_str())
        .bind(&task.owner)
        .execute(&mut *c)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// ` AND lane = $first` for one lane (the indexes `tasks_lane_claim` and
/// `tasks_lane_due` start with it); nothing for every task.
fn lane_filter(lane: Option<Lane>, first: usize) -> String {
    match lane {
        None => String::new(),
        Some(_) => format!(" AND lane = ${first}"),
    }
}

/// Bind what `lane_filter` and `tenants_filter` asked for, in that order.
fn bind_filters<'q>(
    mut q: sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>,
    lane: Option<Lane>,
    skip: &'q [TenantId],
) -> sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments> {
    if let Some(l) = lane {
        q = q.bind(l.as_str());
    }
    for t in skip {
        q = q.bind(t.as_str());
    }
    q
}

/// ` AND tenant_id NOT IN ($first, ...)` for `n` tenants; nothing for none.
fn tenants_filter(n: usize, first: usize) -> String {
    if n == 0 {
        return String::new();
    }
    format!(
        " AND tenant_id NOT IN ({})",
        (0..n)
            .map(|i| format!("${}", i + first))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// When a ready task can next be claimed (for the worker's sleep).
///
/// Of every lane (`None`, the tests' drain): the earliest `not_before`, or
/// the end of a lease while another worker holds the task.
///
/// Of one lane (the worker, whose claim in that lane found nothing due at
/// the instant given; `skip` tenants left out): the earliest `not_before`
/// after that instant of a task no worker holds, one step down
/// `tasks_lane_due`. A task claimed since that instant (a record handed on
/// by `complete_handing_over`, say) is held, and is not a reason to claim
/// again. A lease another worker holds ends in a claim at the worker's idle
/// poll (what a crashed replica leaves), and a tenant's share freeing wakes
/// the worker itself; neither is read here, so this stays one index seek
/// (past the few tasks claimed since) however many tasks wait.
pub async fn next_due(
    c: &mut Conn,
    lane: Option<(Lane, i64)>,
    skip: &[TenantId],
) -> Result<Option<i64>> {
    let since = lane.map_or_else(now_ms, |(_, at)| at);
    let lane = lane.map(|(l, _)| l);
    let sql = match lane {
        None => format!(
            "SELECT MIN(CASE WHEN lease_until IS NULL OR lease_until < $1 THEN not_before ELSE lease_until END) AS t
             FROM tasks WHERE state = $2{}",
            tenants_filter(skip.len(), 3)
        ),
        Some(_) => format!(
            "SELECT MIN(not_before) AS t FROM tasks WHERE state = $2{} AND not_before > $1{}
             AND (lease_until IS NULL OR lease_until < ${})",
            lane_filter(lane, 3),
            tenants_filter(skip.len(), 4),
            4 + skip.len()
        ),
    };
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(since)
        .bind(TaskState::Ready.as_str());
    q = bind_filters(q, lane, skip);
    if lane.is_some() {
        q = q.bind(now_ms());
    }
    let row = q.fetch_one(&mut *c).await?;
    Ok(row.try_get::<Option<i64>, _>("t")?)
}

/// Tasks some worker is running now (an unexpired lease).
pub async fn in_flight(c: &mut Conn) -> Result<i64> {
    Ok(
        sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE state = $1 AND lease_until >= $2")
            .bind(TaskState::Ready.as_str())
            .bind(now_ms())
            .fetch_one(&mut *c)
            .await?
            .try_get("n")?,
    )
}

/// Ready work tasks of a run (contain, resolve, entities).
async fn pending_work(c: &mut Conn, run: &RunId) -> Result<i64> {
    let [a, b, w] = TaskKind::WORK;
    Ok(sqlx::query(
        "SELECT COUNT(*) AS n FROM tasks WHERE run_id = $1 AND state = $2 AND kind IN ($3, $4, $5)",
    )
    .bind(run.as_str())
    .bind(TaskState::Ready.as_str())
    .bind(a.as_str())
    .bind(b.as_str())
    .bind(w.as_str())
    .fetch_one(&mut *c)
    .await?
    .try_get("n")?)
}

/// Finish a task. A task marked dirty while it ran goes back to ready.
/// For work tasks, the run is finalised when its last work task ends.
pub async fn complete(
    c: &mut Conn,
    task: &Task,
    hold_expiry: Duration,
    hand_over: Option<Duration>,
) -> Result<(Option<RunStatus>, Option<Task>)> {
    let now = now_ms();
    let mut tx = c.begin().await?;
    lock_run(&mut tx, &task.run_id, now).await?;
    sqlx::query(
        "UPDATE tasks SET state = CASE WHEN dirty = 1 THEN $1 ELSE $2 END, lease_owner = NULL, lease_until = NULL, last_error = NULL, updated_at = $3
         WHERE id = $4 AND lease_owner = $5",
    )
    .bind(TaskState::Ready.as_str())
    .bind(TaskState::Done.as_str())
    .bind(now)
    .bind(task.id.as_str())
    .bind(&task.owner)
    .execute(&mut *tx)
    .await?;
    let finished = finalize_if_done(&mut tx, &task.run_id, now, hold_expiry).await?;
    if finished.is_none()
        && matches!(task.job.kind(), TaskKind::Contain | TaskKind::Resolve)
        && known_users_decided(&mut tx, &task.run_id).await?
    {
        // Containment of the users the run knows has ended: the record is
        // written now, not when the incident's re-read ends.
        enqueue_tx(&mut tx, &task.run_id, &task.tenant, &Job::Comment, 0, now).await?;
    }
    // The run's record, due now and claimed by no one, handed straight to
    // this worker in the same commit (no second claim, no wake-up).
    let next = if let Some(lease) = hand_over.filter(|_| task.job.kind() != TaskKind::Comment) {
        let lease_until = now + lease.as_millis() as i64;
        let row = sqlx::query(
            "UPDATE tasks SET lease_owner = $1, lease_until = $2, attempts = attempts + 1, dirty = 0, updated_at = $3
             WHERE run_id = $4 AND kind = $5 AND arg = '' AND state = $6 AND not_before <= $3 AND (lease_until IS NULL OR lease_until < $3)
             RETURNING id, run_id, tenant_id, kind, arg, attempts",
        )
        .bind(&task.owner)
        .bind(lease_until)
        .bind(now)
        .bind(task.run_id.as_str())
        .bind(TaskKind::Comment.as_str())
        .bind(TaskState::Ready.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        row.map(|r| task_from_row(&r, &task.owner)).transpose()?
    } else {
        None
    };
    tx.commit().await?;
    Ok((finished, next))
}

/// No contain or resolve task of the run is ready: every user it knows is decided.
async fn known_users_decided(tx: &mut Tx<'_>, run: &RunId) -> Result<bool> {
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM tasks WHERE run_id = $1 AND state = $2 AND kind IN ($3, $4)",
    )
    .bind(run.as_str())
    .bind(TaskState::Ready.as_str())
    .bind(TaskKind::Contain.as_str())
    .bind(TaskKind::Resolve.as_str())
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?;
    Ok(n == 0)
}

/// Record a failed attempt: retry at `retry_at`, or give up after `max`.
/// Returns true when the task was given up (dead).
pub async fn fail(
    c: &mut Conn,
    task: &Task,
    error: &str,
    retry_at: i64,
    max: Option<u32>,
    hold_expiry: Duration,
) -> Result<bool> {
    let now = now_ms();
    let dead = max.is_some_and(|m| task.attempts >= m as i64);
    let mut tx = c.begin().await?;
    lock_run(&mut tx, &task.run_id, now).await?;
    sqlx::query(
        "UPDATE tasks SET state = $1, not_before = $2, last_error = $3, lease_owner = NULL, lease_until = NULL, updated_at = $4
         WHERE id = $5 AND lease_owner = $6",
    )
    .bind(if dead { TaskState::Dead } else { TaskState::Ready }.as_str())
    .bind(retry_at)
    .bind(truncate(error, 2000))
    .bind(now)
    .bind(task.id.as_str())
    .bind(&task.owner)
    .execute(&mut *tx)
    .await?;
    if dead {
        finalize_if_done(&mut tx, &task.run_id, now, hold_expiry).await?;
    }
    tx.commit().await?;
    Ok(dead)
}

/// Clear every lease (SQLite start-up only: the previous process is gone).
/// The interrupted attempt stays counted.
#[allow(dead_code)] // compiled for both backends, called for SQLite only
pub async fn reclaim_all(c: &mut Conn) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE tasks SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL AND state = $1",
    )
    .bind(TaskState::Ready.as_str())
    .execute(&mut *c)
    .await?;
    Ok(r.rows_affected())
}

/// Give back every lease of this owner (graceful shutdown).
pub async fn release_all(c: &mut Conn, owner: &str) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE tasks SET lease_owner = NULL, lease_until = NULL, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END WHERE lease_owner = $1 AND state = $2",
    )
    .bind(owner)
    .bind(TaskState::Ready.as_str())
    .execute(&mut *c)
    .await?;
    Ok(r.rows_affected())
}

/// Enqueue a task, or mark the existing one dirty so it runs again.
pub async fn enqueue(
    c: &mut Conn,
    run: &RunId,
    tenant: &TenantId,
    job: &Job,
    not_before: i64,
) -> Result<()> {
    let mut tx = c.begin().await?;
    // Follow-up polls of Exchange go after every run's containment work.
    let seq = if job.kind() == TaskKind::Verify {
        1_000_000
    } else {
        0
    };
    enqueue_tx(&mut tx, run, tenant, job, seq, not_before).await?;
    tx.commit().await?;
    Ok(())
}

async fn enqueue_tx(
    tx: &mut Tx<'_>,
    run: &RunId,
    tenant: &TenantId,
    job: &Job,
    seq: i64,
    not_before: i64,
) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO tasks (id, run_id, tenant_id, kind, arg, seq, state, dirty, not_before, attempts, created_at, updated_at, lane)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, 0, $9, $9, $10)
         ON CONFLICT (run_id, kind, arg) DO UPDATE SET dirty = 1, state = excluded.state, attempts = 0,
             not_before = CASE WHEN tasks.state = excluded.state AND tasks.not_before < excluded.not_before THEN tasks.not_before ELSE excluded.not_before END,
             updated_at = excluded.updated_at",
    )
    .bind(TaskId::new().as_str())
    .bind(run.as_str())
    .bind(tenant.as_str())
    .bind(job.kind().as_str())
    .bind(job.arg())
    .bind(seq)
    .bind(TaskState::Ready.as_str())
    .bind(not_before)
    .bind(now)
    .bind(job.kind().lane().as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Reschedule the running task itself (verification backoff) and finish it.
pub async fn reschedule(c: &mut Conn, task: &Task, at: i64) -> Result<()> {
    sqlx::query(
        "UPDATE tasks SET state = $1, not_before = $2, lease_owner = NULL, lease_until = NULL, attempts = 0, updated_at = $3 WHERE id = $4 AND lease_owner = $5",
    )
    .bind(TaskState::Ready.as_str())
    .bind(at)
    .bind(now_ms())
    .bind(task.id.as_str())
    .bind(&task.owner)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Pending work tasks of a run, and the errors of given-up ones.
pub async fn task_summary(c: &mut Conn, run: &RunId) -> Result<TaskSummary> {
    let pending_work = pending_work(c, run).await?;
    let rows = sqlx::query(
        "SELECT kind, arg, last_error FROM tasks WHERE run_id = $1 AND state = $2 ORDER BY kind, arg",
    )
    .bind(run.as_str())
    .bind(TaskState::Dead.as_str())
    .fetch_all(&mut *c)
    .await?;
    let mut errors = vec![];
    for r in &rows {
        let kind: String = r.try_get("kind")?;
        let arg: String = r.try_get("arg")?;
        let label = Job::from_stored(&kind, &arg)
            .map(|j| j.label())
            .unwrap_or(arg);
        let e: Option<String> = r.try_get("last_error")?;
        errors.push(format!(
            "{kind}{}{label}: {}",
            if label.is_empty() { "" } else { " " },
            e.unwrap_or_default()
        ));
    }
    Ok(TaskSummary {
        pending_work,
        errors,
    })
}
