//! A job's log as GraphQL: lines, their level, and the live `jobLogs` subscription.

use async_graphql::SimpleObject;

use super::super::timestamp;
use crate::domain;

mirror_enum!(
    /// How much a log line matters; a filter `level` keeps that level and those above
    /// (DEBUG < INFO < WARN < ERROR).
    LogLevel => domain::LogLevel { Debug, Info, Warn, Error }
);

/// One line of a job's log.
#[derive(SimpleObject)]
pub struct LogLine {
    /// 1, 2, … within the job.
    pub seq: i64,
    pub at: String,
    pub level: LogLevel,
    pub message: String,
}

impl From<domain::LogLine> for LogLine {
    fn from(line: domain::LogLine) -> Self {
        Self {
            seq: line.seq,
            at: timestamp(line.at),
            level: line.level.into(),
            message: line.message,
        }
    }
}
