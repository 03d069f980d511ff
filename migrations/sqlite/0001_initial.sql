-- kiln's first schema. Portable types: ids and JSON as TEXT, times as BIGINT epoch milliseconds,
-- flags as BIGINT 0/1. migrations/postgres/0001_initial.sql holds the same tables.

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE datasets (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    format       TEXT NOT NULL,
    kind         TEXT,
    status       TEXT NOT NULL,
    object_key   TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    row_count    BIGINT NOT NULL,
    text_field   TEXT NOT NULL,
    label_field  TEXT NOT NULL,
    features     TEXT NOT NULL,
    labels       TEXT NOT NULL,
    errors       TEXT NOT NULL,
    error_count  BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX datasets_created ON datasets (created_at, id);

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    model_name        TEXT NOT NULL,
    task              TEXT NOT NULL,
    dataset_id        TEXT NOT NULL REFERENCES datasets (id),
    base_model        TEXT,
    model_config      TEXT,
    hyperparameters   TEXT NOT NULL,
    priority          BIGINT NOT NULL,
    status            TEXT NOT NULL,
    error             TEXT,
    progress          TEXT,
    attempts          BIGINT NOT NULL,
    max_attempts      BIGINT NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    cancel_requested  BIGINT NOT NULL,
    model_version_id  TEXT,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX jobs_queue ON jobs (status, priority, created_at);
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE INDEX jobs_model ON jobs (model_name);

CREATE TABLE job_epochs (
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    epoch       BIGINT NOT NULL,
    train_loss  REAL NOT NULL,
    val_loss    REAL NOT NULL,
    accuracy    REAL NOT NULL,
    prec        REAL NOT NULL,
    recall      REAL NOT NULL,
    f1          REAL NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (job_id, epoch)
);

CREATE TABLE job_metrics (
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    name        TEXT NOT NULL,
    step        BIGINT NOT NULL,
    epoch       BIGINT NOT NULL,
    value       REAL NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (job_id, name, step)
);

CREATE TABLE models (
    name        TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

CREATE TABLE model_versions (
    id            TEXT PRIMARY KEY,
    model_name    TEXT NOT NULL REFERENCES models (name),
    version       BIGINT NOT NULL,
    job_id        TEXT NOT NULL REFERENCES jobs (id),
    dataset_id    TEXT NOT NULL REFERENCES datasets (id),
    artifact_uri  TEXT NOT NULL,
    metrics       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (model_name, version)
);
