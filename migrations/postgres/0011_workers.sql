-- Every running worker, on every replica, so that the queue can say how many are busy or idle and
-- why a job waits. A worker inserts its row when it starts, renews `heartbeat_at` every few seconds
-- and deletes the row when it stops; a row whose heartbeat is old belongs to a worker that died and
-- is not counted (nor kept for long). A worker is busy while a RUNNING job's `lease_owner` names it.
-- (migrations/postgres and migrations/sqlite hold the same.)
CREATE TABLE workers (
    id            TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);
CREATE INDEX workers_heartbeat ON workers (heartbeat_at);
