-- Deleting jobs, model versions and models (migrations/postgres and migrations/sqlite hold the same):
-- a model remembers the last version number it gave, so a deleted version's number is never given again.
ALTER TABLE models ADD COLUMN last_version BIGINT NOT NULL DEFAULT 0;
UPDATE models SET last_version = COALESCE(
    (SELECT MAX(version) FROM model_versions WHERE model_versions.model_name = models.name), 0);
