-- Where a job's latest attempt trained (`Job.device`): `cpu` or `cuda:N`; NULL until an attempt starts
-- (migrations/postgres and migrations/sqlite hold the same).
ALTER TABLE jobs ADD COLUMN device TEXT;
