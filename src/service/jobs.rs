//! Jobs as users see them: submit (every rule a job must meet), cancel, look up, list, and follow live.

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    AliasName, BaseModelRef, DatasetStatus, DisplayName, EpochMetrics, FieldError,
    HyperparamsInput, JobFilter, JobRecord, JobStatus, MetricPoint, ModelName, Priority, Resources,
    ResourcesInput, TrainingInput, TrainingSettings, abbreviate, is_plausible_id,
};
use crate::events::JobEvent;
use crate::store::{NewJob, Page};

/// The most metric points one request for a job's step metrics returns.
pub const MAX_METRIC_POINTS: i64 = 10_000;

/// A job as a user submits it, before any check.
#[derive(Debug, Clone)]
pub struct Submission {
    pub name: String,
    pub model_name: String,
    pub dataset_id: String,
    pub training: TrainingInput,
    pub priority: Priority,
    /// The job's time limit over all its attempts; `None`: the server's default.
    pub max_duration_minutes: Option<f64>,
    /// An alias to move to the trained version if it passes the alias's promotion policy.
    pub auto_promote: Option<String>,
    /// Why the job is submitted (up to 1000 characters), kept on the job.
    pub reason: Option<String>,
    /// What it asks of the machine it runs on (checked by [`Resources::parse`]).
    pub resources: ResourcesInput,
    /// Which fields to read from the dataset, over the dataset's own mapping.
    pub fields: crate::domain::MappingInput,
    /// Whether it may train on texts with personal data; `None`: the server's `KILN_ALLOW_PII`.
    pub allow_pii: Option<bool>,
}

/// A refusal of a hyperparameter the submission left out and the model's training defaults gave says
/// so, since the submission never named it.
fn blame_defaults(
    error: FieldError,
    own: &HyperparamsInput,
    defaults: &HyperparamsInput,
    model: &ModelName,
) -> FieldError {
    let Some(rest) = error.field.strip_prefix("hyperparameters.") else {
        return error;
    };
    let name = rest.split(['.', '[']).next().unwrap_or(rest).to_string();
    let named = |input: &HyperparamsInput| input.set_fields().iter().any(|(n, _)| *n == name);
    if named(own) || !named(defaults) {
        return error;
    }
    FieldError::new(
        error.field,
        format!(
            "{} ({name} comes from model {}'s training defaults: give it in the job, or change \
             them with setModelTrainingDefaults)",
            error.message,
            model.as_str()
        ),
    )
}

/// The longest time limit a job may have, in minutes (30 days).
pub const MAX_DURATION_MINUTES: f64 = 43_200.0;

impl Service {
    /// Checks a submission and queues the job. A refused submission is a `BadInput` naming the field,
    /// and nothing is queued.
    #[tracing::instrument(skip_all)]
    pub async fn submit_job(&self, submission: Submission) -> ServiceResult<JobRecord> {
        let model_name = ModelName::parse("modelName", &submission.model_name)?;
        let defaults = self
            .store
            .training_defaults(model_name.as_str())
            .await?
            .map(|(defaults, _)| defaults);
        let job = self
            .checked_job(&submission, &model_name, defaults.as_ref())
            .await
            .map_err(|e| match (e, &defaults) {
                (ServiceError::BadInput(e), Some(defaults)) => {
                    ServiceError::BadInput(blame_defaults(
                        e,
                        &submission.training.hyperparameters,
                        defaults,
                        &model_name,
                    ))
                }
                (e, _) => e,
            })?;
        let job = self.store.insert_job(&job).await?;
        // Idle workers, here and on other replicas, wake up on this event.
        self.events.publish(
            &job.id,
            JobEvent::StatusChanged {
                status: job.status,
                error: None,
            },
        );
        Ok(job)
    }

    /// Every check of a submission, giving the job to queue.
    async fn checked_job(
        &self,
        submission: &Submission,
        model_name: &ModelName,
        defaults: Option<&HyperparamsInput>,
    ) -> ServiceResult<NewJob> {
        let name = DisplayName::parse("name", &submission.name)?;
        // What the input leaves out comes from the model's training defaults, then kiln's.
        let mut training = submission.training.clone();
        if let Some(defaults) = defaults {
            training.hyperparameters = training.hyperparameters.or(defaults);
        }
        // A retrain starts from the version its reference names now, pinned by number.
        let retrain = match training
            .base_model
            .as_deref()
            .map(|raw| BaseModelRef::parse("baseModel", raw))
            .transpose()?
            .flatten()
        {
            Some(BaseModelRef::Registered(reference)) => {
                let (pinned, manifest) = self.registered_version(&reference).await?;
                training.start_from(&pinned, &manifest)?;
                Some(manifest)
            }
            _ => None,
        };
        let settings = TrainingSettings::parse(&training)?;
        let reason = super::registry::reason(submission.reason.as_deref())?;
        let auto_promote = submission
            .auto_promote
            .as_deref()
            .map(|a| AliasName::parse("autoPromote", a))
            .transpose()?;
        if let Some(minutes) = submission.max_duration_minutes
            && !(minutes.is_finite() && minutes > 0.0 && minutes <= MAX_DURATION_MINUTES)
        {
            return Err(FieldError::new(
                "maxDurationMinutes",
                format!(
                    "must be greater than 0 and at most {MAX_DURATION_MINUTES} (got {minutes})"
                ),
            )
            .into());
        }
        let resources = Resources::parse(&submission.resources)?;
        let dataset = self.dataset(&submission.dataset_id).await?.ok_or_else(|| {
            FieldError::new(
                "datasetId",
                format!(
                    "no dataset with id {}",
                    abbreviate(&submission.dataset_id, 100)
                ),
            )
        })?;
        if dataset.status != DatasetStatus::Ready {
            return Err(FieldError::new(
                "datasetId",
                format!(
                    "dataset {} is {}, not READY",
                    dataset.id,
                    dataset.status.as_str()
                ),
            )
            .into());
        }
        if let Some(at) = dataset.archived_at {
            return Err(FieldError::new(
                "datasetId",
                format!(
                    "dataset {} was archived at {}; restore it (restoreDataset) to train on it",
                    dataset.id,
                    crate::domain::timestamp(at)
                ),
            )
            .into());
        }
        // Read with other fields, the dataset is checked again under them.
        let fields = submission.fields.apply("fields.", &dataset.fields)?;
        let remapped;
        let summary = if fields == dataset.fields {
            &dataset.summary
        } else {
            remapped = self.read_with(&dataset, &fields).await?;
            &remapped
        };
        let allow_pii = submission.allow_pii.unwrap_or(self.settings.allow_pii);
        if let Some(pii) = summary.pii.as_ref().filter(|p| !allow_pii && !p.is_clean()) {
            return Err(FieldError::new(
                "datasetId",
                format!(
                    "dataset {} holds personal data or secrets in {} rows of its text ({}); redact \
                     them (redactDataset) or give allowPii: true",
                    dataset.id,
                    pii.rows,
                    pii.describe()
                ),
            )
            .into());
        }
        let wanted = settings.task.dataset_kind();
        if summary.kind != Some(wanted) {
            return Err(FieldError::new(
                "datasetId",
                format!(
                    "dataset {} is {}, which cannot train {}",
                    dataset.id,
                    summary
                        .kind
                        .map(|k| k.as_str())
                        .unwrap_or("of unknown kind"),
                    settings.task.as_str()
                ),
            )
            .into());
        }
        if let Some(weights) = &settings.hyperparameters.class_weights {
            // Labels named in classWeights must be the dataset's.
            let labels: Vec<String> = summary.labels.keys().cloned().collect();
            let counts: Vec<u64> = summary.labels.values().copied().collect();
            weights.resolve(&labels, &counts)?;
        }
        if let Some(manifest) = &retrain {
            let labels: Vec<String> = summary.labels.keys().cloned().collect();
            settings.check_retrain(manifest, &summary.features, &labels)?;
        }
        if let Some(base) = &settings.base_model {
            let roots = Some(&self.settings.model_roots);
            super::training::check_base_model("baseModel", base, roots).await?;
        }
        self.check_training_memory(&settings, summary, &resources)
            .await?;
        Ok(NewJob {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into_string(),
            model_name: model_name.as_str().to_string(),
            dataset_id: dataset.id,
            settings,
            priority: submission.priority,
            max_attempts: self.settings.max_attempts,
            max_duration_ms: submission
                .max_duration_minutes
                .map(|m| (m * 60_000.0).round() as i64)
                .or(self.settings.default_max_duration_ms),
            auto_promote: auto_promote.map(|a| a.as_str().to_string()),
            reason,
            resources,
            fields,
        })
    }

    /// What a dataset holds when read with `fields` instead of its own mapping (and its own rules):
    /// its file is read again. A mapping it does not read with is refused, naming the problems.
    async fn read_with(
        &self,
        dataset: &crate::domain::DatasetRecord,
        fields: &crate::domain::FieldNames,
    ) -> ServiceResult<crate::domain::DatasetSummary> {
        let local = self.local_copy(dataset).await?;
        let file = local.reopen().map_err(anyhow::Error::from)?;
        let (summary, _) = self
            .scan_file(file, dataset.format, fields, &dataset.rules)
            .await?;
        if summary.is_valid() {
            return Ok(summary);
        }
        let listed: Vec<String> = summary
            .errors
            .iter()
            .take(3)
            .map(|e| match e.line {
                Some(line) => format!("line {line}: {}", e.message),
                None => e.message.clone(),
            })
            .collect();
        let more = summary.error_count.saturating_sub(listed.len() as u64);
        Err(FieldError::new(
            "fields",
            format!(
                "dataset {} does not read with these fields: {}{}",
                dataset.id,
                listed.join("; "),
                if more > 0 {
                    format!(" (and {more} more problems)")
                } else {
                    String::new()
                }
            ),
        )
        .into())
    }

    /// Cancels a job: a queued (or paused) one at once; a running one stops before its next training
    /// step, wherever it runs (the worker hears the `CancelRequested` event, or sees the flag at its next
    /// heartbeat). A finished job is a `Conflict`; cancelling a cancelled job is harmless.
    #[tracing::instrument(skip_all, fields(job_id = %id))]
    pub async fn cancel_job(&self, id: &str) -> ServiceResult<JobRecord> {
        if !is_plausible_id(id) {
            return Err(not_found(id));
        }
        let job = self
            .store
            .cancel_job(id)
            .await
            .map_err(|e| job_error(id, e))?;
        match job.status {
            JobStatus::Running => self.events.publish(&job.id, JobEvent::CancelRequested),
            JobStatus::Cancelled => self.events.publish(
                &job.id,
                JobEvent::StatusChanged {
                    status: job.status,
                    error: None,
                },
            ),
            _ => {}
        }
        Ok(job)
    }

    /// Pauses a job: a queued one is held at once (`PAUSED`); a running one checkpoints at its next step
    /// boundary and becomes `PAUSED`, freeing its worker (it hears the `PauseRequested` event, or sees
    /// the flag at its next heartbeat). Pausing a paused job is harmless; an ended one is a `Conflict`.
    #[tracing::instrument(skip_all, fields(job_id = %id))]
    pub async fn pause_job(&self, id: &str) -> ServiceResult<JobRecord> {
        let job = self
            .store
            .pause_job(id)
            .await
            .map_err(|e| job_error(id, e))?;
        match job.status {
            JobStatus::Running => self.events.publish(&job.id, JobEvent::PauseRequested),
            JobStatus::Paused => self.publish_status(&job),
            _ => {}
        }
        Ok(job)
    }

    /// Puts a `PAUSED` job back in the queue; it goes on from its last checkpoint. A queued job is left
    /// as it is; any other status is a `Conflict`.
    #[tracing::instrument(skip_all, fields(job_id = %id))]
    pub async fn resume_job(&self, id: &str) -> ServiceResult<JobRecord> {
        if let Some(job) = self.job(id).await?
            && job.status == JobStatus::Queued
        {
            return Ok(job);
        }
        let job = self
            .store
            .requeue_job(id, &[JobStatus::Paused])
            .await
            .map_err(|e| job_error(id, e))?;
        self.publish_status(&job);
        Ok(job)
    }

    /// Queues a `FAILED` or `CANCELLED` job again, with its attempts and time limit counted afresh: from
    /// its last checkpoint when `from_checkpoint` and it has one, otherwise from the start (its
    /// checkpoints are then deleted). Any other status is a `Conflict`.
    #[tracing::instrument(skip_all, fields(job_id = %id))]
    pub async fn retry_job(&self, id: &str, from_checkpoint: bool) -> ServiceResult<JobRecord> {
        let job = self.job(id).await?.ok_or_else(|| not_found(id))?;
        if !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
            return Err(ServiceError::Conflict(format!(
                "the job is {}; only a FAILED or CANCELLED job can be retried",
                job.status.as_str()
            )));
        }
        if !from_checkpoint {
            self.drop_checkpoints(&job.id)
                .await
                .map_err(ServiceError::Internal)?;
        }
        let job = self
            .store
            .requeue_job(id, &[JobStatus::Failed, JobStatus::Cancelled])
            .await
            .map_err(|e| job_error(id, e))?;
        self.publish_status(&job);
        Ok(job)
    }

    /// A job by id; an id that cannot be one (too long, control characters) names no job.
    #[tracing::instrument(skip_all, fields(job_id = %id))]
    pub async fn job(&self, id: &str) -> ServiceResult<Option<JobRecord>> {
        if !is_plausible_id(id) {
            return Ok(None);
        }
        Ok(self.store.get_job(id).await?)
    }

    /// Jobs by id, in one round trip (ids that name none are left out).
    #[tracing::instrument(skip_all)]
    pub async fn jobs_by_id(&self, ids: &[String]) -> ServiceResult<Vec<JobRecord>> {
        let ids: Vec<String> = ids
            .iter()
            .filter(|id| is_plausible_id(id))
            .cloned()
            .collect();
        Ok(self.store.get_jobs(&ids).await?)
    }

    /// Newest first, `first` at most, after the `(created_at, id)` of the previous page's last row.
    #[tracing::instrument(skip_all)]
    pub async fn jobs(
        &self,
        filter: &JobFilter,
        first: i64,
        after: Option<(i64, String)>,
    ) -> ServiceResult<Vec<JobRecord>> {
        check_filter(filter)?;
        check_cursor(after.as_ref())?;
        Ok(self.store.list_jobs(filter, &Page { first, after }).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn count_jobs(&self, filter: &JobFilter) -> ServiceResult<i64> {
        check_filter(filter)?;
        Ok(self.store.count_jobs(filter).await?)
    }

    /// The last `last` points (1 to [`MAX_METRIC_POINTS`]) of a step metric of each of many jobs, by
    /// job, oldest first; every metric when `name` is `None`. One round trip.
    #[tracing::instrument(skip_all)]
    pub async fn metrics_of(
        &self,
        job_ids: &[String],
        name: Option<&str>,
        last: i64,
    ) -> ServiceResult<Vec<(String, MetricPoint)>> {
        check_metrics_request(name, last)?;
        Ok(self.store.metrics_of(job_ids, name, last).await?)
    }

    /// Every step of a metric of one job, reduced to at most `points` (1 to [`MAX_METRIC_POINTS`])
    /// points of bucket means: the shape of a long run without sending every step.
    #[tracing::instrument(skip_all, fields(job_id = %job_id, name = %name))]
    pub async fn metric_series(
        &self,
        job_id: &str,
        name: &str,
        points: i64,
    ) -> ServiceResult<Vec<MetricPoint>> {
        check_metric_query(Some(name), "points", points)?;
        Ok(self.store.metric_series(job_id, name, points).await?)
    }

    /// The epochs of many jobs in one round trip, by job then epoch.
    #[tracing::instrument(skip_all)]
    pub async fn epochs_of(
        &self,
        job_ids: &[String],
    ) -> ServiceResult<Vec<(String, EpochMetrics)>> {
        Ok(self.store.epochs_of(job_ids).await?)
    }

    /// Every job's status changes and step progress from now on (no replay), for lists that stay
    /// current: `(job id, event)`, or `None` after events were missed (the channel overflowed or the
    /// Redis bridge reconnected), when a list should be read again.
    pub fn watch_jobs(&self) -> impl Stream<Item = Option<(String, JobEvent)>> + use<> {
        let mut rx = self.events.subscribe();
        async_stream::stream! {
            loop {
                match rx.recv().await {
                    Ok(envelope) => match &envelope.event {
                        JobEvent::StatusChanged { .. } | JobEvent::StepProgress { .. } => {
                            yield Some((envelope.job_id.clone(), envelope.event.clone()));
                        }
                        JobEvent::Resync => yield None,
                        _ => {}
                    },
                    Err(RecvError::Lagged(_)) => yield None,
                    Err(RecvError::Closed) => break,
                }
            }
        }
    }

    /// Follows a job: first its current status and the epochs already finished (an ended job: its
    /// epochs, then its final status), then live events until it ends. Nothing is missed or repeated between the stored part and the live part, and a follower
    /// too slow for the event channel catches up from the store (step progress, which is not stored, may
    /// then be skipped). Only events a user sees come out: status changes, epochs and step progress.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn follow_job(
        &self,
        job_id: &str,
    ) -> ServiceResult<impl Stream<Item = JobEvent> + use<>> {
        // Subscribe before reading the store: whatever happens in between arrives live and is dropped
        // as a repeat.
        let mut rx = self.events.subscribe();
        let id = job_id.to_string();
        let job = self.job(&id).await?.ok_or_else(|| {
            ServiceError::NotFound(format!("no job with id {}", abbreviate(&id, 100)))
        })?;
        let stored = self.store.epochs_of(std::slice::from_ref(&id)).await?;
        let store = self.store.clone();
        let service = self.clone();
        Ok(async_stream::stream! {
            let mut status = job.status;
            let mut last_epoch = 0;
            // What a follower of a queued job was last told of its place.
            let mut place: Option<crate::domain::QueuePlace> = None;
            // An ended job's story in the order it happened: its epochs, then how it ended (the last
            // thing a client shows is its final status).
            if !status.is_terminal() {
                yield JobEvent::StatusChanged { status, error: job.error.clone() };
            }
            for (_, epoch) in stored {
                last_epoch = epoch.epoch;
                yield JobEvent::EpochCompleted(epoch);
            }
            if status.is_terminal() {
                yield JobEvent::StatusChanged { status, error: job.error.clone() };
            }
            let mut refresh = tokio::time::interval(super::waiting::QUEUE_REFRESH);
            refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A queued job's place is worked out at once, then again whenever the queue moves.
            let mut replace = status == JobStatus::Queued;
            while !status.is_terminal() {
                if replace && status == JobStatus::Queued {
                    replace = false;
                    let since = std::time::Instant::now();
                    if let Ok(view) = service.queue_view_since(since).await
                        && let Some(now) = view.places.get(&id)
                        && super::waiting::place_moved(place.as_ref(), now)
                    {
                        place = Some(now.clone());
                        yield JobEvent::QueueChanged(now.clone());
                    }
                }
                let received = tokio::select! {
                    received = rx.recv() => received,
                    _ = refresh.tick() => {
                        replace = true;
                        continue;
                    }
                };
                let event = match received {
                    Ok(envelope) if envelope.event == JobEvent::Resync => JobEvent::Resync,
                    Ok(envelope) if envelope.job_id == id => envelope.event.clone(),
                    // Another job starting, ending or moving, or a worker coming or going, moves
                    // the queue.
                    Ok(envelope) => {
                        if matches!(
                            envelope.event,
                            JobEvent::StatusChanged { .. } | JobEvent::QueueMoved
                        ) {
                            replace = true;
                        }
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                    // Too slow for the channel: catch up from the store.
                    Err(RecvError::Lagged(_)) => JobEvent::Resync,
                };
                match event {
                    JobEvent::Resync => {
                        let Ok(Some(job)) = store.get_job(&id).await else { break };
                        let Ok(epochs) = store.epochs_of(std::slice::from_ref(&id)).await else { break };
                        for (_, epoch) in epochs {
                            if epoch.epoch > last_epoch {
                                last_epoch = epoch.epoch;
                                yield JobEvent::EpochCompleted(epoch);
                            }
                        }
                        if job.status != status {
                            status = job.status;
                            yield JobEvent::StatusChanged { status, error: job.error };
                        }
                        replace = true;
                    }
                    JobEvent::StatusChanged { status: next, error } => {
                        if next != status {
                            status = next;
                            yield JobEvent::StatusChanged { status, error };
                        }
                        // Queued again (a retry, a resume): its place is told afresh.
                        place = None;
                        replace = true;
                    }
                    JobEvent::EpochCompleted(m) => {
                        if m.epoch > last_epoch {
                            last_epoch = m.epoch;
                            yield JobEvent::EpochCompleted(m);
                        }
                    }
                    // The epochs after the checkpoint come again.
                    JobEvent::Resumed { from_step, from_epoch } => {
                        last_epoch = last_epoch.min(from_epoch);
                        yield JobEvent::Resumed { from_step, from_epoch };
                    }
                    step @ JobEvent::StepProgress { .. } => yield step,
                    // Its own priority changed.
                    JobEvent::QueueMoved => replace = true,
                    JobEvent::CancelRequested
                    | JobEvent::PauseRequested
                    | JobEvent::Logs(_)
                    | JobEvent::QueueChanged(_)
                    | JobEvent::UploadChanged(_) => {}
                }
            }
        })
    }
}

pub(super) fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no job with id {}", abbreviate(id, 100)))
}

/// A store error about job `id`, with "not found" saying which job.
pub(super) fn job_error(id: &str, e: crate::store::StoreError) -> ServiceError {
    match e {
        crate::store::StoreError::NotFound(_) => not_found(id),
        other => other.into(),
    }
}

/// A request for step metrics names a metric (or none) and asks for 1 to [`MAX_METRIC_POINTS`] points.
pub fn check_metrics_request(name: Option<&str>, last: i64) -> Result<(), FieldError> {
    check_metric_query(name, "last", last)
}

/// A metric name (or none) and a count of points, in the argument `field`, from 1 to
/// [`MAX_METRIC_POINTS`].
fn check_metric_query(name: Option<&str>, field: &str, count: i64) -> Result<(), FieldError> {
    if name.is_some_and(|n| n.len() > 100 || n.chars().any(char::is_control)) {
        return Err(FieldError::new("name", "is not a metric name"));
    }
    if !(1..=MAX_METRIC_POINTS).contains(&count) {
        return Err(FieldError::new(
            field,
            format!("must be between 1 and {MAX_METRIC_POINTS} (got {count})"),
        ));
    }
    Ok(())
}

/// A listing's model-name filter is a model name (or names nothing).
fn check_filter(filter: &JobFilter) -> Result<(), FieldError> {
    if let Some(name) = &filter.model_name {
        ModelName::parse("modelName", name)?;
    }
    Ok(())
}

/// A `(created_at, id)` cursor holds an id (a cursor is opaque, but not tamper-proof).
pub(super) fn check_cursor(after: Option<&(i64, String)>) -> Result<(), FieldError> {
    match after {
        Some((_, id)) if !is_plausible_id(id) => Err(FieldError::new(
            "after",
            "is not a cursor returned by this API",
        )),
        _ => Ok(()),
    }
}
