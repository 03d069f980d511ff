//! The queue as users see it: `queueStats` and `setJobPriority` (a job's own place is on `Job`:
//! `queuePosition`, `estimatedStartAt`, `pendingReason`, and live in `jobEvents` as `QueueChanged`).

use async_graphql::{Context, ID, Object, SimpleObject};

use super::types::{Job, Priority};
use crate::api::{ApiResult, service};

/// Queued jobs of one priority.
#[derive(SimpleObject)]
pub struct QueueDepth {
    pub priority: Priority,
    pub count: i64,
}

/// The workers of one replica (a kiln process on a host).
#[derive(SimpleObject)]
pub struct ReplicaWorkers {
    pub host: String,
    pub pid: i64,
    pub busy: i64,
    pub idle: i64,
}

/// Every live worker, on every replica (workers heartbeat into the database every 5 s; one silent
/// for 15 s is not counted).
#[derive(SimpleObject)]
pub struct WorkerStats {
    pub busy: i64,
    pub idle: i64,
    pub total: i64,
    pub replicas: Vec<ReplicaWorkers>,
}

#[derive(SimpleObject)]
pub struct QueueStats {
    /// Queued jobs per priority, URGENT first (every priority, zeros included).
    pub depth: Vec<QueueDepth>,
    /// All queued jobs.
    pub queued: i64,
    pub running: i64,
    pub workers: WorkerStats,
    /// Mean seconds from submission to first start of the jobs first started in the last hour; null
    /// when none started.
    pub mean_wait_seconds: Option<f64>,
    /// How many jobs first started in the last hour.
    pub started_last_hour: i64,
}

#[derive(Default)]
pub struct QueueQuery;

#[Object]
impl QueueQuery {
    /// The first `first` (1–100, default 50) queued jobs, in the order workers take them: priority,
    /// then age. Each has its `queuePosition`, `estimatedStartAt` and `pendingReason`.
    #[graphql(complexity = "crate::api::paging::complexity(Some(first), child_complexity)")]
    async fn queue(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: i32,
    ) -> ApiResult<Vec<Job>> {
        Ok(service(ctx)
            .queue(first.into())
            .await?
            .into_iter()
            .map(Job)
            .collect())
    }

    /// The queue's figures: depth per priority, running jobs, workers busy and idle (per replica), and
    /// the mean wait over the last hour.
    async fn queue_stats(&self, ctx: &Context<'_>) -> ApiResult<QueueStats> {
        let stats = service(ctx).queue_stats().await?;
        Ok(QueueStats {
            queued: stats.depth.iter().map(|(_, n)| n).sum(),
            depth: stats
                .depth
                .into_iter()
                .map(|(priority, count)| QueueDepth {
                    priority: priority.into(),
                    count,
                })
                .collect(),
            running: stats.running,
            workers: WorkerStats {
                busy: stats.workers.busy,
                idle: stats.workers.idle,
                total: stats.workers.busy + stats.workers.idle,
                replicas: stats
                    .replicas
                    .into_iter()
                    .map(|r| ReplicaWorkers {
                        host: r.host,
                        pid: r.pid,
                        busy: r.busy,
                        idle: r.idle,
                    })
                    .collect(),
            },
            mean_wait_seconds: stats.mean_wait_ms.map(|ms| ms / 1000.0),
            started_last_hour: stats.started_last_hour,
        })
    }
}

#[derive(Default)]
pub struct QueueMutation;

#[Object]
impl QueueMutation {
    /// Moves a queued job to another priority (its place among the other queued jobs changes at
    /// once); a job that is not queued is refused with `CONFLICT`.
    async fn set_job_priority(
        &self,
        ctx: &Context<'_>,
        id: ID,
        priority: Priority,
    ) -> ApiResult<Job> {
        Ok(Job(service(ctx)
            .set_job_priority(&id, priority.into())
            .await?))
    }
}
