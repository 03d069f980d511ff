//! Running one claimed job from dataset to registered model.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::sync::mpsc;

use super::{StopFlag, StopReason};
use crate::app::AppState;
use crate::data::{FieldNames, scan};
use crate::domain::{JobStatus, ObjectKey, now_ms};
use crate::events::JobEvent;
use crate::store::{JobRecord, MetricPoint};
use crate::train::{
    self, BaseModel, EpochMetrics, ProgressSink, StepReport, TrainOutcome, TrainSpec,
};

/// Step events are published at most this often.
const STEP_EVENT_INTERVAL: Duration = Duration::from_millis(250);
/// Progress and buffered step metrics are written at most this often (and at every epoch's end).
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// `Job.progress` as stored.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub epoch: u32,
    pub total_epochs: u32,
    pub step: u64,
    pub total_steps: u64,
    pub percent: f64,
    pub elapsed_seconds: f64,
    pub eta_seconds: Option<f64>,
}

enum TrainEvent {
    Step(StepReport),
    Epoch(EpochMetrics),
}

/// Forwards training progress from the blocking thread to the async side.
struct ChannelSink(mpsc::UnboundedSender<TrainEvent>);

impl ProgressSink for ChannelSink {
    fn on_step(&mut self, report: &StepReport) {
        let _ = self.0.send(TrainEvent::Step(report.clone()));
    }
    fn on_epoch(&mut self, metrics: &EpochMetrics) {
        let _ = self.0.send(TrainEvent::Epoch(metrics.clone()));
    }
}

/// Runs a job this worker has claimed and returns the status it ended in.
#[tracing::instrument(skip_all, fields(job_id = %job.id, worker = %worker))]
pub async fn run(state: &Arc<AppState>, worker: &str, job: JobRecord) -> JobStatus {
    state.events.publish(
        &job.id,
        JobEvent::StatusChanged {
            status: JobStatus::Running,
            error: None,
        },
    );
    let flag = state.running.register(&job.id);
    if job.cancel_requested {
        flag.stop(StopReason::Cancel);
    }
    let heartbeat = tokio::spawn(heartbeat(
        state.clone(),
        job.id.clone(),
        worker.to_string(),
        flag.clone(),
    ));
    let result = train_and_register(state, worker, &job, flag.clone()).await;
    heartbeat.abort();
    state.running.remove(&job.id);

    let (to, error) = match result {
        Ok(Some(status)) => return status,
        Ok(None) => match flag.reason() {
            StopReason::Cancel => (JobStatus::Cancelled, None),
            StopReason::Shutdown => (JobStatus::Queued, None),
            // Another worker holds the job now; nothing of ours to write.
            StopReason::LeaseLost | StopReason::None => return JobStatus::Running,
        },
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(error = %message, "job failed");
            (JobStatus::Failed, Some(message))
        }
    };
    match state
        .store
        .finish_job(&job.id, worker, to, error.as_deref())
        .await
    {
        Ok(Some(job)) => {
            state.events.publish(
                &job.id,
                JobEvent::StatusChanged {
                    status: job.status,
                    error: job.error.clone(),
                },
            );
            job.status
        }
        Ok(None) => JobStatus::Running,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "recording the job's end failed");
            JobStatus::Running
        }
    }
}

/// Keeps the lease alive and relays a cancel asked for on another replica: at once when the cancel
/// arrives as an event (shared through Redis), at the next heartbeat when it is only in the database.
async fn heartbeat(state: Arc<AppState>, job_id: String, worker: String, flag: Arc<StopFlag>) {
    let lease_ms = state.config.lease_seconds as i64 * 1000;
    let every = Duration::from_millis((lease_ms / 3).clamp(100, 10_000) as u64);
    let mut events = state.events.subscribe();
    let mut next_beat = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            received = events.recv() => {
                if let Ok(envelope) = received
                    && envelope.job_id == job_id
                    && envelope.event == JobEvent::CancelRequested
                {
                    flag.stop(StopReason::Cancel);
                }
                continue;
            }
            _ = tokio::time::sleep_until(next_beat) => {}
        }
        next_beat = tokio::time::Instant::now() + every;
        match state.store.heartbeat_job(&job_id, &worker, lease_ms).await {
            Ok(Some(true)) => flag.stop(StopReason::Cancel),
            Ok(Some(false)) => {}
            Ok(None) => {
                flag.stop(StopReason::LeaseLost);
                return;
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "heartbeat failed"),
        }
    }
}

/// `Ok(Some(status))` when the job reached a final status here, `Ok(None)` when training was
/// interrupted (the flag says why).
async fn train_and_register(
    state: &Arc<AppState>,
    worker: &str,
    job: &JobRecord,
    flag: Arc<StopFlag>,
) -> Result<Option<JobStatus>> {
    if job.attempts > 1 {
        // No checkpoints yet: a job started again trains from the beginning.
        state.store.reset_job_history(&job.id).await?;
    }
    let dataset = state
        .store
        .get_dataset(&job.dataset_id)
        .await?
        .with_context(|| format!("dataset {} no longer exists", job.dataset_id))?;
    let key = ObjectKey::parse(&dataset.object_key)?;
    let bytes = state
        .objects
        .get_bytes(&key)
        .await
        .context("reading the dataset")?;
    let names = FieldNames {
        text: dataset.text_field.clone(),
        label: dataset.label_field.clone(),
    };
    let format = dataset.format;
    let scanned =
        tokio::task::spawn_blocking(move || scan(&bytes[..], format, &names, true)).await?;
    anyhow::ensure!(
        scanned.is_valid(),
        "the dataset no longer validates: {}",
        scanned
            .errors
            .first()
            .map(|e| e.message.as_str())
            .unwrap_or("unknown error")
    );
    let (data, label_names) = scanned.into_train_data();

    let output_dir = state.config.work_dir.join("jobs").join(&job.id);
    let spec = TrainSpec {
        task: job.task,
        data,
        label_names,
        hyper: job.hyperparameters.clone(),
        base: match &job.base_model {
            Some(reference) => BaseModel::Pretrained(base_model_dir(state, reference).await?),
            None => BaseModel::Random(job.model_config.unwrap_or_default()),
        },
        output_dir: output_dir.clone(),
        device: train::default_device(),
    };

    let (tx, mut rx) = mpsc::unbounded_channel();
    let interrupt = flag.clone();
    let training = tokio::task::spawn_blocking(move || {
        let mut sink = ChannelSink(tx);
        train::run(&spec, &mut sink, interrupt.as_ref())
    });

    let mut recorder = Recorder::new(state.clone(), job.id.clone());
    let mut recorded = Ok(());
    while let Some(event) = rx.recv().await {
        if recorded.is_ok() {
            recorded = recorder.record(event).await;
            if recorded.is_err() {
                // Writing progress failed: stop training rather than run on unrecorded.
                flag.stop(StopReason::Shutdown);
            }
        }
    }
    recorded
        .and(recorder.flush().await)
        .context("recording training progress")?;
    let outcome = training.await.context("the training thread panicked")??;

    let model = match outcome {
        TrainOutcome::Interrupted { .. } => {
            let _ = tokio::fs::remove_dir_all(&output_dir).await;
            return Ok(None);
        }
        TrainOutcome::Completed(model) => model,
    };
    let prefix = ObjectKey::parse(&format!("models/{}/runs/{}", job.model_name, job.id))?;
    for file in &model.files {
        state
            .objects
            .put_file(&prefix.join(file)?, &output_dir.join(file))
            .await?;
    }
    let _ = tokio::fs::remove_dir_all(&output_dir).await;
    let version_id = uuid::Uuid::new_v4().to_string();
    let metrics = serde_json::to_string(&model.final_metrics)?;
    let (done, version) = state
        .store
        .complete_job_with_version(
            job,
            worker,
            &version_id,
            &state.objects.uri(&prefix),
            &metrics,
        )
        .await?;
    tracing::info!(model = %version.model_name, version = version.version, "model registered");
    state.events.publish(
        &done.id,
        JobEvent::StatusChanged {
            status: done.status,
            error: None,
        },
    );
    Ok(Some(done.status))
}

/// The local directory of a base model: the path itself, or the hub cache after downloading.
async fn base_model_dir(state: &AppState, reference: &str) -> Result<std::path::PathBuf> {
    match crate::hub::HubModel::parse("baseModel", reference) {
        None => Ok(reference.into()),
        Some(hub) => {
            let config = &state.config;
            let token = config.hf_token.as_ref().map(|t| t.expose());
            crate::hub::fetch(
                &hub?,
                &config.hf_endpoint,
                token,
                &config.work_dir.join("hub"),
            )
            .await
        }
    }
}

/// Turns training events into store writes and published events, throttled.
struct Recorder {
    state: Arc<AppState>,
    job_id: String,
    pending: Vec<MetricPoint>,
    last_event: Option<Instant>,
    last_write: Instant,
    progress: Progress,
}

impl Recorder {
    fn new(state: Arc<AppState>, job_id: String) -> Self {
        Self {
            state,
            job_id,
            pending: Vec::new(),
            last_event: None,
            last_write: Instant::now(),
            progress: Progress::default(),
        }
    }

    async fn record(&mut self, event: TrainEvent) -> Result<()> {
        match event {
            TrainEvent::Step(r) => {
                let now = now_ms();
                for (name, value) in [("train_loss", r.loss), ("learning_rate", r.learning_rate)] {
                    self.pending.push(MetricPoint {
                        name: name.into(),
                        step: r.step as i64,
                        epoch: r.epoch as i64,
                        value,
                        created_at: now,
                    });
                }
                let done = r.step as f64 / r.total_steps.max(1) as f64;
                self.progress = Progress {
                    epoch: r.epoch,
                    total_epochs: r.total_epochs,
                    step: r.step,
                    total_steps: r.total_steps,
                    percent: (done * 100.0 * 100.0).round() / 100.0,
                    elapsed_seconds: r.elapsed_seconds,
                    eta_seconds: (done > 0.0).then(|| r.elapsed_seconds * (1.0 - done) / done),
                };
                if self
                    .last_event
                    .is_none_or(|t| t.elapsed() >= STEP_EVENT_INTERVAL)
                    || r.step == r.total_steps
                {
                    self.last_event = Some(Instant::now());
                    self.state.events.publish(
                        &self.job_id,
                        JobEvent::StepProgress {
                            step: r.step,
                            epoch: r.epoch,
                            loss: r.loss,
                            learning_rate: r.learning_rate,
                            samples_per_second: r.samples_per_second,
                        },
                    );
                }
                if self.last_write.elapsed() >= PROGRESS_WRITE_INTERVAL || self.pending.len() >= 400
                {
                    self.flush().await?;
                }
            }
            TrainEvent::Epoch(m) => {
                self.flush().await?;
                self.state.store.insert_epoch(&self.job_id, &m).await?;
                self.state
                    .events
                    .publish(&self.job_id, JobEvent::EpochCompleted(m));
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.last_write = Instant::now();
        if !self.pending.is_empty() {
            self.state
                .store
                .insert_metrics(&self.job_id, &self.pending)
                .await?;
            self.pending.clear();
        }
        if self.progress.total_steps > 0 {
            self.state
                .store
                .update_job_progress(&self.job_id, &serde_json::to_string(&self.progress)?)
                .await?;
        }
        Ok(())
    }
}
