-- Checkpoints, pause/resume, retry backoff and time limits (migrations/postgres and migrations/sqlite hold
-- the same).
ALTER TABLE jobs ADD COLUMN pause_requested BIGINT NOT NULL DEFAULT 0;
-- A queued job is not claimed before this time (epoch ms): the backoff of an automatic retry.
ALTER TABLE jobs ADD COLUMN next_attempt_at BIGINT;
-- The longest a job may run, in milliseconds, counted over its attempts (run_ms holds the earlier ones).
ALTER TABLE jobs ADD COLUMN max_duration_ms BIGINT;
ALTER TABLE jobs ADD COLUMN run_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN attempt_started_at BIGINT;

-- A job's stored checkpoints: each a folder in the object store whose manifest was written last.
CREATE TABLE job_checkpoints (
    job_id         TEXT NOT NULL REFERENCES jobs (id),
    step           BIGINT NOT NULL,
    epoch          BIGINT NOT NULL,
    size_bytes     BIGINT NOT NULL,
    object_prefix  TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (job_id, step)
);
