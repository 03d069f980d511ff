-- Training options (migrations/postgres and migrations/sqlite hold the same).
-- A job's LoRA settings as JSON; NULL for a full fine-tune.
ALTER TABLE jobs ADD COLUMN customization TEXT;
-- An epoch's per-label metrics and confusion matrix as JSON ({"perLabel": …, "confusionMatrix": …});
-- NULL for epochs stored before they were recorded.
ALTER TABLE job_epochs ADD COLUMN details TEXT;
