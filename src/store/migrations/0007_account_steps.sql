-- Containment beyond the wipe: device triage (with its reason) and the
-- block of a suspected attacker device; the incident's first activity and
-- whether Defender's attack disruption acted; account steps through Graph:
-- a ledger per (tenant, person, step) across runs (one step per person,
-- never repeated unless forced) and each run's view of its steps; the
-- device blocks wipehook added (undone only by their run's cancel).
-- (Version 6 is left to the fault-tolerance work.)
ALTER TABLE devices ADD COLUMN triage TEXT;
ALTER TABLE devices ADD COLUMN triage_reason TEXT;
ALTER TABLE devices ADD COLUMN blocked_at BIGINT;
ALTER TABLE runs ADD COLUMN first_activity_at BIGINT;
ALTER TABLE runs ADD COLUMN attack_disruption BIGINT;
CREATE TABLE IF NOT EXISTS account_ledger (
    tenant_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    step TEXT NOT NULL,
    run_id TEXT NOT NULL,
    upn TEXT NOT NULL,
    state TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, object_id, step)
);
CREATE TABLE IF NOT EXISTS user_steps (
    run_id TEXT NOT NULL,
    upn TEXT NOT NULL,
    step TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    relies_on TEXT,
    at BIGINT NOT NULL,
    PRIMARY KEY (run_id, upn, step)
);
CREATE TABLE IF NOT EXISTS device_blocks (
    tenant_id TEXT NOT NULL,
    upn TEXT NOT NULL,
    device_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, upn, device_id)
);
