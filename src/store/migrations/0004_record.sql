-- The append-only record on the incident (one comment per phase, written
-- once), and what the verdict needs: why a device was skipped, the earlier
-- wipe's state, until when a phone is followed, until when a hold lasts.
ALTER TABLE devices ADD COLUMN skip_cause TEXT;
ALTER TABLE devices ADD COLUMN prior_state TEXT;
ALTER TABLE devices ADD COLUMN verify_until BIGINT;
ALTER TABLE runs ADD COLUMN hold_until BIGINT;
ALTER TABLE runs ADD COLUMN provider_incident_id TEXT;
ALTER TABLE runs ADD COLUMN comments_baseline BIGINT;
CREATE TABLE IF NOT EXISTS records (
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    comment_id TEXT NOT NULL,
    verdict TEXT NOT NULL,
    facts TEXT NOT NULL,
    text TEXT NOT NULL,
    state TEXT NOT NULL,
    mirror_state TEXT,
    created_at BIGINT NOT NULL,
    written_at BIGINT,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS records_comment ON records (comment_id);
