-- Resumable uploads (the tus protocol at /uploads): what the client declared, how many bytes are
-- stored, where they are staged (an S3 multipart upload's id and the ids of its parts, as a JSON
-- list), and the dataset made when the last byte arrived. `locked_until` is held by the request that is
-- writing bytes, so two requests never append at once. (migrations/postgres and migrations/sqlite hold
-- the same.)
CREATE TABLE uploads (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    file_name      TEXT NOT NULL,
    format         TEXT NOT NULL,
    text_field     TEXT NOT NULL,
    label_field    TEXT NOT NULL,
    length         BIGINT NOT NULL,
    upload_offset  BIGINT NOT NULL,
    status         TEXT NOT NULL,
    multipart_id   TEXT NOT NULL,
    parts          TEXT NOT NULL,
    dataset_id     TEXT,
    error          TEXT,
    locked_until   BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX uploads_status ON uploads (status, expires_at);
-- The same bytes uploaded again find their dataset.
CREATE INDEX datasets_sha256 ON datasets (sha256);
