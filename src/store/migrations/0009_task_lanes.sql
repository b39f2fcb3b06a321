-- Each task's lane: the upstream its worker slots are for (`Lane`:
-- 'exchange' for contain, verify, cancel and block; 'arm_graph' for
-- resolve, entities, comment, expire and account). A lane's claim and its
-- next-due read only that lane's ready tasks, through these two indexes.
-- Before them, both read every ready task of both lanes, the waiting
-- follow-ups (one verify per run awaiting its phone) included: a claim that
-- found nothing, which the worker makes whenever a lane has a free slot,
-- cost more with every run in flight (a 2,000-user storm: 15,000 empty
-- claims of 1.1 ms and 11,000 next-due reads of 1.5 ms; issue 15).
ALTER TABLE tasks ADD COLUMN lane TEXT NOT NULL DEFAULT 'exchange';
UPDATE tasks SET lane = 'arm_graph' WHERE kind IN ('resolve', 'entities', 'comment', 'expire', 'account');
CREATE INDEX IF NOT EXISTS tasks_lane_claim ON tasks (state, lane, seq, not_before, created_at);
CREATE INDEX IF NOT EXISTS tasks_lane_due ON tasks (state, lane, not_before);
-- The claim of every lane at once (tests drain the queue with it) sorts
-- its ready tasks; no index is kept for it.
DROP INDEX IF EXISTS tasks_claim;
-- A run's incident is matched without regard to case (ARM ids are
-- case-insensitive): the record's count of comments already written on the
-- incident, and the runs of an incident, read `lower(incident_arm_id)`,
-- which `runs_incident` cannot answer; each read every run in the store
-- (1.8 ms a comment at 2,000 runs, growing with the store).
CREATE INDEX IF NOT EXISTS runs_incident_lower ON runs (lower(incident_arm_id), created_at);
