//! kiln: a machine-learning training service in one binary.
//!
//! The map (see `docs/ARCHITECTURE.md`): [`domain`] holds pure types parsed once at the edge; [`api`] is
//! the GraphQL schema, independent of the web framework; [`http`] mounts it on axum with uploads,
//! WebSocket subscriptions and the playground; [`store`] is the only place with SQL; [`runner`] claims
//! queued jobs and drives [`train`], the candle training engine, which knows nothing of the service;
//! [`data`] parses and validates datasets; [`objects`] stores files locally or on S3; [`events`] fans
//! job events out to subscribers; [`auth`] checks API tokens; [`app`] wires it all together.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod data;
pub mod domain;
pub mod events;
pub mod http;
pub mod hub;
pub mod objects;
pub mod runner;
pub mod store;
pub mod telemetry;
pub mod train;
