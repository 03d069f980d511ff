//! The durable queue as workers use it: claim a job, keep its lease, record what training does, end
//! the attempt.
//!
//! The queue order is `priority DESC, created_at ASC`. A worker claims a job by writing its lease in the
//! same statement that selects it; a `RUNNING` job whose lease has expired (its worker died) is claimable
//! again, up to `max_attempts` claims. Every write about a running job is fenced by its lease.

use sqlx::Row;

use super::jobs::{COLUMNS, EpochDetails, decode};
use super::{Dialect, Store, StoreError, StoreResult, placeholders};
use crate::domain::{EpochMetrics, JobProgress, JobRecord, JobStatus, MetricPoint, now_ms};

/// What a running job has done since its last write, each part optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainingRecord<'a> {
    pub progress: Option<&'a JobProgress>,
    pub points: &'a [MetricPoint],
    /// A finished epoch.
    pub epoch: Option<&'a EpochMetrics>,
}

/// How a lease-fenced write treats the job's progress: keep it when none is given, or replace it
/// (clearing it with none).
#[derive(Debug, Clone, Copy)]
enum ProgressWrite {
    IfGiven,
    Replace,
}

/// How an attempt ends, besides its new status.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptEnd<'a> {
    /// `Job.error`: why it failed, or why it is being retried.
    pub error: Option<&'a str>,
    /// Not counted as an attempt (a pause, a shutdown).
    pub refund_attempt: bool,
    /// A re-queued job is not claimed before this time (epoch ms).
    pub next_attempt_at: Option<i64>,
}

impl Store {
    /// Opens a transaction whose first statement re-checks `worker`'s lease on a running job, locking its
    /// row, and writes its progress. `None` (rolled back) when the lease is gone.
    async fn lease_transaction(
        &self,
        id: &str,
        worker: &str,
        progress: Option<&JobProgress>,
        write: ProgressWrite,
    ) -> StoreResult<Option<sqlx::Transaction<'static, sqlx::Any>>> {
        let progress = progress
            .map(serde_json::to_string)
            .transpose()
            .map_err(anyhow::Error::from)?;
        let sql = match write {
            ProgressWrite::IfGiven => {
                "UPDATE jobs SET progress = COALESCE($1, progress), updated_at = $2 \
                 WHERE id = $3 AND lease_owner = $4 AND status = 'RUNNING'"
            }
            ProgressWrite::Replace => {
                "UPDATE jobs SET progress = $1, updated_at = $2 \
                 WHERE id = $3 AND lease_owner = $4 AND status = 'RUNNING'"
            }
        };
        let mut tx = self.pool.begin().await.map_err(|e| self.note(e))?;
        self.tick()?;
        let held = sqlx::query(sql)
            .bind(progress)
            .bind(now_ms())
            .bind(id)
            .bind(worker)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.note(e))?
            .rows_affected()
            == 1;
        if !held {
            tx.rollback().await.map_err(|e| self.note(e))?;
            return Ok(None);
        }
        Ok(Some(tx))
    }

    /// Claims the next job for `worker`: the highest-priority, oldest `QUEUED` job whose backoff (if
    /// any) has passed. Sets `RUNNING`, the lease, and counts the attempt.
    pub async fn claim_next_job(
        &self,
        worker: &str,
        lease_ms: i64,
        gpus: u32,
    ) -> StoreResult<Option<JobRecord>> {
        self.tick()?;
        let now = now_ms();
        let lock = match self.dialect {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'RUNNING', lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, \
             started_at = COALESCE(started_at, $3), attempt_started_at = $3, updated_at = $3, error = NULL, \
             pause_requested = 0, next_attempt_at = NULL \
             WHERE id = (SELECT id FROM jobs \
                         WHERE status = 'QUEUED' AND (next_attempt_at IS NULL OR next_attempt_at <= $3) AND gpus <= $4 \
                         ORDER BY priority DESC, created_at ASC, id ASC LIMIT 1 {lock}) \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(now + lease_ms)
            .bind(now)
            .bind(gpus as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        row.as_ref().map(decode).transpose()
    }

    /// `RUNNING` jobs whose lease expired (their worker stopped responding).
    pub async fn expired_jobs(&self) -> StoreResult<Vec<JobRecord>> {
        self.tick()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE status = 'RUNNING' AND lease_expires_at < $1 \
             ORDER BY priority DESC, created_at ASC LIMIT 100"
        )))
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter().map(decode).collect()
    }

    /// Ends an attempt whose worker stopped responding, if its lease is still expired: back to the
    /// queue, not to be claimed before `next_attempt_at` (`Some`), or `FAILED` with `error` when it
    /// has no attempts left (`None`). The attempt's time counts towards the job's time limit up to
    /// its lease's expiry.
    pub async fn end_expired_attempt(
        &self,
        id: &str,
        next_attempt_at: Option<i64>,
        error: &str,
    ) -> StoreResult<Option<JobRecord>> {
        self.tick()?;
        let now = now_ms();
        let (status, finished) = match next_attempt_at {
            Some(_) => (JobStatus::Queued, None),
            None => (JobStatus::Failed, Some(now)),
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET status = $1, error = $2, next_attempt_at = $3, finished_at = $4, updated_at = $5, \
             run_ms = run_ms + COALESCE(lease_expires_at - attempt_started_at, 0), attempt_started_at = NULL, \
             lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $6 AND status = 'RUNNING' AND lease_expires_at < $5 RETURNING {COLUMNS}"
        )))
        .bind(status.as_str())
        .bind(error)
        .bind(next_attempt_at)
        .bind(finished)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        row.as_ref().map(decode).transpose()
    }

    /// Extends `worker`'s lease. Returns whether a cancel and a pause were asked for, or `None` when the
    /// worker no longer holds the job (its lease expired and another worker took it, or it was
    /// cancelled).
    pub async fn heartbeat_job(
        &self,
        id: &str,
        worker: &str,
        lease_ms: i64,
    ) -> StoreResult<Option<(bool, bool)>> {
        self.tick()?;
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1, updated_at = $2 \
             WHERE id = $3 AND lease_owner = $4 AND status = 'RUNNING' \
             RETURNING cancel_requested, pause_requested",
        )
        .bind(now + lease_ms)
        .bind(now)
        .bind(id)
        .bind(worker)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        let Some(row) = row else { return Ok(None) };
        let cancel: i64 = row.try_get("cancel_requested")?;
        let pause: i64 = row.try_get("pause_requested")?;
        Ok(Some((cancel != 0, pause != 0)))
    }

    /// Moves a job held by `worker` to `to`, which must be a legal transition from `RUNNING`, and adds
    /// the attempt's time to the job's running time. `end.refund_attempt` does not count the attempt
    /// (a pause or a shutdown is not a failure); `end.next_attempt_at` holds a re-queued job back.
    /// Returns the updated job, or `None` if the worker no longer holds it.
    pub async fn finish_job(
        &self,
        id: &str,
        worker: &str,
        to: JobStatus,
        end: AttemptEnd<'_>,
    ) -> StoreResult<Option<JobRecord>> {
        if !JobStatus::Running.can_become(to) {
            return Err(StoreError::Conflict(format!(
                "a running job cannot become {}",
                to.as_str()
            )));
        }
        self.tick()?;
        let now = now_ms();
        let finished = if to.is_terminal() { Some(now) } else { None };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET status = $1, error = $2, finished_at = $3, updated_at = $4, lease_owner = NULL, \
             lease_expires_at = NULL, pause_requested = 0, next_attempt_at = $7, attempts = attempts - $8, \
             run_ms = run_ms + COALESCE($4 - attempt_started_at, 0), attempt_started_at = NULL \
             WHERE id = $5 AND lease_owner = $6 AND status = 'RUNNING' RETURNING {COLUMNS}"
        )))
        .bind(to.as_str())
        .bind(end.error)
        .bind(finished)
        .bind(now)
        .bind(id)
        .bind(worker)
        .bind(end.next_attempt_at)
        .bind(i64::from(end.refund_attempt))
        .fetch_optional(&self.pool)
        .await.map_err(|e| self.note(e))?;
        row.as_ref().map(decode).transpose()
    }

    /// Rewinds a job's recorded history to a checkpoint, while `worker` holds its lease: step metrics
    /// after `step` and epochs after `epoch` are removed and the progress is set to `progress` (none
    /// from the start). Returns `false`, writing nothing, when the lease is gone.
    pub async fn rewind_job(
        &self,
        id: &str,
        worker: &str,
        step: u64,
        epoch: u32,
        progress: Option<&JobProgress>,
    ) -> StoreResult<bool> {
        let Some(mut tx) = self
            .lease_transaction(id, worker, progress, ProgressWrite::Replace)
            .await?
        else {
            return Ok(false);
        };
        for (sql, after) in [
            (
                "DELETE FROM job_metrics WHERE job_id = $1 AND step > $2",
                step as i64,
            ),
            (
                "DELETE FROM job_epochs WHERE job_id = $1 AND epoch > $2",
                epoch as i64,
            ),
        ] {
            self.tick()?;
            sqlx::query(sql)
                .bind(id)
                .bind(after)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.note(e))?;
        }
        tx.commit().await.map_err(|e| self.note(e))?;
        Ok(true)
    }

    /// Marks a running job held by `worker` as stalled since `since` (in its progress). Returns `false`
    /// when the lease is gone.
    pub async fn mark_stalled(&self, id: &str, worker: &str, since: i64) -> StoreResult<bool> {
        let Some(job) = self.get_job(id).await? else {
            return Ok(false);
        };
        let mut progress = job.progress.unwrap_or_default();
        progress.stalled_since = Some(since);
        let progress = serde_json::to_string(&progress).map_err(anyhow::Error::from)?;
        self.set_while_running(id, worker, "progress", progress)
            .await
    }

    /// Records where the attempt `worker` holds trains. Returns `false` when the lease is gone.
    pub async fn set_job_device(&self, id: &str, worker: &str, device: &str) -> StoreResult<bool> {
        self.set_while_running(id, worker, "device", device.to_string())
            .await
    }

    /// Sets one column of a running job that `worker` holds. Returns `false` when the lease is gone.
    async fn set_while_running(
        &self,
        id: &str,
        worker: &str,
        column: &'static str,
        value: String,
    ) -> StoreResult<bool> {
        self.tick()?;
        // `column` is one of this file's constants, never input.
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET {column} = $1, updated_at = $2 \
             WHERE id = $3 AND lease_owner = $4 AND status = 'RUNNING'"
        )))
        .bind(value)
        .bind(now_ms())
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Writes what a running job has done since the last write — its progress, step metrics and a
    /// finished epoch's metrics — in one transaction, and only while `worker` holds the job's lease: the
    /// first statement re-checks the lease and locks the job's row, so a worker whose lease was taken
    /// over writes nothing. Returns `false` then. A point or epoch stored again (a job started again)
    /// replaces the earlier one.
    pub async fn record_training(
        &self,
        job_id: &str,
        worker: &str,
        record: TrainingRecord<'_>,
    ) -> StoreResult<bool> {
        let TrainingRecord {
            progress,
            points,
            epoch,
        } = record;
        let Some(mut tx) = self
            .lease_transaction(job_id, worker, progress, ProgressWrite::IfGiven)
            .await?
        else {
            return Ok(false);
        };
        if !points.is_empty() {
            self.tick()?;
            let values: Vec<String> = (0..points.len())
                .map(|i| format!("({})", placeholders(i * 6 + 1, 6)))
                .collect();
            let sql = format!(
                "INSERT INTO job_metrics (job_id, name, step, epoch, value, created_at) VALUES {} \
                 ON CONFLICT (job_id, name, step) DO UPDATE SET value = excluded.value, epoch = excluded.epoch, \
                 created_at = excluded.created_at",
                values.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for p in points {
                query = query
                    .bind(job_id)
                    .bind(p.name.clone())
                    .bind(p.step)
                    .bind(p.epoch)
                    .bind(p.value)
                    .bind(p.created_at);
            }
            query.execute(&mut *tx).await.map_err(|e| self.note(e))?;
        }
        if let Some(m) = epoch {
            self.tick()?;
            sqlx::query(
                "INSERT INTO job_epochs (job_id, epoch, train_loss, val_loss, accuracy, prec, recall, f1, created_at, details) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (job_id, epoch) DO UPDATE SET train_loss = excluded.train_loss, \
                 val_loss = excluded.val_loss, accuracy = excluded.accuracy, prec = excluded.prec, \
                 recall = excluded.recall, f1 = excluded.f1, created_at = excluded.created_at, \
                 details = excluded.details",
            )
            .bind(job_id)
            .bind(m.epoch as i64)
            .bind(m.train_loss)
            .bind(m.val_loss)
            .bind(m.accuracy)
            .bind(m.precision)
            .bind(m.recall)
            .bind(m.f1)
            .bind(now_ms())
            .bind(
                serde_json::to_string(&EpochDetails {
                    per_label: m.per_label.clone(),
                    confusion_matrix: m.confusion_matrix.clone(),
                })
                .expect("epoch details serialise"),
            )
            .execute(&mut *tx)
            .await.map_err(|e| self.note(e))?;
        }
        tx.commit().await.map_err(|e| self.note(e))?;
        Ok(true)
    }
}
