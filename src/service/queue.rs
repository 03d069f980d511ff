//! The queue as a worker uses it: claim a job with a lease, keep the lease, record what training does,
//! and end the job. Every write that concerns a running job is fenced by its lease (a worker whose lease
//! was taken over writes nothing), and every change is written before it is published.

use super::{Service, ServiceResult};
use crate::domain::{JobRecord, JobStatus, UserError};
use crate::events::JobEvent;
use crate::store::TrainingRecord;

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The worker still holds the job; `cancel_requested` says whether a user asked it to stop.
    Held { cancel_requested: bool },
    /// Another worker holds the job now (this one's lease expired), or it is no longer running.
    Lost,
}

impl Service {
    /// Fails the jobs whose workers died with no attempts left, then claims the next job for `worker`:
    /// the highest-priority oldest queued job, or a running one whose lease expired.
    pub async fn claim_next_job(
        &self,
        worker: &str,
        lease_ms: i64,
    ) -> ServiceResult<Option<JobRecord>> {
        for job in self.store.fail_exhausted_jobs().await? {
            self.publish_status(&job);
        }
        let claimed = self.store.claim_next_job(worker, lease_ms).await?;
        if let Some(job) = &claimed {
            self.publish_status(job);
        }
        Ok(claimed)
    }

    /// Extends `worker`'s lease on a job.
    pub async fn heartbeat(
        &self,
        job_id: &str,
        worker: &str,
        lease_ms: i64,
    ) -> ServiceResult<Lease> {
        Ok(
            match self.store.heartbeat_job(job_id, worker, lease_ms).await? {
                Some(cancel_requested) => Lease::Held { cancel_requested },
                None => Lease::Lost,
            },
        )
    }

    /// A job started again (its worker died) trains from the beginning: its earlier attempt's epochs,
    /// step metrics and progress are forgotten.
    pub async fn forget_earlier_attempt(&self, job_id: &str) -> ServiceResult<()> {
        Ok(self.store.reset_job_history(job_id).await?)
    }

    /// Records what training did since the last call, then announces a finished epoch. Returns
    /// [`Lease::Lost`] when `worker` no longer holds the job; nothing is written then.
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
        Ok(Lease::Held {
            cancel_requested: false,
        })
    }

    /// Ends a job `worker` holds in `to` (`CANCELLED`, or `QUEUED` to run it again later) and announces
    /// it. Returns the job, or `None` when the worker no longer holds it.
    pub async fn release_job(
        &self,
        job_id: &str,
        worker: &str,
        to: JobStatus,
    ) -> ServiceResult<Option<JobRecord>> {
        self.end_job(job_id, worker, to, None).await
    }

    /// Fails a job `worker` holds. `Job.error` gets a message written for the user: the most specific
    /// [`UserError`] in the chain, or `fallback` (what failed and what to do), followed by a reference;
    /// the whole chain goes to the server log under that reference.
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
        self.end_job(job_id, worker, JobStatus::Failed, Some(&message))
            .await
    }

    async fn end_job(
        &self,
        job_id: &str,
        worker: &str,
        to: JobStatus,
        error: Option<&str>,
    ) -> ServiceResult<Option<JobRecord>> {
        let job = self.store.finish_job(job_id, worker, to, error).await?;
        if let Some(job) = &job {
            self.publish_status(job);
        }
        Ok(job)
    }

    fn publish_status(&self, job: &JobRecord) {
        self.events.publish(
            &job.id,
            JobEvent::StatusChanged {
                status: job.status,
                error: job.error.clone(),
            },
        );
    }
}
