//! Aggregates over jobs and their step metrics, computed by the database.

use sqlx::Row;

use super::{Store, StoreResult, corrupt};
use crate::domain::{JobGroup, JobStatus, MetricSummary, Priority};

/// How many jobs have each status, and how many queued jobs each priority.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub by_status: Vec<(JobStatus, i64)>,
    pub queued_by_priority: Vec<(Priority, i64)>,
}

impl Store {
    /// A summary of one step metric of a job; `None` when it has no points.
    pub async fn metric_summary(
        &self,
        job_id: &str,
        name: &str,
    ) -> StoreResult<Option<MetricSummary>> {
        self.tick()?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(AVG(value) AS DOUBLE PRECISION) AS mean FROM job_metrics \
             WHERE job_id = $1 AND name = $2",
        )
        .bind(job_id)
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        let count: i64 = row.try_get("n")?;
        if count == 0 {
            return Ok(None);
        }
        let mean: f64 = row.try_get("mean")?;
        let point = |order: &'static str, offset: i64| async move {
            self.tick()?;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT step, value FROM job_metrics WHERE job_id = $1 AND name = $2 \
                 ORDER BY {order} LIMIT 1 OFFSET $3"
            )))
            .bind(job_id)
            .bind(name)
            .bind(offset)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
            StoreResult::Ok((
                row.try_get::<i64, _>("step")?,
                row.try_get::<f64, _>("value")?,
            ))
        };
        let median = point("value, step", count / 2).await?.1;
        Ok(Some(MetricSummary {
            count,
            mean,
            median,
            first: point("step", 0).await?,
            last: point("step DESC", 0).await?,
            min: point("value, step", 0).await?,
        }))
    }

    /// Jobs created at or after `since` (epoch ms), grouped by model and status.
    pub async fn job_groups(&self, since: i64) -> StoreResult<Vec<JobGroup>> {
        self.tick()?;
        let rows = sqlx::query(
            "SELECT model_name, status, COUNT(*) AS n, COUNT(started_at) AS started, \
             CAST(COALESCE(SUM(started_at - created_at), 0) AS BIGINT) AS queue_ms, \
             CAST(COALESCE(SUM(run_ms), 0) AS BIGINT) AS run_ms \
             FROM jobs WHERE created_at >= $1 GROUP BY model_name, status ORDER BY model_name, status",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                Ok(JobGroup {
                    model_name: r.try_get("model_name")?,
                    status: JobStatus::parse(&status).map_err(|e| corrupt("job status", e))?,
                    count: r.try_get("n")?,
                    started: r.try_get("started")?,
                    queue_ms: r.try_get("queue_ms")?,
                    run_ms: r.try_get("run_ms")?,
                })
            })
            .collect()
    }

    /// Jobs by status and queued jobs by priority, in one round trip (`/metrics`).
    pub async fn job_counts(&self) -> StoreResult<JobCounts> {
        self.tick()?;
        let rows = sqlx::query(
            "SELECT status, priority, COUNT(*) AS n FROM jobs GROUP BY status, priority",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        let mut counts = JobCounts::default();
        for row in rows {
            let status: String = row.try_get("status")?;
            let status = JobStatus::parse(&status).map_err(|e| corrupt("job status", e))?;
            let priority = Priority::from_rank(row.try_get::<i64, _>("priority")? as i32);
            let n: i64 = row.try_get("n")?;
            match counts.by_status.iter_mut().find(|(s, _)| *s == status) {
                Some((_, total)) => *total += n,
                None => counts.by_status.push((status, n)),
            }
            if status == JobStatus::Queued {
                counts.queued_by_priority.push((priority, n));
            }
        }
        Ok(counts)
    }
}
