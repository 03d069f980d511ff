//! A job's log: numbered lines with a level, kept in the database (bounded per job).

use serde::{Deserialize, Serialize};

/// The most lines one job's log keeps; past it, one last line says so and the rest are dropped.
pub const MAX_LOG_LINES: i64 = 10_000;
/// The longest line kept, in characters (longer ones are cut, ending with `…`).
pub const MAX_LOG_LINE_CHARS: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Debug, Self::Info, Self::Warn, Self::Error]
            .into_iter()
            .find(|l| l.as_str() == raw)
    }
}

/// One line of a job's log; `seq` counts 1, 2, … per job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: i64,
    /// Epoch milliseconds.
    pub at: i64,
    pub level: LogLevel,
    pub message: String,
}

impl LogLine {
    /// `message` cut to [`MAX_LOG_LINE_CHARS`].
    pub fn clip(message: &str) -> String {
        if message.chars().count() <= MAX_LOG_LINE_CHARS {
            message.to_string()
        } else {
            let mut cut: String = message.chars().take(MAX_LOG_LINE_CHARS - 1).collect();
            cut.push('…');
            cut
        }
    }
}
