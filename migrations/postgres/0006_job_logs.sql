-- Each job's log (migrations/postgres and migrations/sqlite hold the same): seq counts 1, 2, … per job;
-- level is DEBUG, INFO, WARN or ERROR; at most 10 000 lines per job.
CREATE TABLE job_logs (
    job_id   TEXT NOT NULL REFERENCES jobs (id),
    seq      BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    level    TEXT NOT NULL,
    message  TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
