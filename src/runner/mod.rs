//! The worker: claims a job from the queue, runs `train/` on a blocking thread, turns its progress into
//! recorded progress and events, keeps the lease alive, obeys cancel and shutdown, and registers the
//! trained model — every rule of which is a use case in `service/`; this module owns only the loop, the
//! threads and the timing.
//!
//! A worker holds what it uses: the [`Service`] handle, its [`WorkerSettings`] and a shutdown token.
//! [`Worker::try_run_next`] runs exactly one job (or finds none) and is what tests drive by hand;
//! [`Worker::run_until_stopped`] is the loop with waiting around it.

mod job;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::domain::JobStatus;
use crate::events::JobEvent;
use crate::service::Service;

/// How a worker runs jobs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// How long a claim on a job lasts without a heartbeat; heartbeats go out three times per lease.
    pub lease: Duration,
    /// Where models are written before they are stored (`<work_dir>/jobs/<job id>/`).
    pub work_dir: PathBuf,
}

impl WorkerSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            lease: Duration::from_secs(config.lease_seconds),
            work_dir: config.work_dir.clone(),
        }
    }

    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }
}

/// Why a running job should stop. Stored in an atomic the training thread polls before every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    None = 0,
    Cancel = 1,
    Shutdown = 2,
    LeaseLost = 3,
}

/// The stop flag of one running job.
#[derive(Debug, Default)]
pub struct StopFlag(AtomicU8);

impl StopFlag {
    /// Asks the job to stop; the first reason given wins.
    pub fn stop(&self, reason: StopReason) {
        let _ = self
            .0
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn reason(&self) -> StopReason {
        match self.0.load(Ordering::SeqCst) {
            0 => StopReason::None,
            1 => StopReason::Cancel,
            2 => StopReason::Shutdown,
            _ => StopReason::LeaseLost,
        }
    }
}

impl crate::train::Interrupt for StopFlag {
    fn should_stop(&self) -> bool {
        self.reason() != StopReason::None
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
    service: Service,
    settings: WorkerSettings,
    id: String,
    shutdown: CancellationToken,
}

impl Worker {
    pub fn new(service: Service, settings: WorkerSettings) -> Self {
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

    /// Claims and runs one job, if any is ready.
    pub async fn try_run_next(&self) -> anyhow::Result<Outcome> {
        let Some(job) = self
            .service
            .claim_next_job(&self.id, self.settings.lease_ms())
            .await?
        else {
            return Ok(Outcome::Empty);
        };
        let job_id = job.id.clone();
        let status = job::run(self, job).await;
        Ok(Outcome::Ran { job_id, status })
    }

    /// Runs jobs until shutdown. Idle, it waits for a job to be queued (on any replica, through the
    /// event hub), checking the queue at least once a second for jobs whose lease expired.
    pub async fn run_until_stopped(self) {
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
