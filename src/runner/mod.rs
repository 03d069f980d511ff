//! The worker: claims a job from the queue and runs it in its own process (`kiln run-job`), keeping the
//! lease, relaying the job's events, obeying cancel and shutdown. Every rule it follows is a use case in
//! `service/`; this module owns the loop, the processes, the threads and the timing.
//!
//! - [`process`]: the job's own process, from the worker's side and from its own;
//! - [`job`]: the job itself — dataset to registered model — wherever it runs;
//! - [`control`]: the stop flag, the supervisor (lease, cancel, shutdown), and writing a job's end;
//! - [`spawner`]: the one lasting thread job processes are forked from;
//! - [`kubernetes`]: the other way to run a job: one Kubernetes Job per attempt.
//!
//! A worker holds what it uses: the [`WorkQueue`] (the use cases a worker may call, not the whole
//! `Service`), its [`WorkerSettings`] and a shutdown token.
//! [`Worker::try_run_next`] runs exactly one job (or finds none) and is what tests drive by hand;
//! [`Worker::run_until_stopped`] is the loop with waiting around it.

mod control;
mod job;
pub mod kubernetes;
pub mod process;
mod spawner;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::domain::JobStatus;
use crate::events::JobEvent;
use crate::service::WorkQueue;

pub use control::{StopFlag, StopReason};
pub use process::JobExit;

/// How a worker runs jobs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// How long a claim on a job lasts without a heartbeat; heartbeats go out three times per lease.
    pub lease: Duration,
    /// Where jobs keep their dataset copy and the model being written (`<work_dir>/jobs/<job id>/`).
    pub work_dir: PathBuf,
    /// The `kiln` binary started for each job.
    pub executable: PathBuf,
    /// The `KILN_*` settings handed to each job's process (`None`: unset).
    pub env: Vec<(&'static str, Option<String>)>,
    /// An address-space limit for each job's process, in bytes.
    pub memory_limit: Option<u64>,
    /// How long a job's process may take to stop when asked before it is killed.
    pub stop_grace: Duration,
    /// A running job whose progress has not moved for this long is logged and marked stalled.
    pub stall_after: Duration,
    /// The GPUs this worker gives one job: it claims no job asking for more.
    pub gpus: u32,
    /// Where jobs run: a child process, or a Kubernetes Job.
    pub runner: Runner,
}

/// Where a worker runs the jobs it claims.
#[derive(Debug, Clone, Default)]
pub enum Runner {
    /// A child process on this machine.
    #[default]
    Process,
    /// A Kubernetes Job per attempt.
    Kubernetes(kubernetes::Kube),
}

impl WorkerSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            lease: Duration::from_secs(config.lease_seconds),
            work_dir: config.work_dir.clone(),
            executable: config
                .job_executable
                .clone()
                .or_else(|| std::env::current_exe().ok())
                .unwrap_or_else(|| PathBuf::from("kiln")),
            env: config.to_env(),
            memory_limit: config.job_memory_limit.map(|b| b.0),
            stop_grace: Duration::from_secs(config.job_stop_grace_seconds),
            stall_after: Duration::from_secs(config.stall_seconds),
            gpus: config.worker_gpus(),
            runner: Runner::Process,
        }
    }

    /// Runs jobs with `runner`.
    pub fn with_runner(mut self, runner: Runner) -> Self {
        self.runner = runner;
        self
    }

    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }
}

/// What one [`Worker::try_run_next`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Ran a job; `status` is where it ended (`RUNNING` when another worker took it over).
    Ran { job_id: String, status: JobStatus },
    /// The queue had nothing to run.
    Empty,
}

pub struct Worker {
    service: WorkQueue,
    settings: WorkerSettings,
    id: String,
    shutdown: CancellationToken,
}

impl Worker {
    pub fn new(service: WorkQueue, settings: WorkerSettings) -> Self {
        Self {
            service,
            settings,
            id: format!("worker-{}", uuid::Uuid::new_v4()),
            shutdown: CancellationToken::new(),
        }
    }

    /// Stops at `shutdown`: a running job is interrupted at once and goes back to the queue.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Starts the supervisor of a job this worker claimed (its lease, its stops, its time limit; see
    /// [`control::supervise`]), in the current span; `shutdown` stops the job when cancelled.
    fn supervise(
        &self,
        job: &crate::domain::JobRecord,
        flag: &std::sync::Arc<StopFlag>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        use tracing::Instrument;
        let watch = control::Watch::of(job, self.settings.lease_ms(), self.settings.stall_after);
        tokio::spawn(
            control::supervise(
                self.service.clone(),
                watch,
                job.id.clone(),
                self.id.clone(),
                flag.clone(),
                shutdown,
            )
            .in_current_span(),
        )
    }

    /// Claims and runs one job, if any is ready.
    pub async fn try_run_next(&self) -> anyhow::Result<Outcome> {
        let Some(job) = self
            .service
            .claim_next_job(&self.id, self.settings.lease_ms(), self.settings.gpus)
            .await?
        else {
            return Ok(Outcome::Empty);
        };
        let job_id = job.id.clone();
        let metrics = self.service.metrics().clone();
        // The first claim of a job ends its wait in the queue.
        let waited = (job.attempts == 1).then(|| {
            let claimed = job.attempt_started_at.unwrap_or_else(crate::domain::now_ms);
            Duration::from_millis((claimed - job.created_at).max(0) as u64)
        });
        metrics.run_started(waited);
        let started = std::time::Instant::now();
        let status = match &self.settings.runner {
            Runner::Process => process::run(self, job).await,
            Runner::Kubernetes(kube) => kubernetes::run(self, kube, job).await,
        };
        metrics.run_ended(&job_id, status.as_str(), started.elapsed());
        Ok(Outcome::Ran { job_id, status })
    }

    /// Runs jobs until shutdown. Idle, it waits for a job to be queued (on any replica, through the
    /// event hub), checking the queue at least once a second for jobs whose lease expired.
    pub async fn run_until_stopped(self) {
        let _counted = self.service.metrics().worker_running();
        // Registered in the database, so that every replica counts this worker and the queue can
        // say why a job waits; the heartbeat runs beside the jobs.
        if let Err(e) = self
            .service
            .worker_started(&self.id, self.settings.gpus)
            .await
        {
            tracing::warn!(error = format!("{e:#}"), worker = %self.id, "registering the worker failed");
        }
        let heartbeat = {
            let (service, id, gpus) = (self.service.clone(), self.id.clone(), self.settings.gpus);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(crate::service::waiting::WORKER_HEARTBEAT);
                every.tick().await;
                loop {
                    every.tick().await;
                    if let Err(e) = service.worker_heartbeat(&id, gpus).await {
                        tracing::warn!(error = format!("{e:#}"), worker = %id, "the worker's heartbeat failed");
                    }
                }
            })
        };
        self.serve_queue().await;
        heartbeat.abort();
        if let Err(e) = self.service.worker_stopped(&self.id).await {
            tracing::warn!(error = format!("{e:#}"), worker = %self.id, "unregistering the worker failed");
        }
    }

    async fn serve_queue(&self) {
        let mut events = self.service.events().subscribe();
        while !self.shutdown.is_cancelled() {
            match self.try_run_next().await {
                Ok(Outcome::Ran { .. }) => continue,
                Ok(Outcome::Empty) => {}
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), worker = %self.id, "claiming a job failed")
                }
            }
            let queued = async {
                loop {
                    match events.recv().await {
                        Ok(envelope)
                            if matches!(
                                envelope.event,
                                JobEvent::StatusChanged {
                                    status: JobStatus::Queued,
                                    ..
                                }
                            ) =>
                        {
                            return;
                        }
                        Ok(_) => {}
                        // Missed events may have held a queued job: look at the queue.
                        Err(RecvError::Lagged(_)) => return,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = queued => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
