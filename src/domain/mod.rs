//! Pure types of kiln's domain, with no I/O. Every value that crosses the API edge is parsed into one of
//! these types exactly once ("parse, don't validate"); the code behind the edge never checks it again.
//!
//! A parse failure is a [`FieldError`]: it names the input field and the problem, so the API can answer
//! `BAD_USER_INPUT` with a message a user can act on.

mod dataset;
mod job;
mod names;

pub use dataset::{DatasetFormat, DatasetKind, DatasetStatus};
pub use job::{
    Hyperparams, HyperparamsInput, JobStatus, ModelConfig, ModelConfigInput, Priority, TaskKind,
};
pub use names::{ModelName, ObjectKey};

/// One input field that failed to parse: `field` is the path of the field in the API's input
/// (`hyperparameters.epochs`), `message` says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Milliseconds since the Unix epoch: the one representation of time in the store (portable across
/// SQLite and Postgres).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
