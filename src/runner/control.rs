//! Stopping a running job and writing how it ended: the stop flag training polls, the supervisor that
//! keeps the lease and turns cancels and shutdown into the flag, and the one place a job's end is
//! decided from how its run came out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::{JobRecord, JobStatus, LogLevel, now_ms};
use crate::events::JobEvent;
use crate::service::{Lease, WorkQueue};

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
    Pause = 4,
    /// The job ran past its time limit.
    Timeout = 5,
}

impl StopReason {
    const ALL: [StopReason; 5] = [
        Self::Cancel,
        Self::Shutdown,
        Self::LeaseLost,
        Self::Pause,
        Self::Timeout,
    ];

    fn from_u8(raw: u8) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| *r as u8 == raw)
            .unwrap_or(Self::None)
    }

    /// How the reason travels to a job's own process.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Cancel => "cancel",
            Self::Shutdown => "shutdown",
            Self::LeaseLost => "lease-lost",
            Self::Pause => "pause",
            Self::Timeout => "timeout",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == raw)
    }

    /// Whether the job should leave a checkpoint as it stops: to go on from it later (pause, shutdown,
    /// and a time limit, which `retryJob` continues).
    pub fn keeps_a_checkpoint(self) -> bool {
        matches!(self, Self::Pause | Self::Shutdown | Self::Timeout)
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
    fn checkpoint_on_stop(&self) -> bool {
        self.reason().keeps_a_checkpoint()
    }
}

/// What a supervisor watches besides the lease.
#[derive(Debug, Clone)]
pub struct Watch {
    pub lease_ms: i64,
    /// When the job must stop (its time limit), if it has one.
    pub deadline: Option<tokio::time::Instant>,
    /// Progress that has not moved for this long marks the job stalled.
    pub stall_after: Duration,
}

impl Watch {
    /// The watch over a claimed job: its time limit is what its earlier attempts left of it.
    pub fn of(job: &JobRecord, lease_ms: i64, stall_after: Duration) -> Self {
        let deadline = job.max_duration_ms.map(|limit| {
            let left = (limit - job.run_ms).max(0) as u64;
            let started = job.attempt_started_at.unwrap_or_else(now_ms);
            let spent = (now_ms() - started).max(0) as u64;
            tokio::time::Instant::now() + Duration::from_millis(left.saturating_sub(spent))
        });
        Self {
            lease_ms,
            deadline,
            stall_after,
        }
    }
}

/// Keeps `worker`'s lease on a job alive and stops the job when asked: a cancel or pause arrives as an
/// event at once (from this process or, through Redis, another replica) or as a flag at the next
/// heartbeat; shutdown arrives through `shutdown`; the time limit is a deadline; a heartbeat that finds
/// the lease gone stops it too. Progress events that stop coming for `watch.stall_after` mark the job
/// stalled. Runs until aborted.
pub async fn supervise(
    service: WorkQueue,
    watch: Watch,
    job_id: String,
    worker: String,
    flag: Arc<StopFlag>,
    shutdown: CancellationToken,
) {
    let every = Duration::from_millis((watch.lease_ms / 3).clamp(100, 10_000) as u64);
    let mut events = service.events().subscribe();
    let mut next_beat = tokio::time::Instant::now() + every;
    let mut shutting_down = false;
    let mut last_progress = tokio::time::Instant::now();
    let mut stalled = false;
    let deadline = watch.deadline;
    loop {
        let stall_at = last_progress + watch.stall_after;
        tokio::select! {
            received = events.recv() => {
                if let Ok(envelope) = received && envelope.job_id == job_id {
                    match envelope.event {
                        JobEvent::CancelRequested => flag.stop(StopReason::Cancel),
                        JobEvent::PauseRequested => flag.stop(StopReason::Pause),
                        JobEvent::StepProgress { .. } | JobEvent::EpochCompleted(_) => {
                            last_progress = tokio::time::Instant::now();
                            stalled = false;
                        }
                        _ => {}
                    }
                }
                continue;
            }
            // The lease is kept while the job stops.
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                flag.stop(StopReason::Shutdown);
                continue;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(next_beat)), if deadline.is_some() && flag.reason() == StopReason::None => {
                tracing::warn!(job_id, "the job reached its time limit; stopping it");
                flag.stop(StopReason::Timeout);
                continue;
            }
            _ = tokio::time::sleep_until(stall_at), if !stalled && flag.reason() == StopReason::None => {
                stalled = true;
                let since = now_ms() - watch.stall_after.as_millis() as i64;
                if let Err(e) = service.mark_stalled(&job_id, &worker, since).await {
                    tracing::warn!(error = format!("{e:#}"), "marking the job stalled failed");
                }
                let message = format!(
                    "no training progress for {} s: the job may be stuck (it keeps running; cancel or \
                     pause it to stop it)",
                    watch.stall_after.as_secs()
                );
                service.log_now(&job_id, LogLevel::Warn, message).await;
                continue;
            }
            _ = tokio::time::sleep_until(next_beat) => {}
        }
        next_beat = tokio::time::Instant::now() + every;
        match service.heartbeat(&job_id, &worker, watch.lease_ms).await {
            Ok(Lease::Held {
                cancel_requested,
                pause_requested,
            }) => {
                if cancel_requested {
                    flag.stop(StopReason::Cancel);
                } else if pause_requested {
                    flag.stop(StopReason::Pause);
                }
            }
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

/// What `Job.error` says when a job reached its time limit.
const TIMED_OUT: &str = "the job ran past its time limit (maxDurationMinutes) and was stopped; its \
                         last checkpoint is kept, so retryJob continues from it";

/// Writes how a job ended from how its run came out and returns its status (`RUNNING` when another
/// worker holds it now): a cancelled job is `CANCELLED`, a paused one `PAUSED`, one stopped for
/// shutdown goes back to the queue, one past its time limit is `FAILED` saying so; a failed one is
/// ended by [`WorkQueue::end_failed_attempt`] (retried when the infrastructure failed, otherwise `FAILED`
/// with a message for the user).
pub async fn conclude(
    service: &WorkQueue,
    job: &JobRecord,
    worker: &str,
    result: RunResult,
    flag: &StopFlag,
) -> JobStatus {
    let job_id = job.id.as_str();
    let ended = match result {
        RunResult::Ended(status) => return status,
        RunResult::Stopped => match flag.reason() {
            StopReason::Cancel => {
                while_unavailable(|| service.release_job(job_id, worker, JobStatus::Cancelled))
                    .await
            }
            StopReason::Pause => {
                while_unavailable(|| service.release_job(job_id, worker, JobStatus::Paused)).await
            }
            StopReason::Shutdown => {
                while_unavailable(|| service.release_job(job_id, worker, JobStatus::Queued)).await
            }
            StopReason::Timeout => {
                let error = anyhow::anyhow!("the job reached its time limit");
                while_unavailable(|| service.fail_job(job_id, worker, &error, TIMED_OUT)).await
            }
            // Another worker holds the job now; nothing of ours to write.
            StopReason::LeaseLost | StopReason::None => return JobStatus::Running,
        },
        RunResult::Failed(error, fallback) => {
            let fallback = fallback.as_deref().unwrap_or(FAILED);
            while_unavailable(|| service.end_failed_attempt(job, worker, &error, fallback)).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_travel_by_name() {
        for reason in StopReason::ALL {
            assert_eq!(StopReason::parse(reason.as_str()), Some(reason));
            assert_eq!(StopReason::from_u8(reason as u8), reason);
        }
        assert!(StopReason::Pause.keeps_a_checkpoint() && !StopReason::Cancel.keeps_a_checkpoint());
    }
}
