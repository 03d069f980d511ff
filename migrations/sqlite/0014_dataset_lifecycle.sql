-- A dataset's life: FRESH until a job first trains on it (`used_at`, set when a job using it is first
-- claimed; earlier jobs' start times fill it here), USED after, ARCHIVED while `archived_at` is set.
-- (migrations/postgres and migrations/sqlite hold the same.)
ALTER TABLE datasets ADD COLUMN used_at BIGINT;
ALTER TABLE datasets ADD COLUMN archived_at BIGINT;
UPDATE datasets SET used_at = (
    SELECT MIN(started_at) FROM jobs WHERE jobs.dataset_id = datasets.id AND jobs.started_at IS NOT NULL
);
CREATE INDEX jobs_dataset ON jobs (dataset_id, created_at);
CREATE INDEX model_versions_dataset ON model_versions (dataset_id);
