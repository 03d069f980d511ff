//! Summaries the database computes over jobs and their step metrics.

use super::JobStatus;

/// One step metric of a job, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSummary {
    pub count: i64,
    pub mean: f64,
    pub median: f64,
    /// (step, value) of the first, last and smallest point.
    pub first: (i64, f64),
    pub last: (i64, f64),
    pub min: (i64, f64),
}

/// Jobs of one model in one status, created since a time.
#[derive(Debug, Clone, PartialEq)]
pub struct JobGroup {
    pub model_name: String,
    pub status: JobStatus,
    pub count: i64,
    /// Jobs that started, and their summed waits in the queue (first start minus creation), in ms.
    pub started: i64,
    pub queue_ms: i64,
    /// Their summed running time over all attempts, in ms.
    pub run_ms: i64,
}
