//! Logging: structured `tracing` output on standard error (standard output is kept for what a command
//! prints, and for a job's events to its worker), filtered by `RUST_LOG` (default `info`), coloured only
//! when standard error is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
