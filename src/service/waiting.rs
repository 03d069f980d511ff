//! The queue as its users see it: each queued job's place (position, estimated start, why it waits;
//! `domain::QueueSnapshot` works it out), the queue's figures, changing a queued job's priority, and
//! the workers' registry these count (every worker, on every replica, heartbeats into the database).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    JobRecord, JobStatus, Priority, QueuePlace, QueueSnapshot, WorkerCounts, now_ms,
};
use crate::events::JobEvent;

/// How often a worker renews its row (a third of the time after which it no longer counts).
pub const WORKER_HEARTBEAT: Duration = Duration::from_secs(5);
/// How often a follower of a queued job works out its place again when nothing else moved (running
/// jobs' progress moves the estimates).
pub const QUEUE_REFRESH: Duration = Duration::from_secs(10);
/// A new estimated start is told to followers when it moved by more than this.
const ESTIMATE_MOVED_MS: i64 = 30_000;

/// The queue's places, as read at one moment.
#[derive(Debug)]
pub struct QueueView {
    pub snapshot: QueueSnapshot,
    /// Every queued job's place, by id (the first [`crate::store::SNAPSHOT_QUEUED`] of them).
    pub places: HashMap<String, QueuePlace>,
    pub read_at: Instant,
}

/// The last view read in this process, shared by every follower of a queued job.
#[derive(Default)]
pub(super) struct SharedView(tokio::sync::Mutex<Option<Arc<QueueView>>>);

/// The figures of the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    /// Queued jobs per priority, the highest first (every priority, zeros included).
    pub depth: Vec<(Priority, i64)>,
    pub running: i64,
    pub workers: WorkerCounts,
    /// The workers of each replica (host and process).
    pub replicas: Vec<ReplicaWorkers>,
    /// Mean time from submission to the first start, of the jobs first started in the last hour.
    pub mean_wait_ms: Option<f64>,
    pub started_last_hour: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaWorkers {
    pub host: String,
    pub pid: i64,
    pub busy: i64,
    pub idle: i64,
}

/// Whether a follower is told of `new` after having been told `old`.
pub fn place_moved(old: Option<&QueuePlace>, new: &QueuePlace) -> bool {
    let Some(old) = old else { return true };
    let estimate_moved = match (old.estimated_start_at, new.estimated_start_at) {
        (Some(a), Some(b)) => (a - b).abs() > ESTIMATE_MOVED_MS,
        (a, b) => a.is_some() != b.is_some(),
    };
    old.position != new.position || old.reason != new.reason || estimate_moved
}

/// This machine's name, for telling replicas apart.
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is writable for its length; gethostname writes at most that much.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    match std::str::from_utf8(&buffer[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "unknown".to_string(),
    }
}

impl Service {
    /// The queue's places as they are now.
    #[tracing::instrument(skip_all)]
    pub async fn queue_view(&self) -> ServiceResult<Arc<QueueView>> {
        let snapshot = self.store.queue_snapshot().await?;
        let places = snapshot.places(now_ms());
        Ok(Arc::new(QueueView {
            snapshot,
            places,
            read_at: Instant::now(),
        }))
    }

    /// A view read at or after `since`: followers woken by the same change share one read.
    pub(super) async fn queue_view_since(&self, since: Instant) -> ServiceResult<Arc<QueueView>> {
        let mut shared = self.queue_views.0.lock().await;
        if let Some(view) = shared.as_ref().filter(|v| v.read_at >= since) {
            return Ok(view.clone());
        }
        let view = self.queue_view().await?;
        *shared = Some(view.clone());
        Ok(view)
    }

    /// Depth per priority, running jobs, the workers (busy and idle, per replica) and the mean wait
    /// over the last hour.
    #[tracing::instrument(skip_all)]
    pub async fn queue_stats(&self) -> ServiceResult<QueueStats> {
        let counts = self.store.job_counts().await?;
        let workers = self.store.live_workers().await?;
        let running = self.store.running_leases().await?;
        let (mean_wait_ms, started_last_hour) =
            self.store.mean_queue_wait(now_ms() - 3_600_000).await?;
        let mut replicas: Vec<ReplicaWorkers> = Vec::new();
        for worker in &workers {
            let busy = running.contains(&worker.id);
            let at = match replicas
                .iter()
                .position(|r| r.host == worker.host && r.pid == worker.pid)
            {
                Some(i) => i,
                None => {
                    replicas.push(ReplicaWorkers {
                        host: worker.host.clone(),
                        pid: worker.pid,
                        busy: 0,
                        idle: 0,
                    });
                    replicas.len() - 1
                }
            };
            if busy {
                replicas[at].busy += 1;
            } else {
                replicas[at].idle += 1;
            }
        }
        let busy = replicas.iter().map(|r| r.busy).sum();
        let depth = [
            Priority::Urgent,
            Priority::High,
            Priority::Normal,
            Priority::Low,
        ]
        .into_iter()
        .map(|p| {
            let n = counts
                .queued_by_priority
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, n)| n)
                .sum();
            (p, n)
        })
        .collect();
        let running_jobs = counts
            .by_status
            .iter()
            .find(|(s, _)| *s == JobStatus::Running)
            .map_or(0, |(_, n)| *n);
        Ok(QueueStats {
            depth,
            running: running_jobs,
            workers: WorkerCounts {
                busy,
                idle: workers.len() as i64 - busy,
            },
            replicas,
            mean_wait_ms,
            started_last_hour,
        })
    }

    /// The first `first` (1–100) queued jobs, in the order workers take them.
    #[tracing::instrument(skip_all)]
    pub async fn queue(&self, first: i64) -> ServiceResult<Vec<JobRecord>> {
        if !(1..=100).contains(&first) {
            return Err(crate::domain::FieldError::new(
                "first",
                format!("must be between 1 and 100 (got {first})"),
            )
            .into());
        }
        Ok(self.store.queued_in_order(first).await?)
    }

    /// Moves a queued job to `priority`; a job that is not queued is a conflict.
    #[tracing::instrument(skip_all, fields(job_id = %id))]
    pub async fn set_job_priority(&self, id: &str, priority: Priority) -> ServiceResult<JobRecord> {
        let Some(moved) = self.store.set_queued_priority(id, priority).await? else {
            // Not queued, or not there: say which.
            let job = self
                .job(id)
                .await?
                .ok_or_else(|| super::jobs::not_found(id))?;
            return Err(ServiceError::Conflict(format!(
                "only a queued job's priority can change; this one is {}",
                job.status.as_str()
            )));
        };
        self.events.publish(id, JobEvent::QueueMoved);
        Ok(moved)
    }

    /// A worker starts serving the queue: its row, and a word to those following queued jobs.
    #[tracing::instrument(skip_all, fields(worker = %worker))]
    pub async fn worker_started(&self, worker: &str, gpus: u32) -> ServiceResult<()> {
        self.worker_heartbeat(worker, gpus).await?;
        self.events.publish(worker, JobEvent::QueueMoved);
        Ok(())
    }

    /// A worker, which gives a job up to `gpus` GPUs, is still there.
    #[tracing::instrument(skip_all, fields(worker = %worker))]
    pub async fn worker_heartbeat(&self, worker: &str, gpus: u32) -> ServiceResult<()> {
        static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let host = HOST.get_or_init(host_name);
        self.store
            .worker_heartbeat(worker, host, std::process::id().into(), gpus)
            .await?;
        Ok(())
    }

    /// A worker stops serving the queue.
    #[tracing::instrument(skip_all, fields(worker = %worker))]
    pub async fn worker_stopped(&self, worker: &str) -> ServiceResult<()> {
        self.store.remove_worker(worker).await?;
        self.events.publish(worker, JobEvent::QueueMoved);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(position: i64, start: Option<i64>, reason: &str) -> QueuePlace {
        QueuePlace {
            position,
            estimated_start_at: start,
            reason: reason.into(),
        }
    }

    #[test]
    fn followers_hear_of_real_moves_only() {
        let old = place(3, Some(100_000), "2 jobs ahead of it at HIGH priority");
        assert!(place_moved(None, &old));
        assert!(!place_moved(
            Some(&old),
            &place(3, Some(110_000), &old.reason)
        ));
        assert!(place_moved(
            Some(&old),
            &place(3, Some(140_000), &old.reason)
        ));
        assert!(place_moved(Some(&old), &place(3, None, &old.reason)));
        assert!(place_moved(
            Some(&old),
            &place(2, Some(100_000), &old.reason)
        ));
        assert!(place_moved(
            Some(&old),
            &place(3, Some(100_000), "no worker is running")
        ));
    }
}
