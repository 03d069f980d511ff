//! kiln's integration tests: one binary, each test a real kiln on port 0 talking HTTP and WebSocket.
//! Postgres must be running (`scripts/test` makes sure); S3 runs in-process.

mod analytics;
mod auth;
mod browser;
mod cli;
mod connections;
mod datasets;
mod deletion;
mod deploy;
mod downloads;
mod export;
mod hardening;
mod helpers;
mod job_control;
mod jobs;
mod limits;
mod logs;
mod models;
mod observability;
mod options;
mod outage;
mod predict;
mod processes;
mod queue;
mod registry;
mod replicas;
mod resume;
mod retrain;
mod schema;
mod serving;
mod stack;
mod subscriptions;
mod training;
mod waiting;
mod walkthrough;
