//! The queue as a worker uses it: claim a job with a lease, keep the lease, record what training does,
//! and end the job. Every write that concerns a running job is fenced by its lease (a worker whose lease
//! was taken over writes nothing), and every change is written before it is published.

use super::{Service, ServiceResult};
use crate::domain::{
    CheckpointRecord, JobProgress, JobRecord, JobStatus, LogLevel, RETRY_PROMISE, UserError, now_ms,
};
use crate::events::JobEvent;
use crate::store::{AttemptEnd, TrainingRecord};

/// The cluster a job runs in (Kubernetes) could not be reached, or lost the job's pod: an
/// infrastructure failure, retried.
#[derive(Debug, thiserror::Error)]
#[error("the cluster lost or could not run the job's pod: {0}")]
pub struct ClusterUnavailable(pub String);

/// A job's process killed by a signal that neither kiln nor a lack of memory sent: an infrastructure
/// failure, retried like a worker that died.
#[derive(Debug, thiserror::Error)]
#[error("the job's process was killed by signal {0} from outside kiln")]
pub struct KilledFromOutside(pub i32);

/// Whether a failure was the infrastructure's rather than the job's own: the database or the object
/// store could not be reached, a download failed on the network, the job's process was killed from
/// outside, or its cluster lost its pod. Such a job is retried; one that failed on its data, its loss
/// or its memory is not.
pub fn is_infrastructure(error: &anyhow::Error) -> bool {
    super::is_unavailable(error)
        || error.chain().any(|cause| {
            cause.downcast_ref::<object_store::Error>().is_some()
                || cause.downcast_ref::<reqwest::Error>().is_some()
                || cause.downcast_ref::<KilledFromOutside>().is_some()
                || cause.downcast_ref::<ClusterUnavailable>().is_some()
        })
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The worker still holds the job; whether a user asked it to cancel, or to pause.
    Held {
        cancel_requested: bool,
        pause_requested: bool,
    },
    /// Another worker holds the job now (this one's lease expired), or it is no longer running.
    Lost,
}

impl Lease {
    /// Held, with nothing asked of the worker.
    pub const HELD: Lease = Lease::Held {
        cancel_requested: false,
        pause_requested: false,
    };
}

impl Service {
    /// Ends the attempts of jobs whose workers stopped responding (back to the queue after a backoff,
    /// or `FAILED` with no attempts left), then claims the next job for `worker`, which gives a job up
    /// to `gpus` GPUs: the highest-priority oldest queued job whose backoff has passed and which asks
    /// for no more GPUs.
    #[tracing::instrument(skip_all, fields(worker = %worker))]
    pub async fn claim_next_job(
        &self,
        worker: &str,
        lease_ms: i64,
        gpus: u32,
    ) -> ServiceResult<Option<JobRecord>> {
        for job in self.store.expired_jobs().await? {
            let ended = if job.attempts < job.max_attempts {
                let next = now_ms() + self.backoff_ms(job.attempts);
                let message = format!(
                    "attempt {} of {} ended: its worker stopped responding; the job goes on from \
                     its last checkpoint",
                    job.attempts, job.max_attempts
                );
                self.store
                    .end_expired_attempt(&job.id, Some(next), &message)
                    .await?
            } else {
                let message = format!(
                    "the job's worker stopped responding {} time(s); no attempts left. Its last \
                     checkpoint is kept: retryJob continues from it",
                    job.attempts
                );
                self.store
                    .end_expired_attempt(&job.id, None, &message)
                    .await?
            };
            if let Some(job) = ended {
                tracing::warn!(job_id = %job.id, status = job.status.as_str(), "a job's worker stopped responding");
                let message = job.error.clone().unwrap_or_default();
                self.log_now(&job.id, LogLevel::Warn, message).await;
                self.publish_status(&job);
            }
        }
        let claimed = self.store.claim_next_job(worker, lease_ms, gpus).await?;
        if let Some(job) = &claimed {
            // Its dataset is USED from the first claim of a job on it.
            if job.attempts == 1 {
                self.store
                    .mark_dataset_used(&job.dataset_id, now_ms())
                    .await?;
            }
            let message = format!(
                "claimed by worker {worker} (attempt {} of {})",
                job.attempts, job.max_attempts
            );
            self.log_now(&job.id, LogLevel::Info, message).await;
            self.publish_status(job);
        }
        Ok(claimed)
    }

    /// Extends `worker`'s lease on a job.
    #[tracing::instrument(skip_all, fields(job_id = %job_id, worker = %worker))]
    pub async fn heartbeat(
        &self,
        job_id: &str,
        worker: &str,
        lease_ms: i64,
    ) -> ServiceResult<Lease> {
        Ok(
            match self.store.heartbeat_job(job_id, worker, lease_ms).await? {
                Some((cancel_requested, pause_requested)) => Lease::Held {
                    cancel_requested,
                    pause_requested,
                },
                None => Lease::Lost,
            },
        )
    }

    /// The wait before the automatic retry that follows attempt `attempts` ([`retry_delay_ms`], with
    /// a random share).
    pub fn backoff_ms(&self, attempts: i64) -> i64 {
        retry_delay_ms(
            self.settings.retry_base.as_millis() as i64,
            self.settings.retry_max.as_millis() as i64,
            attempts,
            rand::random::<f64>(),
        )
    }

    /// A job that starts again goes on from `checkpoint` (or from the beginning): what its earlier
    /// attempts recorded after that point is removed, and subscribers hear `Resumed` before the steps
    /// that follow, so a live chart rewinds. Returns `false` when `worker` no longer holds the job.
    #[tracing::instrument(skip_all, fields(worker = %worker))]
    pub async fn rewind_job(
        &self,
        job: &JobRecord,
        worker: &str,
        checkpoint: Option<&CheckpointRecord>,
    ) -> ServiceResult<bool> {
        let (step, epoch) = checkpoint.map(|c| (c.step, c.epoch)).unwrap_or((0, 0));
        // Progress at the checkpoint (none from the start); totals and time as last recorded.
        let progress = checkpoint.map(|c| {
            let last = job.progress.clone().unwrap_or_default();
            JobProgress::at(
                c.epoch.max(1),
                job.settings.hyperparameters.epochs,
                c.step,
                last.total_steps.max(c.step),
                last.elapsed_seconds,
            )
        });
        if !self
            .store
            .rewind_job(&job.id, worker, step, epoch, progress.as_ref())
            .await?
        {
            return Ok(false);
        }
        self.events.publish(
            &job.id,
            JobEvent::Resumed {
                from_step: step,
                from_epoch: epoch,
            },
        );
        Ok(true)
    }

    /// Records where the attempt `worker` holds trains (`Job.device`). Returns `false` when the lease
    /// is gone.
    #[tracing::instrument(skip_all, fields(job_id = %job_id, worker = %worker))]
    pub async fn record_device(
        &self,
        job_id: &str,
        worker: &str,
        device: &str,
    ) -> ServiceResult<bool> {
        Ok(self.store.set_job_device(job_id, worker, device).await?)
    }

    /// Marks a running job as stalled (its progress has not moved for a while) and logs it.
    #[tracing::instrument(skip_all, fields(job_id = %job_id, worker = %worker))]
    pub async fn mark_stalled(&self, job_id: &str, worker: &str, since: i64) -> ServiceResult<()> {
        tracing::warn!(job_id, worker, "the job's progress has stalled");
        self.store.mark_stalled(job_id, worker, since).await?;
        Ok(())
    }

    /// Records what training did since the last call, then announces a finished epoch. Returns
    /// [`Lease::Lost`] when `worker` no longer holds the job; nothing is written then.
    #[tracing::instrument(skip_all, fields(job_id = %job_id, worker = %worker))]
    pub async fn record_training(
        &self,
        job_id: &str,
        worker: &str,
        record: TrainingRecord<'_>,
    ) -> ServiceResult<Lease> {
        if !self.store.record_training(job_id, worker, record).await? {
            return Ok(Lease::Lost);
        }
        if let Some(epoch) = record.epoch {
            self.events
                .publish(job_id, JobEvent::EpochCompleted(epoch.clone()));
        }
        Ok(Lease::HELD)
    }

    /// Ends the attempt of a job `worker` holds in `to` and announces it: `CANCELLED`; or `PAUSED`, or
    /// `QUEUED` to run it again later (shutdown), neither counted as an attempt. Returns the job, or
    /// `None` when the worker no longer holds it.
    #[tracing::instrument(skip_all, fields(job_id = %job_id, worker = %worker))]
    pub async fn release_job(
        &self,
        job_id: &str,
        worker: &str,
        to: JobStatus,
    ) -> ServiceResult<Option<JobRecord>> {
        let end = AttemptEnd {
            refund_attempt: matches!(to, JobStatus::Paused | JobStatus::Queued),
            ..AttemptEnd::default()
        };
        self.end_job(job_id, worker, to, end).await
    }

    /// Ends an attempt that failed for a reason outside the job (the database or object store became
    /// unreachable): back to the queue after a backoff while it has attempts left, `FAILED` after.
    #[tracing::instrument(skip_all, fields(worker = %worker))]
    pub async fn retry_job_later(
        &self,
        job: &JobRecord,
        worker: &str,
        error: &anyhow::Error,
        fallback: &str,
    ) -> ServiceResult<Option<JobRecord>> {
        if job.attempts >= job.max_attempts {
            return self.fail_job(&job.id, worker, error, fallback).await;
        }
        let reference = uuid::Uuid::new_v4();
        tracing::warn!(job_id = %job.id, %reference, error = format!("{error:#}"), "job attempt failed; retrying later");
        let message = format!(
            "attempt {} of {} failed: {} (reference {reference}){RETRY_PROMISE}",
            job.attempts,
            job.max_attempts,
            UserError::find_in(error).unwrap_or(fallback)
        );
        let end = AttemptEnd {
            error: Some(&message),
            refund_attempt: false,
            next_attempt_at: Some(now_ms() + self.backoff_ms(job.attempts)),
        };
        self.end_job(&job.id, worker, JobStatus::Queued, end).await
    }

    /// Ends an attempt that failed with `error`: back to the queue for a later attempt when the failure
    /// was the infrastructure's ([`is_infrastructure`]) and attempts are left, otherwise `FAILED` with
    /// the error's message for the user (or `fallback`). `None` when `worker` no longer holds the job.
    #[tracing::instrument(skip_all, fields(job_id = %job.id, worker = %worker))]
    pub async fn end_failed_attempt(
        &self,
        job: &JobRecord,
        worker: &str,
        error: &anyhow::Error,
        fallback: &str,
    ) -> ServiceResult<Option<JobRecord>> {
        if is_infrastructure(error) {
            self.retry_job_later(job, worker, error, fallback).await
        } else {
            self.fail_job(&job.id, worker, error, fallback).await
        }
    }

    /// Fails a job `worker` holds. `Job.error` gets a message written for the user: the most specific
    /// [`UserError`] in the chain, or `fallback` (what failed and what to do), followed by a reference;
    /// the whole chain goes to the server log under that reference.
    #[tracing::instrument(skip_all, fields(job_id = %job_id, worker = %worker))]
    pub async fn fail_job(
        &self,
        job_id: &str,
        worker: &str,
        error: &anyhow::Error,
        fallback: &str,
    ) -> ServiceResult<Option<JobRecord>> {
        let reference = uuid::Uuid::new_v4();
        tracing::warn!(job_id, %reference, error = format!("{error:#}"), "job failed");
        let message = UserError::find_in(error).unwrap_or(fallback);
        let message = format!("{message} (reference {reference})");
        let end = AttemptEnd {
            error: Some(&message),
            ..AttemptEnd::default()
        };
        self.end_job(job_id, worker, JobStatus::Failed, end).await
    }

    async fn end_job(
        &self,
        job_id: &str,
        worker: &str,
        to: JobStatus,
        end: AttemptEnd<'_>,
    ) -> ServiceResult<Option<JobRecord>> {
        let job = self.store.finish_job(job_id, worker, to, end).await?;
        if let Some(job) = &job {
            let (level, message) = match (job.status, &job.error) {
                (JobStatus::Failed, Some(error)) => (LogLevel::Error, format!("failed: {error}")),
                (JobStatus::Queued, Some(error)) => (LogLevel::Warn, error.clone()),
                (JobStatus::Queued, None) => (LogLevel::Info, "back to the queue".to_string()),
                (status, _) => (LogLevel::Info, status.as_str().to_lowercase()),
            };
            self.log_now(&job.id, level, message).await;
            self.publish_status(job);
        }
        Ok(job)
    }

    pub(super) fn publish_status(&self, job: &JobRecord) {
        self.events.publish(
            &job.id,
            JobEvent::StatusChanged {
                status: job.status,
                error: job.error.clone(),
            },
        );
    }
}

/// The wait before the retry that follows attempt `attempts`: `base` doubled for each attempt before it,
/// at most `cap`, plus `share` (0 to 1) of a quarter of that, so retries of many jobs spread out.
pub fn retry_delay_ms(base: i64, cap: i64, attempts: i64, share: f64) -> i64 {
    let doubled = base.saturating_mul(1i64 << (attempts - 1).clamp(0, 40));
    let delay = doubled.min(cap) as f64;
    (delay * (1.0 + 0.25 * share.clamp(0.0, 1.0))) as i64
}

#[cfg(test)]
mod tests {
    use super::{is_infrastructure, retry_delay_ms};
    use crate::domain::UserError;
    use crate::service::ServiceError;

    #[test]
    fn infrastructure_failures_are_told_from_the_jobs_own() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let unreachable = anyhow::Error::new(object_store::Error::Generic {
            store: "S3",
            source: Box::new(refused),
        })
        .context("storing model.safetensors");
        let wrapped = UserError::wrap("the trained model could not be stored", unreachable);
        assert!(is_infrastructure(&wrapped));
        let outage = anyhow::Error::new(ServiceError::Unavailable)
            .context("the database stayed unreachable");
        assert!(is_infrastructure(&outage));
        let lost = anyhow::Error::new(super::ClusterUnavailable("evicted".into()));
        assert!(is_infrastructure(&lost));
        let nan = anyhow::Error::new(UserError::new("the loss became NaN at step 3"));
        assert!(!is_infrastructure(&nan));
        assert!(!is_infrastructure(&anyhow::anyhow!(
            "a label index is out of range"
        )));
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap_with_jitter() {
        let waits: Vec<i64> = (1..=8)
            .map(|a| retry_delay_ms(10_000, 600_000, a, 0.0))
            .collect();
        assert_eq!(
            waits,
            [
                10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000, 600_000
            ]
        );
        assert_eq!(retry_delay_ms(10_000, 600_000, 1, 1.0), 12_500);
        assert_eq!(retry_delay_ms(10_000, 600_000, 1000, 0.5), 675_000);
        assert_eq!(retry_delay_ms(0, 600_000, 3, 1.0), 0);
    }
}
