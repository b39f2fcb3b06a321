// The append-only record on the incident.

fn record_from_row(r: &DbRow) -> Result<RecordRow> {
    let facts: String = r.try_get("facts")?;
    Ok(RecordRow {
        run_id: parsed(r, "run_id")?,
        seq: r.try_get("seq")?,
        comment_id: r.try_get("comment_id")?,
        verdict: parsed::<RunOutcome>(r, "verdict")?,
        facts: serde_json::from_str(&facts).context("column facts")?,
        text: r.try_get("text")?,
        state: parsed::<RecordState>(r, "state")?,
        mirror_state: parsed_opt::<RecordState>(r, "mirror_state")?,
        created_at: r.try_get("created_at")?,
        written_at: r.try_get("written_at")?,
    })
}

pub async fn records(c: &mut Conn, run: &RunId) -> Result<Vec<RecordRow>> {
    let rows = sqlx::query("SELECT * FROM records WHERE run_id = $1 ORDER BY seq")
        .bind(run.as_str())
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(record_from_row).collect()
}

pub async fn begin_record(c: &mut Conn, r: &RecordRow) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO records (run_id, seq, comment_id, verdict, facts, text, state, mirror_state, created_at, written_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL) ON CONFLICT (run_id, seq) DO NOTHING",
    )
    .bind(r.run_id.as_str())
    .bind(r.seq)
    .bind(&r.comment_id)
    .bind(r.verdict.as_str())
    .bind(serde_json::to_string(&r.facts)?)
    .bind(&r.text)
    .bind(r.state.as_str())
    .bind(r.mirror_state.map(|m| m.as_str()))
    .bind(r.created_at)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn mark_record(c: &mut Conn, run: &RunId, seq: i64, state: RecordState) -> Result<()> {
    sqlx::query("UPDATE records SET state = $1, written_at = $2 WHERE run_id = $3 AND seq = $4")
        .bind(state.as_str())
        .bind(now_ms())
        .bind(run.as_str())
        .bind(seq)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn mark_mirror(c: &mut Conn, run: &RunId, seq: i64, state: RecordState) -> Result<()> {
    sqlx::query("UPDATE records SET mirror_state = $1 WHERE run_id = $2 AND seq = $3")
        .bind(state.as_str())
        .bind(run.as_str())
        .bind(seq)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn comments_written_on(c: &mut Conn, incident: &IncidentRef) -> Result<i64> {
    Ok(sqlx::query(
        "SELECT COUNT(*) AS n FROM records r JOIN runs u ON u.id = r.run_id
         WHERE lower(u.incident_arm_id) = lower($1) AND r.state = $2",
    )
    .bind(incident.arm_id())
    .bind(RecordState::Written.as_str())
    .fetch_one(&mut *c)
    .await?
    .try_get("n")?)
}
