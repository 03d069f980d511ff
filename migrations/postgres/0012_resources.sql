-- What a job asks of the machine it runs on (submitJob's `resources`: JSON with cpus, memoryGb and
-- gpus), with its GPUs also as a column, since a worker claims only the jobs whose GPUs it has; and
-- the GPUs each worker gives a job. (migrations/postgres and migrations/sqlite hold the same.)
ALTER TABLE jobs ADD COLUMN resources TEXT;
ALTER TABLE jobs ADD COLUMN gpus BIGINT NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN gpus BIGINT NOT NULL DEFAULT 0;
