//! GraphQL output types and enums, converted from domain and store types.

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, Object, SimpleObject, Union};

use super::error::{ApiError, ApiResult};
use super::loaders::{DatasetLoader, EpochsLoader, ModelVersionLoader, VersionsByModelLoader};
use crate::app::AppState;
use crate::domain;
use crate::store::{DatasetRecord, JobRecord, ModelRecord, ModelVersionRecord};

/// The most items one page of a listing returns.
pub const MAX_PAGE: i32 = 100;
/// The most metric points one `Job.metrics` returns.
pub const MAX_METRIC_POINTS: i32 = 10_000;

pub fn state<'a>(ctx: &Context<'a>) -> &'a Arc<AppState> {
    ctx.data_unchecked::<Arc<AppState>>()
}

/// `first` checked against [`MAX_PAGE`].
pub fn page_size(first: Option<i32>) -> ApiResult<i64> {
    let first = first.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(ApiError::bad(
            "first",
            format!("must be between 1 and {MAX_PAGE} (got {first})"),
        ));
    }
    Ok(first as i64)
}

/// Cursors are `<created_at>:<id>` of the last item seen.
pub fn encode_cursor(created_at: i64, id: &str) -> String {
    format!("{created_at}:{id}")
}

pub fn decode_cursor(after: Option<String>) -> ApiResult<Option<(i64, String)>> {
    after
        .map(|raw| {
            raw.split_once(':')
                .and_then(|(at, id)| Some((at.parse().ok()?, id.to_string())))
                .ok_or_else(|| ApiError::bad("after", "is not a cursor returned by this API"))
        })
        .transpose()
}

/// RFC 3339 UTC text of epoch milliseconds.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

macro_rules! mirror_enum {
    ($(#[$meta:meta])* $name:ident => $domain:path { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
        pub enum $name { $($variant),+ }
        impl From<$domain> for $name {
            fn from(v: $domain) -> Self { match v { $(<$domain>::$variant => Self::$variant),+ } }
        }
        impl From<$name> for $domain {
            fn from(v: $name) -> Self { match v { $($name::$variant => <$domain>::$variant),+ } }
        }
    };
}

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
mirror_enum!(
    /// File format of a dataset.
    DatasetFormat => domain::DatasetFormat { Jsonl, Csv }
);
mirror_enum!(
    /// What a dataset can train: TEXT (a text and a label field) or TABULAR (numeric features and a label).
    DatasetKind => domain::DatasetKind { Text, Tabular }
);
mirror_enum!(
    /// UPLOADED while being checked, then READY or INVALID.
    DatasetStatus => domain::DatasetStatus { Uploaded, Ready, Invalid }
);

#[derive(SimpleObject)]
pub struct LabelCount {
    pub label: String,
    pub count: i64,
}

/// One problem found in a dataset file.
#[derive(SimpleObject)]
pub struct DatasetError {
    /// 1-based line of the file (CSV: the header is line 1); null for problems of the whole file.
    pub line: Option<i64>,
    pub message: String,
}

pub struct Dataset(pub DatasetRecord);

#[Object]
impl Dataset {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn format(&self) -> DatasetFormat {
        self.0.format.into()
    }
    /// Known once the file has been read.
    async fn kind(&self) -> Option<DatasetKind> {
        self.0.kind.map(Into::into)
    }
    async fn status(&self) -> DatasetStatus {
        self.0.status.into()
    }
    /// Valid rows (rows with errors are not counted).
    async fn row_count(&self) -> i64 {
        self.0.row_count
    }
    async fn size_bytes(&self) -> i64 {
        self.0.size_bytes
    }
    /// SHA-256 of the uploaded bytes, hex.
    async fn sha256(&self) -> &str {
        &self.0.sha256
    }
    async fn text_field(&self) -> &str {
        &self.0.text_field
    }
    async fn label_field(&self) -> &str {
        &self.0.label_field
    }
    /// Feature columns of a tabular dataset.
    async fn features(&self) -> &[String] {
        &self.0.features
    }
    /// Rows per label, sorted by label.
    async fn labels(&self) -> Vec<LabelCount> {
        self.0
            .labels
            .iter()
            .map(|(label, count)| LabelCount {
                label: label.clone(),
                count: *count,
            })
            .collect()
    }
    /// The first 100 problems found; `errorCount` counts all of them.
    async fn errors(&self) -> Vec<DatasetError> {
        self.0
            .errors
            .iter()
            .map(|e| DatasetError {
                line: e.line.map(|l| l as i64),
                message: e.message.clone(),
            })
            .collect()
    }
    async fn error_count(&self) -> i64 {
        self.0.error_count
    }
    async fn created_at(&self) -> String {
        timestamp(self.0.created_at)
    }
}

/// Hyperparameters a job trains with, defaults filled in.
#[derive(SimpleObject)]
pub struct Hyperparameters {
    pub epochs: i32,
    pub batch_size: i32,
    pub learning_rate: f64,
    pub validation_split: f64,
    pub seed: String,
    pub max_seq_length: i32,
}

impl From<&domain::Hyperparams> for Hyperparameters {
    fn from(h: &domain::Hyperparams) -> Self {
        Self {
            epochs: h.epochs as i32,
            batch_size: h.batch_size as i32,
            learning_rate: h.learning_rate,
            validation_split: h.validation_split,
            seed: h.seed.to_string(),
            max_seq_length: h.max_seq_length as i32,
        }
    }
}

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
}

/// One epoch's results on the validation split (precision, recall, F1: macro averages).
#[derive(SimpleObject, Clone)]
pub struct EpochMetrics {
    pub epoch: i32,
    pub train_loss: f64,
    pub val_loss: f64,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl From<&crate::train::EpochMetrics> for EpochMetrics {
    fn from(m: &crate::train::EpochMetrics) -> Self {
        Self {
            epoch: m.epoch as i32,
            train_loss: m.train_loss,
            val_loss: m.val_loss,
            accuracy: m.accuracy,
            precision: m.precision,
            recall: m.recall,
            f1: m.f1,
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

pub struct Job(pub JobRecord);

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
        self.0.task.into()
    }
    async fn base_model(&self) -> Option<&str> {
        self.0.base_model.as_deref()
    }
    async fn model_config(&self) -> Option<ModelConfig> {
        self.0.model_config.map(|c| ModelConfig {
            hidden_size: c.hidden_size as i32,
            num_layers: c.num_layers as i32,
            num_heads: c.num_heads as i32,
            intermediate_size: c.intermediate_size as i32,
        })
    }
    async fn dataset(&self, ctx: &Context<'_>) -> ApiResult<Option<Dataset>> {
        let loader = ctx.data_unchecked::<DataLoader<DatasetLoader>>();
        Ok(loader
            .load_one(self.0.dataset_id.clone())
            .await?
            .map(Dataset))
    }
    async fn hyperparameters(&self) -> Hyperparameters {
        (&self.0.hyperparameters).into()
    }
    async fn progress(&self) -> Option<JobProgress> {
        let p: crate::runner::Progress = serde_json::from_str(self.0.progress.as_deref()?).ok()?;
        Some(JobProgress {
            epoch: p.epoch as i32,
            total_epochs: p.total_epochs as i32,
            step: p.step as i64,
            total_steps: p.total_steps as i64,
            percent: p.percent,
            elapsed_seconds: p.elapsed_seconds,
            eta_seconds: p.eta_seconds,
        })
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
    /// absent.
    async fn metrics(
        &self,
        ctx: &Context<'_>,
        name: Option<String>,
        #[graphql(default = 100)] last: i32,
    ) -> ApiResult<Vec<MetricPoint>> {
        if !(1..=MAX_METRIC_POINTS).contains(&last) {
            return Err(ApiError::bad(
                "last",
                format!("must be between 1 and {MAX_METRIC_POINTS} (got {last})"),
            ));
        }
        let points = state(ctx)
            .store
            .job_metrics(&self.0.id, name.as_deref(), last as i64)
            .await?;
        Ok(points
            .into_iter()
            .map(|p| MetricPoint {
                name: p.name,
                step: p.step,
                epoch: p.epoch as i32,
                value: p.value,
                at: timestamp(p.created_at),
            })
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
    /// Why the job failed.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// How many times a worker has started this job.
    async fn attempts(&self) -> i64 {
        self.0.attempts
    }
    async fn created_at(&self) -> String {
        timestamp(self.0.created_at)
    }
    async fn started_at(&self) -> Option<String> {
        self.0.started_at.map(timestamp)
    }
    async fn finished_at(&self) -> Option<String> {
        self.0.finished_at.map(timestamp)
    }
}

pub struct Model(pub ModelRecord);

#[Object]
impl Model {
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Every version, oldest first.
    async fn versions(&self, ctx: &Context<'_>) -> ApiResult<Vec<ModelVersion>> {
        let loader = ctx.data_unchecked::<DataLoader<VersionsByModelLoader>>();
        Ok(loader
            .load_one(self.0.name.clone())
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(ModelVersion)
            .collect())
    }
    async fn latest_version(&self, ctx: &Context<'_>) -> ApiResult<Option<ModelVersion>> {
        let loader = ctx.data_unchecked::<DataLoader<VersionsByModelLoader>>();
        Ok(loader
            .load_one(self.0.name.clone())
            .await?
            .unwrap_or_default()
            .into_iter()
            .last()
            .map(ModelVersion))
    }
    async fn created_at(&self) -> String {
        timestamp(self.0.created_at)
    }
}

pub struct ModelVersion(pub ModelVersionRecord);

#[Object]
impl ModelVersion {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// 1, 2, … within its model.
    async fn version(&self) -> i64 {
        self.0.version
    }
    async fn model(&self, ctx: &Context<'_>) -> ApiResult<Model> {
        let model = state(ctx).store.get_model(&self.0.model_name).await?;
        model.map(Model).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("version {} has no model", self.0.id))
        })
    }
    /// The job that trained it.
    async fn job(&self, ctx: &Context<'_>) -> ApiResult<Option<Job>> {
        Ok(state(ctx).store.get_job(&self.0.job_id).await?.map(Job))
    }
    async fn dataset(&self, ctx: &Context<'_>) -> ApiResult<Option<Dataset>> {
        let loader = ctx.data_unchecked::<DataLoader<DatasetLoader>>();
        Ok(loader
            .load_one(self.0.dataset_id.clone())
            .await?
            .map(Dataset))
    }
    /// Metrics of the final epoch.
    async fn metrics(&self) -> ApiResult<EpochMetrics> {
        let m: crate::train::EpochMetrics =
            serde_json::from_str(&self.0.metrics).map_err(ApiError::internal)?;
        Ok((&m).into())
    }
    /// Where its files are: `model.safetensors`, `config.json`, `tokenizer.json` (text), `kiln.json`.
    async fn artifact_uri(&self) -> &str {
        &self.0.artifact_uri
    }
    async fn created_at(&self) -> String {
        timestamp(self.0.created_at)
    }
}

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

/// Events of one job, in the order they happened.
#[derive(Union)]
pub enum JobEvent {
    JobStatusChanged(JobStatusChanged),
    EpochCompleted(EpochCompleted),
    StepProgress(StepProgress),
}

#[derive(SimpleObject)]
pub struct JobStatusChanged {
    pub job_id: ID,
    pub status: JobStatus,
    pub error: Option<String>,
}

#[derive(SimpleObject)]
pub struct EpochCompleted {
    pub job_id: ID,
    #[graphql(flatten)]
    pub metrics: EpochMetrics,
}

/// Sent a few times a second at most while a job trains.
#[derive(SimpleObject)]
pub struct StepProgress {
    pub job_id: ID,
    pub step: i64,
    pub epoch: i32,
    pub loss: f64,
    pub learning_rate: f64,
    pub samples_per_second: f64,
}

impl JobEvent {
    /// The GraphQL form of a bus event; `None` for the bus's own signals, which clients do not see.
    pub fn from_event(job_id: &str, event: &crate::events::JobEvent) -> Option<Self> {
        use crate::events::JobEvent as E;
        let job_id = ID(job_id.to_string());
        Some(match event {
            E::StatusChanged { status, error } => Self::JobStatusChanged(JobStatusChanged {
                job_id,
                status: (*status).into(),
                error: error.clone(),
            }),
            E::EpochCompleted(m) => Self::EpochCompleted(EpochCompleted {
                job_id,
                metrics: m.into(),
            }),
            E::StepProgress {
                step,
                epoch,
                loss,
                learning_rate,
                samples_per_second,
            } => Self::StepProgress(StepProgress {
                job_id,
                step: *step as i64,
                epoch: *epoch as i32,
                loss: *loss,
                learning_rate: *learning_rate,
                samples_per_second: *samples_per_second,
            }),
            E::CancelRequested | E::Resync => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(super::timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::timestamp(1_795_000_000_123),
            "2026-11-18T11:06:40.123Z"
        );
    }
}
