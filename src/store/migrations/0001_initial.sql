-- wipehook schema, version 1. One text for SQLite and PostgreSQL: only TEXT and
-- BIGINT columns, times as Unix milliseconds. Idempotent (IF NOT EXISTS): a
-- store created before the version table existed is recorded as version 1.
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    incident_arm_id TEXT,
    incident_number BIGINT,
    incident_title TEXT,
    severity TEXT,
    trigger_kind TEXT NOT NULL,
    caller TEXT NOT NULL,
    mode TEXT NOT NULL,
    force BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    reason TEXT,
    approved_by TEXT,
    approved_at BIGINT,
    cancelled_by TEXT,
    cancelled_at BIGINT,
    comment_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX IF NOT EXISTS runs_incident ON runs (incident_arm_id, created_at);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, finished_at);

CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_created ON deliveries (created_at);

CREATE TABLE IF NOT EXISTS targets (
    run_id TEXT NOT NULL,
    upn TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    seq BIGINT NOT NULL,
    PRIMARY KEY (run_id, upn)
);

CREATE TABLE IF NOT EXISTS unresolved (
    run_id TEXT NOT NULL,
    entity TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (run_id, entity)
);

CREATE TABLE IF NOT EXISTS devices (
    run_id TEXT NOT NULL,
    upn TEXT NOT NULL,
    guid TEXT NOT NULL,
    device_id TEXT NOT NULL,
    device_type TEXT NOT NULL,
    model TEXT NOT NULL,
    os TEXT NOT NULL,
    client_type TEXT NOT NULL,
    client_version TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    flags TEXT,
    requested_at BIGINT,
    acked_at BIGINT,
    verify TEXT,
    prior_run_id TEXT,
    prior_at BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, guid)
);

-- One row per device ever wiped by wipehook: device-level idempotency across runs.
CREATE TABLE IF NOT EXISTS wipes (
    tenant_id TEXT NOT NULL,
    guid TEXT NOT NULL,
    run_id TEXT NOT NULL,
    upn TEXT NOT NULL,
    state TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    acked_at BIGINT,
    PRIMARY KEY (tenant_id, guid)
);
CREATE INDEX IF NOT EXISTS wipes_requested ON wipes (requested_at);

-- The durable work queue.
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    arg TEXT NOT NULL,
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    dirty BIGINT NOT NULL DEFAULT 0,
    not_before BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_owner TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (run_id, kind, arg)
);
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks (state, not_before);
CREATE INDEX IF NOT EXISTS tasks_run ON tasks (run_id);
