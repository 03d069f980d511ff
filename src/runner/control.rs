//! Stopping a running job and writing how it ended: the stop flag training polls, the supervisor that
//! keeps the lease and turns cancels and shutdown into the flag, and the one place a job's end is
//! decided from how its run came out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::JobStatus;
use crate::events::JobEvent;
use crate::service::{Lease, Service};

/// How long a job waits for an unreachable database to return before its progress or end is given up.
pub const OUTAGE_PATIENCE: Duration = Duration::from_secs(600);

/// An error that says the database cannot be reached right now (trying again later may work).
pub trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for crate::service::ServiceError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable)
    }
}

impl Transient for anyhow::Error {
    fn is_transient(&self) -> bool {
        crate::service::is_unavailable(self)
    }
}

/// Runs `attempt` again every half second while it fails because the database is unreachable, for at
/// most [`OUTAGE_PATIENCE`].
pub async fn while_unavailable<T, E, F>(mut attempt: impl FnMut() -> F) -> Result<T, E>
where
    E: Transient,
    F: std::future::Future<Output = Result<T, E>>,
{
    let started = std::time::Instant::now();
    loop {
        match attempt().await {
            Err(e) if e.is_transient() && started.elapsed() < OUTAGE_PATIENCE => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            done => return done,
        }
    }
}

/// What `Job.error` says when nothing more specific explains a failure.
const FAILED: &str = "the job failed unexpectedly; retry it, and if it fails again ask an operator to \
                      look up the reference in the server log";

/// Why a running job should stop. Stored in an atomic the training thread polls before every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    None = 0,
    Cancel = 1,
    Shutdown = 2,
    LeaseLost = 3,
}

impl StopReason {
    fn from_u8(raw: u8) -> Self {
        match raw {
            0 => Self::None,
            1 => Self::Cancel,
            2 => Self::Shutdown,
            _ => Self::LeaseLost,
        }
    }

    /// How the reason travels to a job's own process.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Cancel => "cancel",
            Self::Shutdown => "shutdown",
            Self::LeaseLost => "lease-lost",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Cancel, Self::Shutdown, Self::LeaseLost]
            .into_iter()
            .find(|r| r.as_str() == raw)
    }
}

/// The stop flag of one running job: polled by the training thread, awaited by async setup.
#[derive(Debug, Default)]
pub struct StopFlag {
    reason: AtomicU8,
    changed: Notify,
}

impl StopFlag {
    /// Asks the job to stop; the first reason given wins.
    pub fn stop(&self, reason: StopReason) {
        if self
            .reason
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.changed.notify_waiters();
        }
    }

    pub fn reason(&self) -> StopReason {
        StopReason::from_u8(self.reason.load(Ordering::SeqCst))
    }

    /// Completes once the job has been asked to stop.
    pub async fn stopped(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.reason() != StopReason::None {
                return;
            }
            changed.await;
        }
    }
}

impl crate::train::Interrupt for StopFlag {
    fn should_stop(&self) -> bool {
        self.reason() != StopReason::None
    }
}

/// Keeps `worker`'s lease on a job alive and stops the job when asked: a cancel arrives as an event at
/// once (from this process or, through Redis, another replica) or as a flag at the next heartbeat;
/// shutdown arrives through `shutdown`; a heartbeat that finds the lease gone stops it too. Runs until
/// aborted.
pub async fn supervise(
    service: Service,
    lease_ms: i64,
    job_id: String,
    worker: String,
    flag: Arc<StopFlag>,
    shutdown: CancellationToken,
) {
    let every = Duration::from_millis((lease_ms / 3).clamp(100, 10_000) as u64);
    let mut events = service.events().subscribe();
    let mut next_beat = tokio::time::Instant::now() + every;
    let mut shutting_down = false;
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
            // The lease is kept while the job stops.
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                flag.stop(StopReason::Shutdown);
                continue;
            }
            _ = tokio::time::sleep_until(next_beat) => {}
        }
        next_beat = tokio::time::Instant::now() + every;
        match service.heartbeat(&job_id, &worker, lease_ms).await {
            Ok(Lease::Held {
                cancel_requested: true,
            }) => flag.stop(StopReason::Cancel),
            Ok(Lease::Held { .. }) => {}
            Ok(Lease::Lost) => {
                flag.stop(StopReason::LeaseLost);
                return;
            }
            Err(e) => {
                // Try again soon: the lease must be renewed as soon as the database is back.
                tracing::warn!(error = format!("{e:#}"), "heartbeat failed");
                next_beat = tokio::time::Instant::now() + Duration::from_millis(500);
            }
        }
    }
}

/// How a run of a job came out, as its supervisor sees it.
#[derive(Debug)]
pub enum RunResult {
    /// The run wrote the job's final status itself (completed, or failed with its own message).
    Ended(JobStatus),
    /// The run stopped because it was asked to; the flag says why.
    Stopped,
    /// The run failed: its error, and what `Job.error` says when the error has no user-facing message.
    Failed(anyhow::Error, Option<String>),
}

/// Writes how a job ended from how its run came out and returns its status (`RUNNING` when another
/// worker holds it now): a cancelled job is `CANCELLED`, one stopped for shutdown goes back to the
/// queue, a failed one is `FAILED` with a message for the user.
pub async fn conclude(
    service: &Service,
    job_id: &str,
    worker: &str,
    result: RunResult,
    flag: &StopFlag,
) -> JobStatus {
    let ended = match result {
        RunResult::Ended(status) => return status,
        RunResult::Stopped => match flag.reason() {
            StopReason::Cancel => {
                while_unavailable(|| service.release_job(job_id, worker, JobStatus::Cancelled))
                    .await
            }
            StopReason::Shutdown => {
                while_unavailable(|| service.release_job(job_id, worker, JobStatus::Queued)).await
            }
            // Another worker holds the job now; nothing of ours to write.
            StopReason::LeaseLost | StopReason::None => return JobStatus::Running,
        },
        RunResult::Failed(error, fallback) => {
            let fallback = fallback.as_deref().unwrap_or(FAILED);
            while_unavailable(|| service.fail_job(job_id, worker, &error, fallback)).await
        }
    };
    match ended {
        Ok(Some(job)) => job.status,
        Ok(None) => JobStatus::Running,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "recording the job's end failed");
            JobStatus::Running
        }
    }
}

/// The [`RunResult`] of a run of the job in this process.
pub fn result_of(run: anyhow::Result<Option<JobStatus>>) -> RunResult {
    match run {
        Ok(Some(status)) => RunResult::Ended(status),
        Ok(None) => RunResult::Stopped,
        Err(e) => RunResult::Failed(e, None),
    }
}
