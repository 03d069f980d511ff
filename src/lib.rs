//! kiln: a machine-learning training service in one binary.
//!
//! The map (see `docs/ARCHITECTURE.md`), by layer, each using only the ones below it:
//! - [`app`] wires everything together and runs it; [`cli`] is what each command does;
//! - [`http`] mounts [`api`], the GraphQL schema, on axum; [`api`]'s resolvers call [`service`];
//! - [`runner`] is the worker loop: it claims jobs through [`service`] and drives [`train`];
//! - [`service`] holds the use cases, the only place rules live, over [`store`] (all SQL), [`objects`]
//!   (files locally or on S3), [`events`] (job events fan-out), [`data`] (dataset parsing and
//!   validation), [`hub`] (base model downloads) and [`auth`] (API tokens);
//! - [`train`] is the candle training engine, which knows nothing of the service;
//! - [`domain`] holds pure types parsed once at the edge, and the records every layer shares.

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
pub mod metrics;
pub mod objects;
pub mod runner;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod train;
