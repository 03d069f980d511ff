-- Listings filtered by status or model, newest first, read from an index in order
-- (migrations/postgres and migrations/sqlite hold the same).
CREATE INDEX jobs_status_created ON jobs (status, created_at, id);
CREATE INDEX jobs_model_created ON jobs (model_name, created_at, id);
DROP INDEX jobs_model;
