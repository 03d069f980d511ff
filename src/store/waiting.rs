//! The queue as its users see it: the workers serving it (each registered with a heartbeat, on every
//! replica), the snapshot that queue positions, estimated starts and reasons are worked out from
//! (`domain::QueueSnapshot`), and the queue's figures.

use std::collections::HashMap;

use sqlx::Row;

use super::jobs::{COLUMNS, decode};
use super::{Store, StoreResult, corrupt};
use crate::domain::{
    JobProgress, JobRecord, LiveWorker, Priority, QueueSnapshot, QueuedJob, RunningJob, now_ms,
};

/// A worker whose heartbeat is older than this is not counted.
const WORKER_ALIVE_MS: i64 = 15_000;
/// Rows of workers silent for this long are removed.
const WORKER_FORGOTTEN_MS: i64 = 3_600_000;
/// The most queued jobs one snapshot reads (those after them have no place worked out).
pub const SNAPSHOT_QUEUED: i64 = 10_000;
/// Completed jobs of this age or younger give the usual run times.
const RUN_TIMES_OVER_MS: i64 = 7 * 24 * 3_600_000;

impl Store {
    /// Registers a worker, or renews its heartbeat (and puts its row back if it was removed).
    pub async fn worker_heartbeat(
        &self,
        id: &str,
        host: &str,
        pid: i64,
        gpus: u32,
    ) -> StoreResult<()> {
        self.tick()?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO workers (id, host, pid, started_at, heartbeat_at, gpus) VALUES ($1, $2, $3, $4, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = $4",
        )
        .bind(id)
        .bind(host)
        .bind(pid)
        .bind(now)
        .bind(gpus as i64)
        .execute(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        Ok(())
    }

    /// A worker that stops removes itself, and with it the rows of workers long dead.
    pub async fn remove_worker(&self, id: &str) -> StoreResult<()> {
        self.tick()?;
        sqlx::query("DELETE FROM workers WHERE id = $1 OR heartbeat_at < $2")
            .bind(id)
            .bind(now_ms() - WORKER_FORGOTTEN_MS)
            .execute(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        Ok(())
    }

    /// The workers whose heartbeat is recent, by replica.
    pub async fn live_workers(&self) -> StoreResult<Vec<LiveWorker>> {
        self.tick()?;
        let rows = sqlx::query(
            "SELECT id, host, pid, started_at, heartbeat_at, gpus FROM workers WHERE heartbeat_at >= $1 \
             ORDER BY host, pid, started_at, id",
        )
        .bind(now_ms() - WORKER_ALIVE_MS)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter()
            .map(|r| {
                Ok(LiveWorker {
                    id: r.try_get("id")?,
                    host: r.try_get("host")?,
                    pid: r.try_get("pid")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                    gpus: r.try_get::<i64, _>("gpus")? as u32,
                })
            })
            .collect()
    }

    /// The first `limit` queued jobs, in the order workers take them.
    pub async fn queued_in_order(&self, limit: i64) -> StoreResult<Vec<JobRecord>> {
        self.tick()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE status = 'QUEUED' \
             ORDER BY priority DESC, created_at ASC, id ASC LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter().map(decode).collect()
    }

    /// The workers that hold a running job's lease.
    pub async fn running_leases(&self) -> StoreResult<Vec<String>> {
        self.tick()?;
        let rows = sqlx::query(
            "SELECT lease_owner FROM jobs WHERE status = 'RUNNING' AND lease_owner IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("lease_owner")?))
            .collect()
    }

    /// The queue, the running jobs, the live workers and the usual run times, in four reads.
    pub async fn queue_snapshot(&self) -> StoreResult<QueueSnapshot> {
        self.tick()?;
        let queued = sqlx::query(
            "SELECT id, model_name, priority, created_at, next_attempt_at, gpus FROM jobs \
             WHERE status = 'QUEUED' ORDER BY priority DESC, created_at ASC, id ASC LIMIT $1",
        )
        .bind(SNAPSHOT_QUEUED)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        let queued = queued
            .iter()
            .map(|r| {
                Ok(QueuedJob {
                    id: r.try_get("id")?,
                    model_name: r.try_get("model_name")?,
                    priority: Priority::from_rank(r.try_get::<i64, _>("priority")? as i32),
                    created_at: r.try_get("created_at")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                    gpus: r.try_get::<i64, _>("gpus")? as u32,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.tick()?;
        let running = sqlx::query(
            "SELECT id, model_name, lease_owner, attempt_started_at, progress FROM jobs \
             WHERE status = 'RUNNING'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        let running = running
            .iter()
            .map(|r| {
                let progress: Option<String> = r.try_get("progress")?;
                let progress: Option<JobProgress> = progress
                    .map(|p| serde_json::from_str(&p).map_err(|e| corrupt("job progress", e)))
                    .transpose()?;
                Ok(RunningJob {
                    id: r.try_get("id")?,
                    model_name: r.try_get("model_name")?,
                    lease_owner: r.try_get("lease_owner")?,
                    attempt_started_at: r.try_get("attempt_started_at")?,
                    eta_seconds: progress.and_then(|p| p.eta_seconds),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let workers = self.live_workers().await?;
        self.tick()?;
        let times = sqlx::query(
            "SELECT model_name, COUNT(*) AS n, CAST(AVG(run_ms) AS DOUBLE PRECISION) AS mean FROM jobs \
             WHERE status = 'COMPLETED' AND finished_at >= $1 GROUP BY model_name",
        )
        .bind(now_ms() - RUN_TIMES_OVER_MS)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        let mut mean_run_ms = HashMap::new();
        let (mut total, mut count) = (0.0, 0i64);
        for row in &times {
            let n: i64 = row.try_get("n")?;
            let mean: f64 = row.try_get("mean")?;
            total += mean * n as f64;
            count += n;
            mean_run_ms.insert(row.try_get::<String, _>("model_name")?, mean);
        }
        Ok(QueueSnapshot {
            queued,
            running,
            workers,
            mean_run_ms,
            overall_run_ms: (count > 0).then(|| total / count as f64),
        })
    }

    /// The mean wait from submission to the first start of the jobs first started at or after
    /// `since` (epoch ms), in ms, and how many there were.
    pub async fn mean_queue_wait(&self, since: i64) -> StoreResult<(Option<f64>, i64)> {
        self.tick()?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(AVG(started_at - created_at) AS DOUBLE PRECISION) AS mean \
             FROM jobs WHERE started_at >= $1",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        let n: i64 = row.try_get("n")?;
        let mean: Option<f64> = row.try_get("mean")?;
        Ok((mean.filter(|_| n > 0), n))
    }

    /// Sets a queued job's priority and returns the job; `None` when it is not queued (or not there).
    pub async fn set_queued_priority(
        &self,
        id: &str,
        priority: Priority,
    ) -> StoreResult<Option<JobRecord>> {
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET priority = $1, updated_at = $2 WHERE id = $3 AND status = 'QUEUED' \
             RETURNING {COLUMNS}"
        )))
        .bind(priority.rank() as i64)
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        row.as_ref().map(decode).transpose()
    }
}
