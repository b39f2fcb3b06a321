-- Cost that stays flat as the store grows (issue 15). The worker's claim
-- orders the ready tasks by (seq, not_before, created_at): with this index
-- it reads them in that order and stops at the first claimable one, instead
-- of sorting every ready task on each claim (a 5,000-user storm has 5,000
-- ready at once). Finished runs (a million in 90 days) are never read by
-- the claim: done tasks are outside the `state = 'ready'` prefix. Retention
-- finds the runs past their age by `finished_at` instead of reading them all.
CREATE INDEX IF NOT EXISTS tasks_claim ON tasks (state, seq, not_before, created_at);
CREATE INDEX IF NOT EXISTS runs_finished ON runs (finished_at);
-- The wipe ledger, the budget's reservations and the device blocks are
-- keyed by tenant and device; releasing a run's claims, its reservations
-- and its blocks finds them by run.
CREATE INDEX IF NOT EXISTS wipes_run ON wipes (run_id);
CREATE INDEX IF NOT EXISTS budget_run ON budget (run_id);
CREATE INDEX IF NOT EXISTS device_blocks_run ON device_blocks (run_id);
