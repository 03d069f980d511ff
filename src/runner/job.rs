//! The job itself, wherever it runs: from a claimed job to a registered model, recording progress as it
//! goes. Its end (cancelled, requeued, failed) is written by whoever supervises it ([`super::control`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use super::control;
use super::{StopFlag, StopReason, WorkerSettings};
use crate::domain::{
    EpochMetrics, JobProgress, JobRecord, JobStatus, MetricPoint, ParameterCount, UserError, now_ms,
};
use crate::events::JobEvent;
use crate::service::logs::JobLog;
use crate::service::{Lease, ServiceError, TrainingRecord, WorkQueue};
use crate::train::{self, ProgressSink, StepReport, TrainOutcome, TrainSpec};

/// Step events are published at most this often.
const STEP_EVENT_INTERVAL: Duration = Duration::from_millis(250);
/// Progress and buffered step metrics are written at most this often (and at every epoch's end).
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// Step metrics buffered before a write regardless of time.
const MAX_PENDING_POINTS: usize = 400;

enum TrainEvent {
    Start(ParameterCount),
    Step(StepReport),
    Epoch(EpochMetrics),
    Checkpoint(Box<train::Checkpoint>),
}

/// Forwards training progress from the blocking thread to the async side.
struct ChannelSink(mpsc::UnboundedSender<TrainEvent>);

impl ProgressSink for ChannelSink {
    fn on_start(&mut self, parameters: &ParameterCount) {
        let _ = self.0.send(TrainEvent::Start(*parameters));
    }
    fn on_step(&mut self, report: &StepReport) {
        let _ = self.0.send(TrainEvent::Step(report.clone()));
    }
    fn on_epoch(&mut self, metrics: &EpochMetrics) {
        let _ = self.0.send(TrainEvent::Epoch(metrics.clone()));
    }
    fn on_checkpoint(&mut self, checkpoint: &train::Checkpoint) {
        let _ = self
            .0
            .send(TrainEvent::Checkpoint(Box::new(checkpoint.clone())));
    }
}

/// `Ok(Some(status))` when the job reached a final status here, `Ok(None)` when training was
/// interrupted (the flag says why). Errors carry a `UserError` for `Job.error` where one applies.
pub(super) async fn train_and_register(
    service: &WorkQueue,
    settings: &WorkerSettings,
    job: &JobRecord,
    worker: &str,
    flag: Arc<StopFlag>,
) -> Result<Option<JobStatus>> {
    let log = service.job_log(&job.id);
    let run = run_logged(service, settings, job, worker, flag, &log).await;
    log.close().await;
    run
}

async fn run_logged(
    service: &WorkQueue,
    settings: &WorkerSettings,
    job: &JobRecord,
    worker: &str,
    flag: Arc<StopFlag>,
    log: &JobLog,
) -> Result<Option<JobStatus>> {
    let job_dir = settings.work_dir.join("jobs").join(&job.id);
    let cleanup = JobDir(job_dir.clone());
    // Setup (copying the dataset, downloading a base model and the last checkpoint) stops as soon as
    // the job is asked to.
    let prepared = tokio::select! {
        prepared = prepare(service, job, &job_dir, log) => prepared?,
        _ = flag.stopped() => return Ok(None),
    };
    let (examples, base_dir, resume) = prepared;
    log.info(format!(
        "dataset {} read: {} examples, labels {}",
        job.dataset_id,
        examples.len(),
        examples.label_names().join(", ")
    ));
    if let Some(base) = &job.settings.base_model {
        let head = if job.settings.reset_head {
            ", its head to be trained afresh (resetHead)"
        } else {
            ""
        };
        log.info(format!("base model {base} ready{head}"));
    }
    // Whatever an earlier attempt recorded after the checkpoint is gone; followers hear it.
    if (resume.is_some() || job.attempts > 1 || job.progress.is_some())
        && !control::while_unavailable(|| {
            service.rewind_job(job, worker, resume.as_ref().map(|(record, _)| record))
        })
        .await?
    {
        flag.stop(StopReason::LeaseLost);
        return Ok(None);
    }
    if let Some((record, _)) = &resume {
        log.info(format!(
            "going on from the checkpoint at step {} (epoch {})",
            record.step, record.epoch
        ));
        tracing::info!(
            job_id = %job.id,
            step = record.step,
            epoch = record.epoch,
            "going on from the last checkpoint"
        );
    }
    // Opening a GPU initialises its driver, which can take seconds: not on the runtime's threads,
    // where the lease's heartbeats run.
    let device = service.settings().device;
    let placement = tokio::task::spawn_blocking(move || device.open())
        .await
        .context("the device-opening thread ended")??;
    if let Some(note) = &placement.note {
        log.warn(note);
    }
    log.info(format!("training on {}", placement.name));
    if !control::while_unavailable(|| service.record_device(&job.id, worker, &placement.name))
        .await?
    {
        flag.stop(StopReason::LeaseLost);
        return Ok(None);
    }
    let output_dir = job_dir.join("model");
    let examples = crate::service::training::augmented(examples, &job.settings.hyperparameters);
    let mut spec = TrainSpec::new(job.settings.clone(), examples, base_dir, output_dir.clone());
    spec.device = placement.device;
    spec.max_memory = Some(service.settings().max_train_memory);
    spec.checkpoint_dir = Some(job_dir.join("checkpoints"));
    spec.resume = resume.map(|(_, checkpoint)| checkpoint);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let interrupt = flag.clone();
    let training = tokio::task::spawn_blocking(move || {
        let mut sink = ChannelSink(tx);
        train::run(&spec, &mut sink, interrupt.as_ref())
    });

    let keep = job.settings.hyperparameters.keep_checkpoints as usize;
    let mut recorder = Recorder::new(service.clone(), job.id.clone(), worker.to_string(), keep);
    // Once a write fails or finds the lease gone, training is stopped and the rest only drained.
    let mut recording: Result<()> = Ok(());
    let epochs = job.settings.hyperparameters.epochs;
    while let Some(event) = rx.recv().await {
        match &event {
            TrainEvent::Start(counts) => log.info(format!(
                "model built: {} parameters, {} trained",
                counts.total, counts.trainable
            )),
            TrainEvent::Epoch(m) => log.info(format!(
                "epoch {}/{epochs}: train loss {:.4}, validation loss {:.4}, accuracy {:.4}, f1 {:.4}",
                m.epoch, m.train_loss, m.val_loss, m.accuracy, m.f1
            )),
            TrainEvent::Checkpoint(c) => log.info(format!(
                "checkpoint at step {} (epoch {})",
                c.manifest.step, c.manifest.epochs_done
            )),
            TrainEvent::Step(_) => {}
        }
        if recording.is_ok() {
            recording = settle(recorder.record(event).await, &flag);
        }
    }
    if recording.is_ok() {
        recording = settle(recorder.flush().await.map(Some), &flag);
    }
    let outcome = training.await.context("the training thread panicked")?;
    if flag.reason() == StopReason::LeaseLost {
        return Ok(None);
    }
    recording.map_err(|e| {
        UserError::wrap("recording training progress failed; retry the job later", e)
    })?;
    let model = match outcome? {
        TrainOutcome::Interrupted { .. } => return Ok(None),
        TrainOutcome::Completed(model) => model,
    };
    // Every line so far is stored before the job's end is written.
    log.flush().await;
    control::while_unavailable(|| {
        service.register_model_version(job, worker, &output_dir, &model.files, &model.manifest)
    })
    .await
    .map_err(|e| {
        UserError::wrap(
            "the trained model could not be stored; retry the job later",
            e,
        )
    })?;
    // A completed job is never continued: its checkpoints have served.
    if let Err(e) = service.drop_checkpoints(&job.id).await {
        tracing::warn!(job_id = %job.id, error = format!("{e:#}"), "removing a completed job's checkpoints failed");
    }
    drop(cleanup);
    Ok(Some(JobStatus::Completed))
}

/// A job's working folder (its dataset copy and the model being written), removed however the job
/// ends.
struct JobDir(std::path::PathBuf);

impl Drop for JobDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a job's run starts from: its newest intact checkpoint, with its row.
type Resume = Option<(crate::domain::CheckpointRecord, train::Checkpoint)>;

/// The job's examples (its dataset copied into `dir`, indexed), its base model's local folder, and its
/// newest checkpoint (downloaded into `dir`), if it has one.
async fn prepare(
    service: &WorkQueue,
    job: &JobRecord,
    dir: &std::path::Path,
    log: &JobLog,
) -> Result<(crate::domain::TrainData, Option<std::path::PathBuf>, Resume)> {
    let examples = service
        .training_examples(&job.dataset_id, job.fields.as_ref(), &dir.join("data"))
        .await?;
    let base_dir = match &job.settings.base_model {
        Some(base) => Some(
            service
                .base_model_dir(base, dir, &|line| log.info(line))
                .await
                .map_err(|e| {
                    UserError::wrap(
                        "the base model could not be fetched; retry the job later",
                        e,
                    )
                })?,
        ),
        None => None,
    };
    let resume = service
        .fetch_checkpoint(&job.id, &dir.join("resume"))
        .await
        .map_err(|e| UserError::wrap("the job's last checkpoint could not be read", e))?;
    Ok((examples, base_dir, resume))
}

/// What a recorder's write means for training: it goes on while the lease is held (or the write was
/// put off because the database is unreachable); it stops when the lease is gone (another worker holds
/// the job) or the write failed (rather than run on unrecorded).
fn settle(written: Result<Option<Lease>>, flag: &StopFlag) -> Result<()> {
    match written {
        Ok(None | Some(Lease::Held { .. })) => Ok(()),
        Ok(Some(Lease::Lost)) => {
            flag.stop(StopReason::LeaseLost);
            Err(anyhow::anyhow!(
                "the job's lease was taken over by another worker"
            ))
        }
        Err(e) => {
            flag.stop(StopReason::Shutdown);
            Err(e)
        }
    }
}

/// Step metrics kept while the database is unreachable; beyond this the oldest are dropped (progress
/// and epochs never are).
const MAX_DEFERRED_POINTS: usize = 100_000;

/// Turns training events into recorded progress and published step events, throttled. Every write is
/// fenced by the lease: once it reports [`Lease::Lost`], nothing more is written. While the database
/// cannot be reached, what is not written yet is kept and written when it comes back; training goes on.
struct Recorder {
    service: WorkQueue,
    job_id: String,
    worker: String,
    /// Checkpoints kept in the object store.
    keep: usize,
    pending: Vec<MetricPoint>,
    /// Finished epochs not written yet, oldest first.
    epochs: Vec<EpochMetrics>,
    last_event: Option<Instant>,
    last_write: Instant,
    progress: Option<JobProgress>,
    /// What the run trains, once its model is built; carried in every progress written.
    parameters: Option<ParameterCount>,
    /// Since when writes have been put off.
    deferred_since: Option<Instant>,
}

impl Recorder {
    fn new(service: WorkQueue, job_id: String, worker: String, keep: usize) -> Self {
        Self {
            service,
            job_id,
            worker,
            keep,
            pending: Vec::new(),
            epochs: Vec::new(),
            last_event: None,
            last_write: Instant::now(),
            progress: None,
            parameters: None,
            deferred_since: None,
        }
    }

    /// `Ok(None)` when the write was put off.
    async fn record(&mut self, event: TrainEvent) -> Result<Option<Lease>> {
        match event {
            TrainEvent::Start(parameters) => {
                self.parameters = Some(parameters);
                if let Some(progress) = &mut self.progress {
                    progress.parameter_count = Some(parameters);
                }
                Ok(Some(Lease::HELD))
            }
            TrainEvent::Step(r) => {
                let now = now_ms();
                for (name, value) in [
                    ("train_loss", r.loss),
                    ("learning_rate", r.learning_rate),
                    ("samples_per_second", r.samples_per_second),
                ] {
                    self.pending.push(MetricPoint {
                        name: name.into(),
                        step: r.step as i64,
                        epoch: r.epoch as i64,
                        value,
                        created_at: now,
                    });
                }
                self.progress = Some(JobProgress {
                    parameter_count: self.parameters,
                    samples_per_second: Some(r.samples_per_second),
                    ..JobProgress::at(
                        r.epoch,
                        r.total_epochs,
                        r.step,
                        r.total_steps,
                        r.elapsed_seconds,
                    )
                });
                if self
                    .last_event
                    .is_none_or(|t| t.elapsed() >= STEP_EVENT_INTERVAL)
                    || r.step == r.total_steps
                {
                    self.last_event = Some(Instant::now());
                    self.service.events().publish(
                        &self.job_id,
                        JobEvent::StepProgress {
                            step: r.step,
                            total_steps: r.total_steps,
                            epoch: r.epoch,
                            total_epochs: r.total_epochs,
                            loss: r.loss,
                            learning_rate: r.learning_rate,
                            samples_per_second: r.samples_per_second,
                        },
                    );
                }
                if self.last_write.elapsed() >= PROGRESS_WRITE_INTERVAL
                    || self.pending.len() >= MAX_PENDING_POINTS && self.deferred_since.is_none()
                {
                    return self.write().await;
                }
                Ok(Some(Lease::HELD))
            }
            TrainEvent::Epoch(m) => {
                self.epochs.push(m);
                self.write().await
            }
            TrainEvent::Checkpoint(checkpoint) => {
                // What led up to the checkpoint is recorded before it is.
                match self.write().await? {
                    Some(Lease::Lost) => return Ok(Some(Lease::Lost)),
                    None => {
                        tracing::warn!(
                            step = checkpoint.manifest.step,
                            "the database is unreachable; this checkpoint is not stored"
                        );
                        let _ = std::fs::remove_dir_all(&checkpoint.dir);
                        return Ok(None);
                    }
                    Some(Lease::Held { .. }) => {}
                }
                let stored = self
                    .service
                    .store_checkpoint(&self.job_id, &self.worker, &checkpoint, self.keep)
                    .await;
                let _ = std::fs::remove_dir_all(&checkpoint.dir);
                match stored {
                    Ok(true) => Ok(Some(Lease::HELD)),
                    Ok(false) => Ok(Some(Lease::Lost)),
                    // The previous checkpoint stays the one to go on from; training goes on.
                    Err(e) => {
                        tracing::warn!(
                            step = checkpoint.manifest.step,
                            error = format!("{e:#}"),
                            "storing a checkpoint failed; the previous one stays the last"
                        );
                        Ok(Some(Lease::HELD))
                    }
                }
            }
        }
    }

    /// Writes everything pending, waiting for the database to come back if it must (for at most
    /// [`control::OUTAGE_PATIENCE`]).
    async fn flush(&mut self) -> Result<Lease> {
        loop {
            if let Some(lease) = self.write().await? {
                return Ok(lease);
            }
            let waited = self.deferred_since.map(|t| t.elapsed()).unwrap_or_default();
            if waited > control::OUTAGE_PATIENCE {
                // An infrastructure failure: the job is retried later from its last checkpoint.
                return Err(
                    anyhow::Error::new(ServiceError::Unavailable).context(format!(
                        "the database stayed unreachable for {} s",
                        waited.as_secs()
                    )),
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Writes what is pending, each epoch in a transaction of its own, in order; `Ok(None)` when the
    /// database is unreachable (everything stays pending).
    async fn write(&mut self) -> Result<Option<Lease>> {
        self.last_write = Instant::now();
        loop {
            let epoch = self.epochs.first().cloned();
            let record = TrainingRecord {
                progress: self.progress.as_ref(),
                points: &self.pending,
                epoch: epoch.as_ref(),
            };
            match self
                .service
                .record_training(&self.job_id, &self.worker, record)
                .await
            {
                Ok(Lease::Lost) => return Ok(Some(Lease::Lost)),
                Ok(held) => {
                    self.pending.clear();
                    self.progress = None;
                    if epoch.is_some() {
                        self.epochs.remove(0);
                    }
                    if self.epochs.is_empty() {
                        if let Some(since) = self.deferred_since.take() {
                            tracing::info!(
                                seconds = since.elapsed().as_secs(),
                                "the database is back; the progress kept meanwhile is written"
                            );
                        }
                        return Ok(Some(held));
                    }
                }
                Err(ServiceError::Unavailable) => {
                    if self.deferred_since.is_none() {
                        tracing::warn!(
                            "the database is unreachable; keeping progress until it returns"
                        );
                        self.deferred_since = Some(Instant::now());
                    }
                    if self.pending.len() > MAX_DEFERRED_POINTS {
                        let excess = self.pending.len() - MAX_DEFERRED_POINTS;
                        self.pending.drain(..excess);
                    }
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
