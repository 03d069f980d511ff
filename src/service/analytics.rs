//! Analytics: one job's timings and curves, a summary of the jobs since a time, and jobs compared.

use super::{Service, ServiceResult};
use crate::domain::{
    EarlyStoppingMetric, EpochMetrics, FieldError, JobGroup, JobRecord, JobStatus, MetricSummary,
    abbreviate, now_ms, parse_timestamp,
};

/// The most jobs one comparison holds.
pub const MAX_COMPARED_JOBS: usize = 10;

/// One job's analytics.
#[derive(Debug, Clone)]
pub struct JobAnalytics {
    /// From submission to the first start; `None` while it has not started.
    pub queued_ms: Option<i64>,
    /// Running time over all attempts (a running attempt counts up to now).
    pub training_ms: i64,
    /// Per-step throughput.
    pub samples_per_second: Option<MetricSummary>,
    /// The training loss per step.
    pub loss: Option<MetricSummary>,
    /// The best epoch by the job's early-stopping metric (validation loss when it has none).
    pub best_epoch: Option<EpochMetrics>,
}

/// Counts and means over a set of jobs.
#[derive(Debug, Clone, Default)]
pub struct JobsTally {
    pub total: i64,
    pub by_status: Vec<(JobStatus, i64)>,
    /// Mean of (first start − submission) over the jobs that started.
    pub mean_queue_ms: Option<f64>,
    /// Mean running time over the jobs that ended (completed, failed, cancelled).
    pub mean_run_ms: Option<f64>,
}

impl JobsTally {
    fn of<'a>(groups: impl Iterator<Item = &'a JobGroup>) -> Self {
        let mut tally = Self::default();
        let (mut started, mut queue_ms, mut ended, mut run_ms) = (0, 0, 0, 0);
        for g in groups {
            tally.total += g.count;
            match tally.by_status.iter_mut().find(|(s, _)| *s == g.status) {
                Some((_, n)) => *n += g.count,
                None => tally.by_status.push((g.status, g.count)),
            }
            started += g.started;
            queue_ms += g.queue_ms;
            if g.status.is_terminal() {
                ended += g.count;
                run_ms += g.run_ms;
            }
        }
        tally.by_status.sort_by_key(|(s, _)| s.as_str());
        tally.mean_queue_ms = (started > 0).then(|| queue_ms as f64 / started as f64);
        tally.mean_run_ms = (ended > 0).then(|| run_ms as f64 / ended as f64);
        tally
    }
}

/// The jobs since a time: over all, and per model (by name).
#[derive(Debug, Clone)]
pub struct JobsSummary {
    pub since: i64,
    pub all: JobsTally,
    pub per_model: Vec<(String, JobsTally)>,
}

/// Which epoch is best by `metric`.
fn best_epoch(epochs: &[EpochMetrics], metric: EarlyStoppingMetric) -> Option<EpochMetrics> {
    let score = |m: &EpochMetrics| match metric {
        EarlyStoppingMetric::ValLoss => -m.val_loss,
        EarlyStoppingMetric::Accuracy => m.accuracy,
        EarlyStoppingMetric::F1 => m.f1,
    };
    // The first of equals: an epoch must beat the best so far.
    epochs
        .iter()
        .fold(None::<&EpochMetrics>, |best, m| match best {
            Some(b) if score(m) <= score(b) => Some(b),
            _ => Some(m),
        })
        .cloned()
}

impl Service {
    #[tracing::instrument(skip_all)]
    pub async fn job_analytics(&self, job: &JobRecord) -> ServiceResult<JobAnalytics> {
        let epochs: Vec<EpochMetrics> = self
            .store
            .epochs_of(std::slice::from_ref(&job.id))
            .await?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        let metric = job
            .settings
            .hyperparameters
            .early_stopping
            .as_ref()
            .map_or(EarlyStoppingMetric::ValLoss, |e| e.metric);
        let running = match (job.status, job.attempt_started_at) {
            (JobStatus::Running, Some(started)) => (now_ms() - started).max(0),
            _ => 0,
        };
        Ok(JobAnalytics {
            queued_ms: job.started_at.map(|s| s - job.created_at),
            training_ms: job.run_ms + running,
            samples_per_second: self
                .store
                .metric_summary(&job.id, "samples_per_second")
                .await?,
            loss: self.store.metric_summary(&job.id, "train_loss").await?,
            best_epoch: best_epoch(&epochs, metric),
        })
    }

    /// Jobs submitted at or after `since` (RFC 3339): counts per status, mean queue wait and run time,
    /// over all and per model.
    #[tracing::instrument(skip_all)]
    pub async fn jobs_summary(&self, since: &str) -> ServiceResult<JobsSummary> {
        let since = parse_timestamp("since", since)?;
        let groups = self.store.job_groups(since).await?;
        let mut models: Vec<&str> = groups.iter().map(|g| g.model_name.as_str()).collect();
        models.dedup();
        let per_model = models
            .into_iter()
            .map(|m| {
                let tally = JobsTally::of(groups.iter().filter(|g| g.model_name == m));
                (m.to_string(), tally)
            })
            .collect();
        Ok(JobsSummary {
            since,
            all: JobsTally::of(groups.iter()),
            per_model,
        })
    }

    /// 2–[`MAX_COMPARED_JOBS`] jobs by id, in the order asked, with their final metrics (the
    /// registered version's, else the last epoch's).
    #[tracing::instrument(skip_all)]
    pub async fn compare_jobs(
        &self,
        ids: &[String],
    ) -> ServiceResult<Vec<(JobRecord, Option<EpochMetrics>)>> {
        if !(2..=MAX_COMPARED_JOBS).contains(&ids.len()) {
            return Err(FieldError::new(
                "ids",
                format!("give 2 to {MAX_COMPARED_JOBS} jobs (got {})", ids.len()),
            )
            .into());
        }
        let found = self.jobs_by_id(ids).await?;
        let mut out = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let field = format!("ids[{i}]");
            if ids[..i].contains(id) {
                return Err(FieldError::new(field, "is listed twice").into());
            }
            let job = found.iter().find(|j| j.id == *id).ok_or_else(|| {
                FieldError::new(field, format!("no job with id {}", abbreviate(id, 100)))
            })?;
            out.push(job.clone());
        }
        let epochs = self.store.last_epochs_of(ids).await?;
        let version_ids: Vec<String> = out
            .iter()
            .filter_map(|j| j.model_version_id.clone())
            .collect();
        let versions = self.store.get_model_versions(&version_ids).await?;
        Ok(out
            .into_iter()
            .map(|job| {
                let final_metrics = versions
                    .iter()
                    .find(|v| Some(&v.id) == job.model_version_id.as_ref())
                    .map(|v| v.metrics.clone())
                    .or_else(|| {
                        epochs
                            .iter()
                            .filter(|(id, _)| *id == job.id)
                            .map(|(_, m)| m.clone())
                            .next_back()
                    });
                (job, final_metrics)
            })
            .collect())
    }
}

/// A job's hyperparameters as flat `name → value` pairs (nested options joined with `.`), in a fixed
/// order, values as JSON text.
pub fn flat_hyperparameters(job: &JobRecord) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, v, out);
                }
            }
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::to_value(&job.settings.hyperparameters) {
        walk("", &value, &mut out);
    }
    if let Some(lora) = &job.settings.lora
        && let Ok(value) = serde_json::to_value(lora)
    {
        walk("lora", &value, &mut out);
    }
    out.push((
        "baseModel".into(),
        job.settings.base_model.as_ref().map_or("null".into(), |b| {
            serde_json::Value::from(b.to_string()).to_string()
        }),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(n: u32, val_loss: f64, f1: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: n,
            train_loss: 0.0,
            val_loss,
            accuracy: f1,
            precision: f1,
            recall: f1,
            f1,
            per_label: vec![],
            confusion_matrix: vec![],
        }
    }

    #[test]
    fn the_best_epoch_follows_the_metric_and_keeps_the_first_of_equals() {
        let epochs = [epoch(1, 0.5, 0.7), epoch(2, 0.3, 0.7), epoch(3, 0.4, 0.9)];
        assert_eq!(
            best_epoch(&epochs, EarlyStoppingMetric::ValLoss)
                .unwrap()
                .epoch,
            2
        );
        assert_eq!(
            best_epoch(&epochs, EarlyStoppingMetric::F1).unwrap().epoch,
            3
        );
        assert_eq!(
            best_epoch(&epochs[..2], EarlyStoppingMetric::Accuracy)
                .unwrap()
                .epoch,
            1
        );
        assert!(best_epoch(&[], EarlyStoppingMetric::F1).is_none());
    }
}
