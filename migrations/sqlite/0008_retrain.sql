-- Retraining from a registered version (migrations/postgres and migrations/sqlite hold the same): whether
-- the job starts the classification head afresh, and why the job was submitted.
ALTER TABLE jobs ADD COLUMN reset_head BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN reason TEXT;
