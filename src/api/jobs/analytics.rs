//! Analytics as GraphQL: `Job.analytics`, `jobsSummary`, `compareJobs`.

use async_graphql::SimpleObject;

use super::super::models::MetricComparison;
use super::super::timestamp;
use super::{EpochMetrics, Job, JobStatus};
use crate::domain::MetricSummary;
use crate::service::analytics::{self as a, flat_hyperparameters};

/// A step metric over a run.
#[derive(SimpleObject)]
pub struct MetricCurve {
    /// Steps recorded.
    pub points: i64,
    pub mean: f64,
    /// The median (p50).
    pub median: f64,
    pub first: f64,
    pub last: f64,
    pub min: f64,
    /// The step of the smallest value.
    pub min_step: i64,
}

impl From<MetricSummary> for MetricCurve {
    fn from(m: MetricSummary) -> Self {
        Self {
            points: m.count,
            mean: m.mean,
            median: m.median,
            first: m.first.1,
            last: m.last.1,
            min: m.min.1,
            min_step: m.min.0,
        }
    }
}

/// How a job went, in numbers.
#[derive(SimpleObject)]
pub struct JobAnalytics {
    /// Milliseconds from submission to its first start; null while it has not started.
    pub queued_ms: Option<i64>,
    /// Milliseconds spent running, over all attempts (a running attempt up to now).
    pub training_ms: i64,
    /// Training throughput per step: mean and median (p50).
    pub samples_per_second_mean: Option<f64>,
    pub samples_per_second_p50: Option<f64>,
    /// The training loss per step, summarised.
    pub loss: Option<MetricCurve>,
    /// The best finished epoch by the job's early-stopping metric (lowest validation loss when none).
    pub best_epoch: Option<EpochMetrics>,
}

impl From<a::JobAnalytics> for JobAnalytics {
    fn from(x: a::JobAnalytics) -> Self {
        Self {
            queued_ms: x.queued_ms,
            training_ms: x.training_ms,
            samples_per_second_mean: x.samples_per_second.as_ref().map(|s| s.mean),
            samples_per_second_p50: x.samples_per_second.as_ref().map(|s| s.median),
            loss: x.loss.map(Into::into),
            best_epoch: x.best_epoch.as_ref().map(Into::into),
        }
    }
}

#[derive(SimpleObject)]
pub struct StatusCount {
    pub status: JobStatus,
    pub count: i64,
}

/// Counts and means over a set of jobs.
#[derive(SimpleObject)]
pub struct JobsTally {
    pub total: i64,
    pub by_status: Vec<StatusCount>,
    /// Mean milliseconds from submission to first start, over the jobs that started.
    pub mean_queue_wait_ms: Option<f64>,
    /// Mean running milliseconds over the jobs that ended (completed, failed or cancelled).
    pub mean_run_ms: Option<f64>,
}

impl From<a::JobsTally> for JobsTally {
    fn from(t: a::JobsTally) -> Self {
        Self {
            total: t.total,
            by_status: t
                .by_status
                .into_iter()
                .map(|(status, count)| StatusCount {
                    status: status.into(),
                    count,
                })
                .collect(),
            mean_queue_wait_ms: t.mean_queue_ms,
            mean_run_ms: t.mean_run_ms,
        }
    }
}

#[derive(SimpleObject)]
pub struct ModelJobsTally {
    pub model_name: String,
    pub jobs: JobsTally,
}

/// The jobs submitted since a time.
#[derive(SimpleObject)]
pub struct JobsSummary {
    pub since: String,
    pub all: JobsTally,
    /// Per model, by name.
    pub per_model: Vec<ModelJobsTally>,
}

impl From<a::JobsSummary> for JobsSummary {
    fn from(s: a::JobsSummary) -> Self {
        Self {
            since: timestamp(s.since),
            all: s.all.into(),
            per_model: s
                .per_model
                .into_iter()
                .map(|(model_name, t)| ModelJobsTally {
                    model_name,
                    jobs: t.into(),
                })
                .collect(),
        }
    }
}

/// One setting across compared jobs.
#[derive(SimpleObject)]
pub struct SettingComparison {
    /// The hyperparameter's name (`learningRate`, `earlyStopping.patience`, `lora.rank`, `baseModel`).
    pub name: String,
    /// One per job, as JSON text (`null` when a job has no such setting).
    pub values: Vec<String>,
    /// Whether the jobs differ in it.
    pub differs: bool,
}

/// Jobs side by side.
#[derive(SimpleObject)]
pub struct JobComparison {
    pub jobs: Vec<Job>,
    /// Every hyperparameter, those that differ first.
    pub hyperparameters: Vec<SettingComparison>,
    /// Final metrics (the registered version's, else the last epoch's), deltas against the first job.
    pub metrics: Vec<MetricComparison>,
}

pub fn compare(
    jobs: Vec<(
        crate::domain::JobRecord,
        Option<crate::domain::EpochMetrics>,
    )>,
) -> JobComparison {
    let flat: Vec<Vec<(String, String)>> =
        jobs.iter().map(|(j, _)| flat_hyperparameters(j)).collect();
    let mut names: Vec<String> = Vec::new();
    for job in &flat {
        for (name, _) in job {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let mut hyperparameters: Vec<SettingComparison> = names
        .into_iter()
        .map(|name| {
            let values: Vec<String> = flat
                .iter()
                .map(|job| {
                    job.iter()
                        .find(|(n, _)| *n == name)
                        .map_or("null".to_string(), |(_, v)| v.clone())
                })
                .collect();
            let differs = values.iter().any(|v| *v != values[0]);
            SettingComparison {
                name,
                values,
                differs,
            }
        })
        .collect();
    hyperparameters.sort_by_key(|s| !s.differs);
    let mut metrics = Vec::new();
    if let Some(stand_in) = jobs.iter().find_map(|(_, m)| m.clone()) {
        let finals: Vec<&crate::domain::EpochMetrics> = jobs
            .iter()
            .map(|(_, m)| m.as_ref().unwrap_or(&stand_in))
            .collect();
        metrics = super::super::models::metric_rows(&finals);
        // A job without metrics has none to compare.
        for row in &mut metrics {
            for (i, (_, m)) in jobs.iter().enumerate() {
                if m.is_none() || jobs[0].1.is_none() {
                    row.deltas[i] = None;
                }
                if m.is_none() {
                    row.values[i] = None;
                }
            }
        }
    }
    JobComparison {
        jobs: jobs.into_iter().map(|(j, _)| Job(j)).collect(),
        hyperparameters,
        metrics,
    }
}
