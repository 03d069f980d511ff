-- How a dataset is read: the feature columns a table's mapping names (JSON array; NULL: every column
-- but the label), the rules its rows must meet (JSON object; '{}': none), and what reading found out
-- about the file's layout (JSON: its columns and, for CSV, delimiter and header) and what is in it
-- (`stats`, and `pii` for the personal data in its texts: JSON; NULL until read, and for datasets read
-- before). A job keeps the
-- mapping it was submitted with (`jobs.fields`, JSON; NULL for jobs from before: the dataset's), and a
-- resumable upload the feature columns it declared.
-- (migrations/postgres and migrations/sqlite hold the same.)
ALTER TABLE datasets ADD COLUMN feature_fields TEXT;
ALTER TABLE datasets ADD COLUMN rules TEXT NOT NULL DEFAULT '{}';
ALTER TABLE datasets ADD COLUMN layout TEXT NOT NULL DEFAULT '{}';
ALTER TABLE datasets ADD COLUMN stats TEXT;
ALTER TABLE datasets ADD COLUMN pii TEXT;
-- Text lengths in tokens, per tokenizer measured (JSON array).
ALTER TABLE datasets ADD COLUMN token_lengths TEXT NOT NULL DEFAULT '[]';
-- A derived dataset (a redacted copy, …) names its parent and how it was made (JSON).
ALTER TABLE datasets ADD COLUMN parent_id TEXT;
ALTER TABLE datasets ADD COLUMN derivation TEXT;
CREATE INDEX datasets_parent ON datasets (parent_id, created_at);
ALTER TABLE jobs ADD COLUMN fields TEXT;
ALTER TABLE uploads ADD COLUMN feature_fields TEXT;
