-- The registry's aliases, their history and promotion policies; a job's automatic promotion
-- (migrations/postgres and migrations/sqlite hold the same).
-- An alias points to a version ({"version": 3}) or a weighted split ({"split": [{"version": 1, "weight": 0.9}, …]}).
CREATE TABLE model_aliases (
    model_name  TEXT NOT NULL REFERENCES models (name),
    alias       TEXT NOT NULL,
    target      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (model_name, alias)
);
-- Every move of an alias: seq counts 1, 2, … per alias; targets as in model_aliases (NULL: none).
CREATE TABLE model_alias_history (
    model_name        TEXT NOT NULL REFERENCES models (name),
    alias             TEXT NOT NULL,
    seq               BIGINT NOT NULL,
    from_target       TEXT,
    to_target         TEXT,
    actor             TEXT NOT NULL,
    reason            TEXT,
    overridden_rules  TEXT NOT NULL,
    rollback          BIGINT NOT NULL,
    at                BIGINT NOT NULL,
    PRIMARY KEY (model_name, alias, seq)
);
CREATE INDEX model_alias_history_at ON model_alias_history (model_name, at);
-- Rules (a JSON list of strings) a version must pass before the alias may point to it.
CREATE TABLE promotion_policies (
    model_name  TEXT NOT NULL REFERENCES models (name),
    alias       TEXT NOT NULL,
    rules       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (model_name, alias)
);
-- predict calls answered through an alias, per version (a split's arms), and the inputs they held.
CREATE TABLE model_alias_requests (
    model_name   TEXT NOT NULL REFERENCES models (name),
    alias        TEXT NOT NULL,
    version      BIGINT NOT NULL,
    requests     BIGINT NOT NULL,
    predictions  BIGINT NOT NULL,
    PRIMARY KEY (model_name, alias, version)
);
-- The alias a job moves to the version it trains, when that version passes the alias's policy.
ALTER TABLE jobs ADD COLUMN auto_promote TEXT;
