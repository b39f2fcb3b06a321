-- The guard against wipehook becoming a wipe button: the destructive budget
-- (one reservation per device of a run, taken before its wipe is sent, under
-- the lock of the guard row, so parallel slots and replicas never overshoot),
-- the kill switch (the guard row itself), approvals (two-person rule) and the
-- audit trail; the identity that caused a run (self-approval is refused).
CREATE TABLE IF NOT EXISTS budget (
    run_id TEXT NOT NULL,
    guid TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    upn TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, guid)
);
CREATE INDEX IF NOT EXISTS budget_window ON budget (created_at);
CREATE TABLE IF NOT EXISTS guard (
    scope TEXT PRIMARY KEY,
    engaged BIGINT NOT NULL,
    engaged_by TEXT,
    engaged_at BIGINT,
    reason TEXT,
    engaged_tenant TEXT
);
INSERT INTO guard (scope, engaged) VALUES ('service', 0) ON CONFLICT (scope) DO NOTHING;
CREATE TABLE IF NOT EXISTS approvals (
    run_id TEXT NOT NULL,
    approver_oid TEXT NOT NULL,
    approver TEXT NOT NULL,
    at BIGINT NOT NULL,
    consumed BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, approver_oid)
);
CREATE TABLE IF NOT EXISTS audit (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    tenant_id TEXT,
    actor TEXT NOT NULL,
    actor_oid TEXT NOT NULL,
    action TEXT NOT NULL,
    run_id TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
ALTER TABLE runs ADD COLUMN caller_oid TEXT;
