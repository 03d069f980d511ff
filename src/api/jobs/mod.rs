//! Jobs: submit, cancel, look up, list, and follow live.

mod analytics;
mod events;
mod logs;
mod queue;
mod training;
mod types;

use async_graphql::{Context, ID, InputObject, Object, Subscription};
use futures::{Stream, StreamExt};

use super::paging::{Count, Page, PageRequest, page};
use super::{ApiResult, service};
use crate::domain::{JobFilter, ModelConfigInput, ResourcesInput, TrainingInput};
use crate::service::Submission;

pub use events::{EpochCompleted, JobChange, JobEvent, JobStatusChanged, StepProgress};
pub use logs::{LogLevel, LogLine};
pub use queue::{QueueMutation, QueueQuery};
pub use training::{CustomizationInputGql, Hyperparameters, HyperparametersInput};
pub use types::{
    EpochMetrics, Job, JobProgress, JobStatus, MetricPoint, ModelConfig, Priority, TaskKind,
};

/// Size of the small random-initialised BERT used when no `baseModel` is given.
/// Defaults: hiddenSize 64, numLayers 2, numHeads 2, intermediateSize 128.
#[derive(InputObject, Default)]
pub struct ModelConfigInputGql {
    pub hidden_size: Option<i32>,
    pub num_layers: Option<i32>,
    pub num_heads: Option<i32>,
    pub intermediate_size: Option<i32>,
}

/// What a job asks of the machine it runs on. On Kubernetes (`KILN_RUNNER=kubernetes`) they are its
/// pod's requests and limits (GPUs as `nvidia.com/gpu`); a local job process gets an address-space
/// limit of `memoryGb` and `ceil(cpus)` threads for its matrix products. Only a worker with at least
/// `gpus` GPUs takes the job.
#[derive(InputObject, Default)]
pub struct ResourcesInputGql {
    /// CPU cores, fractions allowed (0.01–512).
    pub cpus: Option<f64>,
    /// Memory in GiB (greater than 0, at most 4096); refused when training is estimated to need more.
    pub memory_gb: Option<f64>,
    /// Whole GPUs, 0–16 (default 0).
    pub gpus: Option<i32>,
}

#[derive(InputObject)]
pub struct SubmitJobInput {
    /// 1–200 characters.
    pub name: String,
    /// The registry model the result is filed under: 1–64 letters, digits, '.', '_', '-'.
    pub model_name: String,
    pub task: TaskKind,
    /// A READY dataset whose kind fits the task.
    pub dataset_id: ID,
    /// What the weights start from. A pretrained model (text tasks): the path of a HuggingFace-format
    /// directory on the server (`config.json`, `tokenizer.json`, `model.safetensors`), or
    /// `hf:org/name[@revision]` to download from the hub. Or a retrain (either task):
    /// `model:NAME/VERSION` or `model:NAME@ALIAS` starts from that registered version's weights,
    /// tokenizer, head and labels (an alias is resolved when the job is submitted, and the job keeps
    /// the version's number). Absent: a small random-initialised BERT, or a new MLP.
    pub base_model: Option<String>,
    /// With a `model:` base model: start the classification head from random weights, so the
    /// dataset's labels (or the pooling) may differ from the version's. Default false: a label set
    /// that differs is refused.
    #[graphql(default)]
    pub reset_head: bool,
    /// Why the job is submitted (up to 1000 characters), kept on the job.
    pub reason: Option<String>,
    pub model_config: Option<ModelConfigInputGql>,
    pub hyperparameters: Option<HyperparametersInput>,
    /// How the base model's weights are trained: every weight (default) or LoRA adapters.
    pub customization: Option<CustomizationInputGql>,
    #[graphql(default_with = "Priority::Normal")]
    pub priority: Priority,
    /// The job's time limit over all its attempts, in minutes (greater than 0, at most 43200): past it,
    /// the job stops with `FAILED` and its last checkpoint is kept for `retryJob`. Default: the server's
    /// `KILN_MAX_DURATION_MINUTES` (10080, a week).
    pub max_duration_minutes: Option<f64>,
    /// An alias of `modelName` to move to the trained version when the job completes, if the version
    /// passes the alias's promotion policy (a refusal leaves the alias where it was; the alias's history
    /// records a move).
    pub auto_promote: Option<String>,
    /// CPUs, memory and GPUs the job asks for; absent: the worker's own bounds.
    pub resources: Option<ResourcesInputGql>,
    /// Which fields to read from the dataset, over its own mapping (each part left out stays the
    /// dataset's). A mapping other than the dataset's reads its file again at submit, with its rules;
    /// problems are refused under `fields`.
    pub fields: Option<crate::api::datasets::FieldMappingInput>,
    /// Train even if the dataset's texts hold personal data or secrets (`Dataset.pii`). Default: the
    /// server's `KILN_ALLOW_PII` (false unless set), which refuses such a dataset.
    pub allow_pii: Option<bool>,
}

impl From<SubmitJobInput> for Submission {
    fn from(input: SubmitJobInput) -> Self {
        let h = input.hyperparameters.unwrap_or_default();
        Submission {
            name: input.name,
            model_name: input.model_name,
            dataset_id: input.dataset_id.0,
            training: TrainingInput {
                task: Some(input.task.into()),
                base_model: input.base_model,
                model_config: input.model_config.map(|c| ModelConfigInput {
                    hidden_size: c.hidden_size.map(Into::into),
                    num_layers: c.num_layers.map(Into::into),
                    num_heads: c.num_heads.map(Into::into),
                    intermediate_size: c.intermediate_size.map(Into::into),
                }),
                hyperparameters: h.into(),
                customization: input.customization.map(Into::into),
                reset_head: input.reset_head,
            },
            priority: input.priority.into(),
            max_duration_minutes: input.max_duration_minutes,
            auto_promote: input.auto_promote,
            reason: input.reason,
            resources: input
                .resources
                .map(|r| ResourcesInput {
                    cpus: r.cpus,
                    memory_gb: r.memory_gb,
                    gpus: r.gpus.map(Into::into),
                })
                .unwrap_or_default(),
            fields: input.fields.map(Into::into).unwrap_or_default(),
            allow_pii: input.allow_pii,
        }
    }
}

#[derive(Default)]
pub struct JobsQuery;

#[Object]
impl JobsQuery {
    async fn job(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Job>> {
        Ok(service(ctx).job(&id).await?.map(Job))
    }

    /// Newest first. `first`: 1–100 (default 20). `datasetId`: the jobs that train or trained on
    /// that dataset.
    #[graphql(complexity = "super::paging::complexity(first, child_complexity)")]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        status: Option<JobStatus>,
        model_name: Option<String>,
        dataset_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Page<(i64, String), Job>> {
        let filter = JobFilter {
            status: status.map(Into::into),
            model_name,
            dataset_id: dataset_id.map(|id| id.0),
        };
        job_page(ctx, filter, first, after).await
    }
}

/// A page of the jobs `filter` selects, newest first.
pub async fn job_page(
    ctx: &Context<'_>,
    filter: JobFilter,
    first: Option<i32>,
    after: Option<String>,
) -> ApiResult<Page<(i64, String), Job>> {
    let request = PageRequest::parse(first, after)?;
    let rows = service(ctx)
        .jobs(&filter, request.fetch(), request.after.clone())
        .await?;
    Ok(page(
        &request,
        rows,
        Count::Jobs(filter),
        |j| (j.created_at, j.id.clone()),
        Job,
    ))
}

#[derive(Default)]
pub struct JobsMutation;

#[derive(Default)]
pub struct AnalyticsQuery;

#[Object]
impl AnalyticsQuery {
    /// The jobs submitted at or after `since` (RFC 3339, e.g. `2026-11-01T00:00:00Z`, or a date):
    /// counts per status, mean queue wait and running time, over all and per model.
    async fn jobs_summary(
        &self,
        ctx: &Context<'_>,
        since: String,
    ) -> ApiResult<analytics::JobsSummary> {
        Ok(service(ctx).jobs_summary(&since).await?.into())
    }

    /// 2–10 jobs side by side: every hyperparameter (those that differ first, flagged `differs`) and
    /// the final metrics with their differences from the first job listed. Each job counts its selected
    /// fields towards the query's complexity.
    #[graphql(complexity = "child_complexity * ids.len().max(1)")]
    async fn compare_jobs(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
    ) -> ApiResult<analytics::JobComparison> {
        let ids: Vec<String> = ids.into_iter().map(|id| id.0).collect();
        Ok(analytics::compare(service(ctx).compare_jobs(&ids).await?))
    }
}

#[Object]
impl JobsMutation {
    /// Checks the input and queues a job. Invalid input is refused with `BAD_USER_INPUT` naming the field;
    /// nothing is queued then.
    async fn submit_job(&self, ctx: &Context<'_>, input: SubmitJobInput) -> ApiResult<Job> {
        Ok(Job(service(ctx).submit_job(input.into()).await?))
    }

    /// A queued job is cancelled at once; a running one stops before its next training step.
    async fn cancel_job(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Job> {
        Ok(Job(service(ctx).cancel_job(&id).await?))
    }

    /// Deletes an ended job with its epochs, step metrics, log and checkpoints; answers its id.
    /// `CONFLICT` while it is queued, running or paused (cancel it first), or while the model version
    /// it produced exists (delete that version first).
    async fn delete_job(&self, ctx: &Context<'_>, id: ID) -> ApiResult<ID> {
        Ok(ID(service(ctx).delete_job(&id).await?.id))
    }

    /// A queued job is held (`PAUSED`) at once; a running one writes a checkpoint at its next step
    /// boundary and becomes `PAUSED`, freeing its worker. An ended job is refused with `CONFLICT`.
    async fn pause_job(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Job> {
        Ok(Job(service(ctx).pause_job(&id).await?))
    }

    /// Queues a `PAUSED` job again; it goes on from its last checkpoint exactly where it was.
    async fn resume_job(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Job> {
        Ok(Job(service(ctx).resume_job(&id).await?))
    }

    /// Queues a `FAILED` or `CANCELLED` job again (attempts and time limit counted afresh): from its last
    /// checkpoint when `fromCheckpoint` and it has one, otherwise from the start (its checkpoints are
    /// deleted).
    async fn retry_job(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default = true)] from_checkpoint: bool,
    ) -> ApiResult<Job> {
        Ok(Job(service(ctx).retry_job(&id, from_checkpoint).await?))
    }
}

#[derive(Default)]
pub struct JobsSubscription;

#[Subscription]
impl JobsSubscription {
    /// The job's current status and the epochs already finished (an ended job: its epochs, then its
    /// final status), then live events until the job ends.
    /// Nothing is missed or repeated between the stored part and the live part.
    async fn job_events(
        &self,
        ctx: &Context<'_>,
        job_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = JobEvent> + use<>> {
        let events = service(ctx)
            .follow_job(&job_id)
            .await
            .map_err(super::ApiError::from)?;
        let counted = service(ctx).metrics().subscriber("jobEvents");
        let id = job_id.0;
        Ok(events.filter_map(move |event| {
            let _ = &counted;
            std::future::ready(JobEvent::from_event(&id, &event))
        }))
    }

    /// Every job's status changes (a submitted job's `QUEUED` included) and step progress, from now on:
    /// what a list of jobs needs to stay current. `JobChangesMissed` says some were lost (read the
    /// list again).
    async fn job_changes(&self, ctx: &Context<'_>) -> impl Stream<Item = JobChange> + use<> {
        let counted = service(ctx).metrics().subscriber("jobChanges");
        service(ctx).watch_jobs().filter_map(move |change| {
            let _ = &counted;
            std::future::ready(JobChange::from_watch(change))
        })
    }

    /// The job's log: every stored line at `level` or above (default: all), then new lines as they are
    /// written, until the job ends. Nothing is missed or repeated between the stored part and the live
    /// part.
    async fn job_logs(
        &self,
        ctx: &Context<'_>,
        job_id: ID,
        level: Option<LogLevel>,
    ) -> async_graphql::Result<impl Stream<Item = LogLine> + use<>> {
        let level = level.map_or(crate::domain::LogLevel::Debug, Into::into);
        let lines = service(ctx)
            .follow_job_logs(&job_id, level)
            .await
            .map_err(super::ApiError::from)?;
        let counted = service(ctx).metrics().subscriber("jobLogs");
        Ok(lines.map(move |line| {
            let _ = &counted;
            LogLine::from(line)
        }))
    }
}
