-- Per-model training defaults (migrations/postgres and migrations/sqlite hold the same): the
-- hyperparameters submitJob fills in when its input leaves them out, as JSON in the input's form.
CREATE TABLE model_training_defaults (
    model_name       TEXT PRIMARY KEY REFERENCES models (name),
    hyperparameters  TEXT NOT NULL,
    updated_at       BIGINT NOT NULL
);
