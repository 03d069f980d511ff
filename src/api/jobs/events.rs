//! The events `jobEvents` sends.

use async_graphql::{ID, SimpleObject, Union};

use super::types::{EpochMetrics, JobStatus};

/// Events of one job, in the order they happened.
#[derive(Union)]
pub enum JobEvent {
    JobStatusChanged(JobStatusChanged),
    EpochCompleted(EpochCompleted),
    StepProgress(StepProgress),
    JobResumed(JobResumed),
    QueueChanged(QueueChanged),
}

/// A queued job's place: sent when a follower first sees the job queued, then whenever its position
/// or its reason changes, or its estimated start moves by more than 30 s.
#[derive(SimpleObject)]
pub struct QueueChanged {
    pub job_id: ID,
    /// 1 for the next job a worker takes.
    pub position: i64,
    /// Null without a live worker or a known run time.
    pub estimated_start_at: Option<String>,
    /// Why it waits, in words.
    pub reason: String,
}

/// What `jobChanges` sends: any job's status change or step progress, or word that some were missed.
#[derive(Union)]
pub enum JobChange {
    JobStatusChanged(JobStatusChanged),
    StepProgress(StepProgress),
    JobChangesMissed(JobChangesMissed),
}

/// Changes were missed (the server's event channel overflowed, or replicas lost touch for a moment):
/// read the list again.
#[derive(SimpleObject)]
pub struct JobChangesMissed {
    /// Always true; GraphQL objects need a field.
    pub missed: bool,
}

impl JobChange {
    pub fn from_watch(change: Option<(String, crate::events::JobEvent)>) -> Option<Self> {
        let Some((job_id, event)) = change else {
            return Some(Self::JobChangesMissed(JobChangesMissed { missed: true }));
        };
        match JobEvent::from_event(&job_id, &event)? {
            JobEvent::JobStatusChanged(e) => Some(Self::JobStatusChanged(e)),
            JobEvent::StepProgress(e) => Some(Self::StepProgress(e)),
            _ => None,
        }
    }
}

/// The job goes on from a checkpoint (after a pause, a crash or a retry): the steps after `fromStep` and
/// the epochs after `fromEpoch` come again, and what was recorded of them before is gone. A chart
/// rewinds to `fromStep`. (`fromStep` 0: from the start.)
#[derive(SimpleObject)]
pub struct JobResumed {
    pub job_id: ID,
    pub from_step: i64,
    pub from_epoch: i32,
}

#[derive(SimpleObject)]
pub struct JobStatusChanged {
    pub job_id: ID,
    pub status: JobStatus,
    pub error: Option<String>,
}

#[derive(SimpleObject)]
pub struct EpochCompleted {
    pub job_id: ID,
    #[graphql(flatten)]
    pub metrics: EpochMetrics,
}

/// Sent a few times a second at most while a job trains.
#[derive(SimpleObject)]
pub struct StepProgress {
    pub job_id: ID,
    /// 1-based, counted across epochs.
    pub step: i64,
    /// The steps of the whole run: `step` of `totalSteps`.
    pub total_steps: i64,
    pub epoch: i32,
    pub total_epochs: i32,
    pub loss: f64,
    pub learning_rate: f64,
    pub samples_per_second: f64,
}

impl JobEvent {
    /// The GraphQL form of a bus event; `None` for the bus's own signals, which clients do not see.
    pub fn from_event(job_id: &str, event: &crate::events::JobEvent) -> Option<Self> {
        use crate::events::JobEvent as E;
        let job_id = ID(job_id.to_string());
        Some(match event {
            E::StatusChanged { status, error } => Self::JobStatusChanged(JobStatusChanged {
                job_id,
                status: (*status).into(),
                error: error.clone(),
            }),
            E::EpochCompleted(m) => Self::EpochCompleted(EpochCompleted {
                job_id,
                metrics: m.into(),
            }),
            E::StepProgress {
                step,
                total_steps,
                epoch,
                total_epochs,
                loss,
                learning_rate,
                samples_per_second,
            } => Self::StepProgress(StepProgress {
                job_id,
                step: *step as i64,
                total_steps: *total_steps as i64,
                epoch: *epoch as i32,
                total_epochs: *total_epochs as i32,
                loss: *loss,
                learning_rate: *learning_rate,
                samples_per_second: *samples_per_second,
            }),
            E::Resumed {
                from_step,
                from_epoch,
            } => Self::JobResumed(JobResumed {
                job_id,
                from_step: *from_step as i64,
                from_epoch: *from_epoch as i32,
            }),
            E::QueueChanged(place) => Self::QueueChanged(QueueChanged {
                job_id,
                position: place.position,
                estimated_start_at: place.estimated_start_at.map(crate::domain::timestamp),
                reason: place.reason.clone(),
            }),
            E::CancelRequested
            | E::PauseRequested
            | E::Logs(_)
            | E::Resync
            | E::QueueMoved
            | E::UploadChanged(_) => {
                return None;
            }
        })
    }
}
