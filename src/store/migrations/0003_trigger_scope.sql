-- Who and what the trigger body named (JSON: addresses, object ids, alert
-- ids): users first seen later are told apart from the trigger's.
ALTER TABLE runs ADD COLUMN trigger_scope TEXT;
