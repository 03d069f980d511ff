//! The GraphQL form of a job and what it records.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ID, Object, SimpleObject};

use super::super::datasets::Dataset;
use super::super::loaders::{
    CheckpointsLoader, EpochsLoader, MetricsKey, MetricsLoader, ModelVersionLoader,
    QueuePlaceLoader,
};
use super::super::models::ModelVersion;
use super::super::{ApiResult, timestamp};
use super::training::{Customization, Hyperparameters, ParameterCount};
use crate::domain::{self, JobRecord};

mirror_enum!(
    /// Where a job is in its life.
    JobStatus => domain::JobStatus { Queued, Running, Paused, Completed, Failed, Cancelled }
);
mirror_enum!(
    /// Queue priority: higher runs first, then older.
    Priority => domain::Priority { Low, Normal, High, Urgent }
);
mirror_enum!(
    /// What a job trains.
    TaskKind => domain::TaskKind { TextClassification, TabularClassification }
);

/// Size of a small random-initialised BERT.
#[derive(SimpleObject)]
pub struct ModelConfig {
    pub hidden_size: i32,
    pub num_layers: i32,
    pub num_heads: i32,
    pub intermediate_size: i32,
}

#[derive(SimpleObject)]
pub struct JobProgress {
    pub epoch: i32,
    pub total_epochs: i32,
    pub step: i64,
    pub total_steps: i64,
    pub percent: f64,
    pub elapsed_seconds: f64,
    pub eta_seconds: Option<f64>,
    /// Set when the job's progress has not moved for `KILN_STALL_SECONDS` (default 600) while its
    /// worker holds it: since when. Cleared when it moves again.
    pub stalled_since: Option<String>,
    /// When the job should end, by `etaSeconds` counted from when the progress was measured.
    pub estimated_end_at: Option<String>,
    /// Training throughput at the latest step.
    pub samples_per_second: Option<f64>,
}

/// A stored checkpoint: the job goes on from its newest one after a pause, a crash or a retry.
#[derive(SimpleObject)]
pub struct JobCheckpoint {
    /// Optimizer steps done when it was written.
    pub step: i64,
    /// Epochs finished when it was written.
    pub epoch: i32,
    /// Weights and optimizer state, in bytes.
    pub size_bytes: i64,
    pub created_at: String,
}

/// One epoch's results on the validation split (precision, recall, F1: macro averages; `perLabel` and
/// `confusionMatrix` break them down).
#[derive(SimpleObject, Clone)]
pub struct EpochMetrics {
    pub epoch: i32,
    pub train_loss: f64,
    /// With class weights, the weighted mean, as the training loss.
    pub val_loss: f64,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// One entry per label, in the model's label order (empty for epochs recorded before kiln kept
    /// them).
    pub per_label: Vec<LabelMetrics>,
    /// Null for epochs recorded before kiln kept it.
    pub confusion_matrix: Option<ConfusionMatrix>,
}

/// One label's results on the validation split.
#[derive(SimpleObject, Clone)]
pub struct LabelMetrics {
    pub label: String,
    /// Of the examples predicted as this label, the share that are (0 when none is).
    pub precision: f64,
    /// Of the examples of this label, the share predicted as it (0 when there are none).
    pub recall: f64,
    pub f1: f64,
    /// Validation examples of this label.
    pub support: i64,
}

/// Validation examples by actual label (rows) and predicted label (columns).
#[derive(SimpleObject, Clone)]
pub struct ConfusionMatrix {
    /// The labels, in the order of both the rows and the columns.
    pub labels: Vec<String>,
    /// `rows[actual][predicted]`.
    pub rows: Vec<Vec<i64>>,
}

impl From<&domain::EpochMetrics> for EpochMetrics {
    fn from(m: &domain::EpochMetrics) -> Self {
        Self {
            epoch: m.epoch as i32,
            train_loss: m.train_loss,
            val_loss: m.val_loss,
            accuracy: m.accuracy,
            precision: m.precision,
            recall: m.recall,
            f1: m.f1,
            per_label: m
                .per_label
                .iter()
                .map(|l| LabelMetrics {
                    label: l.label.clone(),
                    precision: l.precision,
                    recall: l.recall,
                    f1: l.f1,
                    support: l.support as i64,
                })
                .collect(),
            confusion_matrix: (!m.confusion_matrix.is_empty()).then(|| ConfusionMatrix {
                labels: m.per_label.iter().map(|l| l.label.clone()).collect(),
                rows: m
                    .confusion_matrix
                    .iter()
                    .map(|row| row.iter().map(|&v| v as i64).collect())
                    .collect(),
            }),
        }
    }
}

/// One value of a step metric (`train_loss`, `learning_rate`).
#[derive(SimpleObject)]
pub struct MetricPoint {
    pub name: String,
    pub step: i64,
    pub epoch: i32,
    pub value: f64,
    pub at: String,
}

impl From<domain::MetricPoint> for MetricPoint {
    fn from(p: domain::MetricPoint) -> Self {
        Self {
            name: p.name,
            step: p.step,
            epoch: p.epoch as i32,
            value: p.value,
            at: timestamp(p.created_at),
        }
    }
}

pub struct Job(pub JobRecord);

impl Job {
    /// The job's place while it is queued (read once per request for every job that asks).
    async fn queue_place(&self, ctx: &Context<'_>) -> ApiResult<Option<domain::QueuePlace>> {
        if self.0.status != domain::JobStatus::Queued {
            return Ok(None);
        }
        let loader = ctx.data_unchecked::<DataLoader<QueuePlaceLoader>>();
        loader.load_one(self.0.id.clone()).await
    }
}

#[Object]
impl Job {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The registry model the result is filed under.
    async fn model_name(&self) -> &str {
        &self.0.model_name
    }
    async fn status(&self) -> JobStatus {
        self.0.status.into()
    }
    async fn priority(&self) -> Priority {
        self.0.priority.into()
    }
    async fn task(&self) -> TaskKind {
        self.0.settings.task.into()
    }
    /// As submitted; a retrain's `model:NAME@ALIAS` shows as the version it was resolved to,
    /// `model:NAME/VERSION`.
    async fn base_model(&self) -> Option<String> {
        self.0.settings.base_model.as_ref().map(|b| b.to_string())
    }
    /// A retrain that started its classification head afresh.
    async fn reset_head(&self) -> bool {
        self.0.settings.reset_head
    }
    /// The fields it reads from its dataset, fixed at submit; null for a job submitted before kiln
    /// kept them (it reads the dataset's own).
    async fn fields(&self) -> Option<crate::api::datasets::FieldMapping> {
        self.0.fields.as_ref().map(Into::into)
    }
    /// Why the job was submitted, as its submitter said.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn model_config(&self) -> Option<ModelConfig> {
        self.0.settings.model_config.map(|c| ModelConfig {
            hidden_size: c.hidden_size as i32,
            num_layers: c.num_layers as i32,
            num_heads: c.num_heads as i32,
            intermediate_size: c.intermediate_size as i32,
        })
    }
    async fn dataset(&self, ctx: &Context<'_>) -> ApiResult<Option<Dataset>> {
        Dataset::load(ctx, &self.0.dataset_id).await
    }
    async fn hyperparameters(&self) -> Hyperparameters {
        (&self.0.settings.hyperparameters).into()
    }
    /// The LoRA settings; null for a full fine-tune or a model trained from random weights.
    async fn customization(&self) -> Option<Customization> {
        self.0.settings.lora.as_ref().map(Into::into)
    }
    /// The newest `last` lines (1–1000, default 100) of the job's log at `level` or above (default:
    /// all), oldest first: what the runner did (claims, dataset, model, epochs, checkpoints, the end and
    /// its error). At most 10 000 lines are kept per job. Each line asked for counts 1 towards the
    /// query's complexity.
    #[graphql(complexity = "child_complexity + last.clamp(1, 1000) as usize")]
    async fn logs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100)] last: i32,
        level: Option<super::LogLevel>,
    ) -> ApiResult<Vec<super::LogLine>> {
        let level = level.map_or(domain::LogLevel::Debug, Into::into);
        Ok(super::super::service(ctx)
            .job_logs(&self.0.id, last.into(), level)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }
    /// Time queued and training, throughput, the best epoch and the loss curve in numbers.
    async fn analytics(&self, ctx: &Context<'_>) -> ApiResult<super::analytics::JobAnalytics> {
        Ok(super::super::service(ctx)
            .job_analytics(&self.0)
            .await?
            .into())
    }
    /// Where the whole log downloads as a ZIP with the API token (`GET`, relative to the API's address).
    async fn logs_download_url(&self) -> String {
        crate::service::logs::job_logs_path(&self.0.id)
    }
    /// How many parameters the job trains, of how many its model has; null until its model is built.
    async fn parameter_count(&self) -> Option<ParameterCount> {
        self.0
            .progress
            .as_ref()
            .and_then(|p| p.parameter_count)
            .map(Into::into)
    }
    /// Where the job's latest attempt trains or trained: `cpu`, or `cuda:N` for the server's GPU N
    /// (the server's `KILN_DEVICE` chooses); null before an attempt starts.
    async fn device(&self) -> Option<&str> {
        self.0.device.as_deref()
    }
    async fn progress(&self) -> Option<JobProgress> {
        self.0.progress.as_ref().map(|p| JobProgress {
            epoch: p.epoch as i32,
            total_epochs: p.total_epochs as i32,
            step: p.step as i64,
            total_steps: p.total_steps as i64,
            percent: p.percent,
            elapsed_seconds: p.elapsed_seconds,
            eta_seconds: p.eta_seconds,
            stalled_since: p.stalled_since.map(timestamp),
            estimated_end_at: p.estimated_end_at().map(timestamp),
            samples_per_second: p.samples_per_second,
        })
    }
    /// The job's stored checkpoints, oldest first (at most `keepCheckpoints`).
    async fn checkpoints(&self, ctx: &Context<'_>) -> ApiResult<Vec<JobCheckpoint>> {
        let loader = ctx.data_unchecked::<DataLoader<CheckpointsLoader>>();
        Ok(loader
            .load_one(self.0.id.clone())
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(|c| JobCheckpoint {
                step: c.step as i64,
                epoch: c.epoch as i32,
                size_bytes: c.size_bytes as i64,
                created_at: timestamp(c.created_at),
            })
            .collect())
    }
    /// Metrics of every finished epoch, in order.
    async fn epochs(&self, ctx: &Context<'_>) -> ApiResult<Vec<EpochMetrics>> {
        let loader = ctx.data_unchecked::<DataLoader<EpochsLoader>>();
        Ok(loader
            .load_one(self.0.id.clone())
            .await?
            .unwrap_or_default()
            .iter()
            .map(Into::into)
            .collect())
    }
    /// The last `last` points (at most 10000) of a step metric, oldest first; every metric when `name` is
    /// absent. Each 100 points count 1 towards the query's complexity.
    #[graphql(complexity = "child_complexity + (last.clamp(1, 10_000) as usize).div_ceil(100)")]
    async fn metrics(
        &self,
        ctx: &Context<'_>,
        name: Option<String>,
        #[graphql(default = 100)] last: i32,
    ) -> ApiResult<Vec<MetricPoint>> {
        crate::service::jobs::check_metrics_request(name.as_deref(), last.into())?;
        let loader = ctx.data_unchecked::<DataLoader<MetricsLoader>>();
        let key = MetricsKey {
            job_id: self.0.id.clone(),
            name,
            last: last.into(),
        };
        let points = loader.load_one(key).await?.unwrap_or_default();
        Ok(points.into_iter().map(Into::into).collect())
    }
    /// Every step of a metric reduced to at most `points` points (1–10000, default 2000), oldest
    /// first: the steps cut into runs of equal width, each the mean of its values at its last step. The
    /// whole run of a long job at the cost of a short one (charts); `metrics` gives exact values. Each
    /// 100 points count 1 towards the query's complexity.
    #[graphql(complexity = "child_complexity + (points.clamp(1, 10_000) as usize).div_ceil(100)")]
    async fn metric_series(
        &self,
        ctx: &Context<'_>,
        name: String,
        #[graphql(default = 2000)] points: i32,
    ) -> ApiResult<Vec<MetricPoint>> {
        Ok(super::super::service(ctx)
            .metric_series(&self.0.id, &name, points.into())
            .await?
            .into_iter()
            .map(MetricPoint::from)
            .collect())
    }
    /// The model version this job registered, once it has completed.
    async fn model_version(&self, ctx: &Context<'_>) -> ApiResult<Option<ModelVersion>> {
        let Some(id) = &self.0.model_version_id else {
            return Ok(None);
        };
        let loader = ctx.data_unchecked::<DataLoader<ModelVersionLoader>>();
        Ok(loader.load_one(id.clone()).await?.map(ModelVersion))
    }
    /// Why the job failed: what went wrong and what to do, with a reference under which the server log
    /// holds the details.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// How many times a worker has started this job (a pause or a shutdown does not count; a retry
    /// starts again from 0).
    async fn attempts(&self) -> i64 {
        self.0.attempts
    }
    /// Attempts an infrastructure failure may use before the job fails (`KILN_MAX_ATTEMPTS`).
    async fn max_attempts(&self) -> i64 {
        self.0.max_attempts
    }
    /// When a job queued for an automatic retry may start again.
    async fn next_attempt_at(&self) -> Option<String> {
        self.0.next_attempt_at.map(timestamp)
    }
    /// What the job asked of the machine it runs on.
    async fn resources(&self) -> JobResources {
        JobResources(self.0.resources)
    }
    /// The job's time limit over all its attempts, in minutes.
    async fn max_duration_minutes(&self) -> Option<f64> {
        self.0.max_duration_ms.map(|ms| ms as f64 / 60_000.0)
    }
    /// Whether a pause was asked for and the job has not stopped yet.
    async fn pause_requested(&self) -> bool {
        self.0.pause_requested
    }
    async fn created_at(&self) -> String {
        timestamp(self.0.created_at)
    }
    /// While the job is queued: its place in the queue, 1 for the next job a worker takes (jobs
    /// waiting for an automatic retry do not count ahead of others). Null otherwise.
    async fn queue_position(&self, ctx: &Context<'_>) -> ApiResult<Option<i64>> {
        Ok(self.queue_place(ctx).await?.map(|p| p.position))
    }
    /// While the job is queued: when it should start, playing the queue forward over the live
    /// workers with running jobs' ETAs and the usual run time of each model's jobs. Null without a
    /// worker or a known run time.
    async fn estimated_start_at(&self, ctx: &Context<'_>) -> ApiResult<Option<String>> {
        Ok(self
            .queue_place(ctx)
            .await?
            .and_then(|p| p.estimated_start_at)
            .map(timestamp))
    }
    /// While the job is queued: why it waits, in words ("2 jobs ahead of it at HIGH priority", "no
    /// worker is running", "waiting for its retry at …").
    async fn pending_reason(&self, ctx: &Context<'_>) -> ApiResult<Option<String>> {
        Ok(self.queue_place(ctx).await?.map(|p| p.reason))
    }
    async fn started_at(&self) -> Option<String> {
        self.0.started_at.map(timestamp)
    }
    async fn finished_at(&self) -> Option<String> {
        self.0.finished_at.map(timestamp)
    }
}

/// CPUs, memory and GPUs a job asked for (`submitJob`'s `resources`); null: no bound asked for.
pub struct JobResources(crate::domain::Resources);

#[Object]
impl JobResources {
    async fn cpus(&self) -> Option<f64> {
        self.0.cpus
    }
    async fn memory_gb(&self) -> Option<f64> {
        self.0.memory_gb
    }
    async fn gpus(&self) -> i32 {
        self.0.gpus as i32
    }
}
