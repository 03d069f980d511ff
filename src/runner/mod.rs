//! The worker: claims a job from the queue, runs `train/` on a blocking thread, turns its progress into
//! store writes and events, keeps the lease alive, obeys cancel, and registers the trained model.
//!
//! [`Worker::try_run_next`] runs exactly one job (or finds none) and is what tests drive by hand;
//! [`Worker::run_until_stopped`] is the loop with waiting around it.

mod job;

pub use job::Progress;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::domain::JobStatus;
use crate::events::JobEvent;

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

/// The stop flags of the jobs running in this process, by job id, so `cancelJob` reaches a local job
/// at once (jobs on other hosts see the cancel at their next heartbeat).
#[derive(Default, Clone)]
pub struct RunningJobs(Arc<Mutex<HashMap<String, Arc<StopFlag>>>>);

impl RunningJobs {
    fn register(&self, job_id: &str) -> Arc<StopFlag> {
        let flag = Arc::new(StopFlag::default());
        self.0
            .lock()
            .expect("running jobs")
            .insert(job_id.to_string(), flag.clone());
        flag
    }

    fn remove(&self, job_id: &str) {
        self.0.lock().expect("running jobs").remove(job_id);
    }

    /// Asks a local job to stop; returns whether it runs here.
    pub fn stop(&self, job_id: &str, reason: StopReason) -> bool {
        match self.0.lock().expect("running jobs").get(job_id) {
            Some(flag) => {
                flag.stop(reason);
                true
            }
            None => false,
        }
    }

    pub fn stop_all(&self, reason: StopReason) {
        for flag in self.0.lock().expect("running jobs").values() {
            flag.stop(reason);
        }
    }
}

/// What one [`Worker::try_run_next`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Ran a job to the status given.
    Ran { job_id: String, status: JobStatus },
    /// The queue had nothing to run.
    Empty,
}

pub struct Worker {
    state: Arc<AppState>,
    id: String,
}

impl Worker {
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            state,
            id: format!("worker-{}", uuid::Uuid::new_v4()),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claims and runs one job, if any is ready.
    pub async fn try_run_next(&self) -> anyhow::Result<Outcome> {
        for job in self.state.store.fail_exhausted_jobs().await? {
            self.state.events.publish(
                &job.id,
                JobEvent::StatusChanged {
                    status: job.status,
                    error: job.error.clone(),
                },
            );
        }
        let lease_ms = self.state.config.lease_seconds as i64 * 1000;
        let Some(job) = self.state.store.claim_next_job(&self.id, lease_ms).await? else {
            return Ok(Outcome::Empty);
        };
        let job_id = job.id.clone();
        let status = job::run(&self.state, &self.id, job).await;
        Ok(Outcome::Ran { job_id, status })
    }

    /// Runs jobs until `shutdown` fires. A job running then is interrupted and put back in the queue.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            match self.try_run_next().await {
                Ok(Outcome::Ran { .. }) => continue,
                Ok(Outcome::Empty) => {}
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), worker = %self.id, "claiming a job failed")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.state.wake_workers.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
