-- What the entity claims about the person (JSON: object ids, other addresses,
-- notes), and the person the address resolved to (Microsoft Graph).
ALTER TABLE targets ADD COLUMN claims TEXT;
ALTER TABLE targets ADD COLUMN mailbox_upn TEXT;
ALTER TABLE targets ADD COLUMN display_name TEXT;
ALTER TABLE targets ADD COLUMN object_id TEXT;
