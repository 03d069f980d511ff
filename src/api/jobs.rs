//! Jobs: submit, cancel, look up, list, and follow live.

use std::path::Path;

use async_graphql::{Context, ID, InputObject, Object, Subscription};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::error::{ApiError, ApiResult};
use super::types::{
    Job, JobEvent, JobStatus, PageInfo, Priority, TaskKind, decode_cursor, encode_cursor,
    page_size, state,
};
use crate::domain::{
    self, DatasetKind, DatasetStatus, Hyperparams, HyperparamsInput, ModelConfig, ModelConfigInput,
    ModelName,
};
use crate::events::JobEvent as BusEvent;
use crate::store::{JobFilter, NewJob, Page};

/// Longest job name.
pub const MAX_JOB_NAME: usize = 200;

/// Training settings; every field is optional.
/// Defaults: epochs 3, batchSize 16, learningRate 5e-5 when fine-tuning a `baseModel` and 1e-3 when
/// training from random weights, validationSplit 0.2, seed 42, maxSeqLength 128.
/// Limits: epochs 1–1000, batchSize 1–4096, learningRate in (0, 1], validationSplit in (0, 1),
/// maxSeqLength 8–512.
#[derive(InputObject, Default)]
pub struct HyperparametersInput {
    pub epochs: Option<i32>,
    pub batch_size: Option<i32>,
    pub learning_rate: Option<f64>,
    pub validation_split: Option<f64>,
    pub seed: Option<i64>,
    pub max_seq_length: Option<i32>,
}

/// Size of the small random-initialised BERT used when no `baseModel` is given.
/// Defaults: hiddenSize 64, numLayers 2, numHeads 2, intermediateSize 128.
#[derive(InputObject, Default)]
pub struct ModelConfigInputGql {
    pub hidden_size: Option<i32>,
    pub num_layers: Option<i32>,
    pub num_heads: Option<i32>,
    pub intermediate_size: Option<i32>,
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
    /// The pretrained model to fine-tune: the path of a HuggingFace-format directory on the server
    /// (`config.json`, `tokenizer.json`, `model.safetensors`), or `hf:org/name[@revision]` to download
    /// from the hub. Absent: a small random-initialised BERT. Text tasks only.
    pub base_model: Option<String>,
    pub model_config: Option<ModelConfigInputGql>,
    pub hyperparameters: Option<HyperparametersInput>,
    #[graphql(default_with = "Priority::Normal")]
    pub priority: Priority,
}

#[derive(Default)]
pub struct JobsQuery;

#[Object]
impl JobsQuery {
    async fn job(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Job>> {
        Ok(state(ctx).store.get_job(&id).await?.map(Job))
    }

    /// Newest first. `first`: 1–100 (default 20).
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        status: Option<JobStatus>,
        model_name: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<JobConnection> {
        let first = page_size(first)?;
        let filter = JobFilter {
            status: status.map(Into::into),
            model_name,
        };
        let page = Page {
            first: first + 1,
            after: decode_cursor(after)?,
        };
        let mut jobs = state(ctx).store.list_jobs(&filter, &page).await?;
        let has_next_page = jobs.len() as i64 > first;
        jobs.truncate(first as usize);
        Ok(JobConnection {
            jobs,
            has_next_page,
            filter,
        })
    }
}

pub struct JobConnection {
    jobs: Vec<crate::store::JobRecord>,
    has_next_page: bool,
    filter: JobFilter,
}

pub struct JobEdge(crate::store::JobRecord);

#[Object]
impl JobEdge {
    async fn cursor(&self) -> String {
        encode_cursor(self.0.created_at, &self.0.id)
    }
    async fn node(&self) -> Job {
        Job(self.0.clone())
    }
}

#[Object]
impl JobConnection {
    async fn edges(&self) -> Vec<JobEdge> {
        self.jobs.iter().cloned().map(JobEdge).collect()
    }
    async fn nodes(&self) -> Vec<Job> {
        self.jobs.iter().cloned().map(Job).collect()
    }
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next_page,
            end_cursor: self.jobs.last().map(|j| encode_cursor(j.created_at, &j.id)),
        }
    }
    /// All jobs matching the filter (costs one more query; ask only when shown).
    async fn total_count(&self, ctx: &Context<'_>) -> ApiResult<i64> {
        Ok(state(ctx).store.count_jobs(&self.filter).await?)
    }
}

#[derive(Default)]
pub struct JobsMutation;

#[Object]
impl JobsMutation {
    /// Checks the input and queues a job. Invalid input is refused with `BAD_USER_INPUT` naming the field;
    /// nothing is queued then.
    async fn submit_job(&self, ctx: &Context<'_>, input: SubmitJobInput) -> ApiResult<Job> {
        let app = state(ctx);
        let new = parse_submission(ctx, input).await?;
        let job = app.store.insert_job(&new).await?;
        app.events.publish(
            &job.id,
            BusEvent::StatusChanged {
                status: job.status,
                error: None,
            },
        );
        app.wake_workers.notify_waiters();
        Ok(Job(job))
    }

    /// A queued job is cancelled at once; a running one stops before its next training step.
    async fn cancel_job(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Job> {
        let app = state(ctx);
        let job = app.store.cancel_job(&id).await.map_err(|e| match e {
            crate::store::StoreError::NotFound(_) => {
                ApiError::NotFound(format!("no job with id {}", id.as_str()))
            }
            other => other.into(),
        })?;
        match job.status {
            // Stopped here at once; on another replica through the event bus (or its next heartbeat).
            domain::JobStatus::Running
                if !app.running.stop(&job.id, crate::runner::StopReason::Cancel) =>
            {
                app.events.publish(&job.id, BusEvent::CancelRequested);
            }
            domain::JobStatus::Cancelled => {
                app.events.publish(
                    &job.id,
                    BusEvent::StatusChanged {
                        status: job.status,
                        error: None,
                    },
                );
            }
            _ => {}
        }
        Ok(Job(job))
    }
}

async fn parse_submission(ctx: &Context<'_>, input: SubmitJobInput) -> ApiResult<NewJob> {
    let app = state(ctx);
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_JOB_NAME {
        return Err(ApiError::bad(
            "name",
            format!("must be 1 to {MAX_JOB_NAME} characters"),
        ));
    }
    let model_name = ModelName::parse("modelName", &input.model_name)?;
    let task: domain::TaskKind = input.task.into();
    let dataset = app
        .store
        .get_dataset(&input.dataset_id)
        .await?
        .ok_or_else(|| {
            ApiError::bad(
                "datasetId",
                format!("no dataset with id {}", input.dataset_id.as_str()),
            )
        })?;
    if dataset.status != DatasetStatus::Ready {
        return Err(ApiError::bad(
            "datasetId",
            format!(
                "dataset {} is {}, not READY",
                dataset.id,
                dataset.status.as_str()
            ),
        ));
    }
    let wanted = match task {
        domain::TaskKind::TextClassification => DatasetKind::Text,
        domain::TaskKind::TabularClassification => DatasetKind::Tabular,
    };
    if dataset.kind != Some(wanted) {
        return Err(ApiError::bad(
            "datasetId",
            format!(
                "dataset {} is {}, which cannot train {}",
                dataset.id,
                dataset
                    .kind
                    .map(|k| k.as_str())
                    .unwrap_or("of unknown kind"),
                task.as_str()
            ),
        ));
    }
    let base_model = match input.base_model.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(_) if task != domain::TaskKind::TextClassification => {
            return Err(ApiError::bad(
                "baseModel",
                "applies to TEXT_CLASSIFICATION only",
            ));
        }
        Some(reference) => match crate::hub::HubModel::parse("baseModel", reference) {
            Some(hub) => {
                hub?;
                Some(reference.to_string())
            }
            None => {
                check_model_dir(Path::new(reference)).await?;
                Some(reference.to_string())
            }
        },
    };
    let model_config = match (&input.model_config, &base_model, task) {
        (Some(_), Some(_), _) => {
            return Err(ApiError::bad(
                "modelConfig",
                "cannot be combined with baseModel",
            ));
        }
        (Some(_), None, domain::TaskKind::TabularClassification) => {
            return Err(ApiError::bad(
                "modelConfig",
                "applies to TEXT_CLASSIFICATION only",
            ));
        }
        (Some(c), None, _) => Some(ModelConfig::parse(
            "modelConfig",
            &ModelConfigInput {
                hidden_size: c.hidden_size.map(Into::into),
                num_layers: c.num_layers.map(Into::into),
                num_heads: c.num_heads.map(Into::into),
                intermediate_size: c.intermediate_size.map(Into::into),
            },
        )?),
        (None, None, domain::TaskKind::TextClassification) => Some(ModelConfig::default()),
        (None, _, _) => None,
    };
    let h = input.hyperparameters.unwrap_or_default();
    let hyperparameters = Hyperparams::parse(
        "hyperparameters",
        &HyperparamsInput {
            epochs: h.epochs.map(Into::into),
            batch_size: h.batch_size.map(Into::into),
            learning_rate: h.learning_rate,
            validation_split: h.validation_split,
            seed: h.seed,
            max_seq_length: h.max_seq_length.map(Into::into),
        },
        base_model.is_some(),
    )?;
    Ok(NewJob {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        model_name: model_name.as_str().to_string(),
        task,
        dataset_id: dataset.id,
        base_model,
        model_config,
        hyperparameters,
        priority: input.priority.into(),
        max_attempts: app.config.max_attempts,
    })
}

/// A base model directory must hold the three files kiln reads.
async fn check_model_dir(dir: &Path) -> ApiResult<()> {
    if !tokio::fs::metadata(dir)
        .await
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        return Err(ApiError::bad(
            "baseModel",
            format!("{} is not a directory on the server", dir.display()),
        ));
    }
    for file in crate::hub::MODEL_FILES {
        if tokio::fs::metadata(dir.join(file)).await.is_err() {
            return Err(ApiError::bad(
                "baseModel",
                format!("{} has no {file}", dir.display()),
            ));
        }
    }
    Ok(())
}

#[derive(Default)]
pub struct JobsSubscription;

#[Subscription]
impl JobsSubscription {
    /// The job's current status and the epochs already finished, then live events until the job ends.
    /// Nothing is missed or repeated between the stored part and the live part.
    async fn job_events(
        &self,
        ctx: &Context<'_>,
        job_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = JobEvent> + use<>> {
        Ok(job_event_stream(ctx, job_id).await?)
    }
}

async fn job_event_stream(
    ctx: &Context<'_>,
    job_id: ID,
) -> ApiResult<impl Stream<Item = JobEvent> + use<>> {
    let app = state(ctx).clone();
    // Subscribe before reading the store: whatever happens in between arrives live and is de-duplicated.
    let mut rx = app.events.subscribe();
    let id = job_id.to_string();
    let job = app
        .store
        .get_job(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job with id {id}")))?;
    let stored = app.store.epochs_of(std::slice::from_ref(&id)).await?;
    Ok(async_stream::stream! {
        let mut status = job.status;
        let mut last_epoch = 0;
        let current = BusEvent::StatusChanged { status, error: job.error.clone() };
        if let Some(e) = JobEvent::from_event(&id, &current) {
            yield e;
        }
        for (_, epoch) in &stored {
            last_epoch = epoch.epoch;
            if let Some(e) = JobEvent::from_event(&id, &BusEvent::EpochCompleted(epoch.clone())) {
                yield e;
            }
        }
        while !status.is_terminal() {
            let event = match rx.recv().await {
                Ok(envelope) if envelope.event == BusEvent::Resync => BusEvent::Resync,
                Ok(envelope) if envelope.job_id == id => envelope.event.clone(),
                Ok(_) => continue,
                Err(RecvError::Closed) => break,
                // Too slow for the channel: catch up from the store.
                Err(RecvError::Lagged(_)) => BusEvent::Resync,
            };
            match &event {
                BusEvent::Resync => {
                    let Ok(Some(job)) = app.store.get_job(&id).await else { break };
                    let Ok(epochs) = app.store.epochs_of(std::slice::from_ref(&id)).await else { break };
                    let missed: Vec<_> = epochs.into_iter().filter(|(_, e)| e.epoch > last_epoch).collect();
                    for (_, epoch) in missed {
                        last_epoch = epoch.epoch;
                        if let Some(e) = JobEvent::from_event(&id, &BusEvent::EpochCompleted(epoch)) {
                            yield e;
                        }
                    }
                    if job.status != status {
                        status = job.status;
                        let current = BusEvent::StatusChanged { status, error: job.error };
                        if let Some(e) = JobEvent::from_event(&id, &current) {
                            yield e;
                        }
                    }
                    continue;
                }
                BusEvent::StatusChanged { status: next, .. } => {
                    if *next == status {
                        continue;
                    }
                    status = *next;
                }
                BusEvent::EpochCompleted(m) => {
                    if m.epoch <= last_epoch {
                        continue;
                    }
                    last_epoch = m.epoch;
                }
                BusEvent::StepProgress { .. } => {}
                BusEvent::CancelRequested => continue,
            }
            if let Some(e) = JobEvent::from_event(&id, &event) {
                yield e;
            }
        }
    })
}
