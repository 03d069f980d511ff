//! Jobs, the durable queue they form, their epochs and their step metrics.
//!
//! The queue order is `priority DESC, created_at ASC`. A worker claims a job by writing its lease in the
//! same statement that selects it; a `RUNNING` job whose lease has expired (its worker died) is claimable
//! again, up to `max_attempts` claims.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Dialect, Store, StoreError, StoreResult, corrupt, placeholders};
use crate::domain::{
    BaseModelRef, EpochMetrics, JobFilter, JobProgress, JobRecord, JobStatus, MetricPoint,
    Priority, RETRY_CANCELLED, RETRY_PROMISE, TaskKind, TrainingSettings, now_ms,
};

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub name: String,
    pub model_name: String,
    pub dataset_id: String,
    pub settings: TrainingSettings,
    pub priority: Priority,
    pub max_attempts: i64,
    pub max_duration_ms: Option<i64>,
    pub auto_promote: Option<String>,
    /// Why the job was submitted (a retrain's reason, say).
    pub reason: Option<String>,
}

/// What a running job has done since its last write, each part optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainingRecord<'a> {
    pub progress: Option<&'a JobProgress>,
    pub points: &'a [MetricPoint],
    /// A finished epoch.
    pub epoch: Option<&'a EpochMetrics>,
}

/// One page of a newest-first listing; `after` is the `(created_at, id)` of the previous page's last row.
#[derive(Debug, Clone)]
pub struct Page {
    pub first: i64,
    pub after: Option<(i64, String)>,
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

pub(super) const COLUMNS: &str = "id, name, model_name, task, dataset_id, base_model, model_config, hyperparameters, customization, priority, \
                       status, error, progress, attempts, max_attempts, lease_owner, lease_expires_at, \
                       cancel_requested, pause_requested, next_attempt_at, max_duration_ms, run_ms, \
                       attempt_started_at, model_version_id, created_at, started_at, finished_at, auto_promote, \
                       reset_head, reason, device";

/// What `job_epochs.details` holds.
#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EpochDetails {
    #[serde(default)]
    per_label: Vec<crate::domain::LabelMetrics>,
    #[serde(default)]
    confusion_matrix: Vec<Vec<u64>>,
}

fn json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

pub(super) fn decode(row: &AnyRow) -> StoreResult<JobRecord> {
    let base_model: Option<String> = row.try_get("base_model")?;
    let model_config: Option<String> = row.try_get("model_config")?;
    let progress: Option<String> = row.try_get("progress")?;
    let cancel: i64 = row.try_get("cancel_requested")?;
    let pause: i64 = row.try_get("pause_requested")?;
    let reset_head: i64 = row.try_get("reset_head")?;
    let settings = TrainingSettings {
        task: TaskKind::parse(&row.try_get::<String, _>("task")?).map_err(|e| corrupt("job", e))?,
        base_model: match base_model {
            Some(raw) => BaseModelRef::parse("baseModel", &raw).map_err(|e| corrupt("job", e))?,
            None => None,
        },
        model_config: model_config
            .map(|c| json("job model config", &c))
            .transpose()?,
        hyperparameters: json(
            "job hyperparameters",
            &row.try_get::<String, _>("hyperparameters")?,
        )?,
        lora: row
            .try_get::<Option<String>, _>("customization")?
            .map(|c| json("job customization", &c))
            .transpose()?,
        reset_head: reset_head != 0,
    };
    Ok(JobRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        model_name: row.try_get("model_name")?,
        dataset_id: row.try_get("dataset_id")?,
        settings,
        priority: Priority::from_rank(row.try_get::<i64, _>("priority")? as i32),
        status: JobStatus::parse(&row.try_get::<String, _>("status")?)
            .map_err(|e| corrupt("job", e))?,
        error: row.try_get("error")?,
        progress: progress.map(|p| json("job progress", &p)).transpose()?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        cancel_requested: cancel != 0,
        pause_requested: pause != 0,
        next_attempt_at: row.try_get("next_attempt_at")?,
        max_duration_ms: row.try_get("max_duration_ms")?,
        run_ms: row.try_get("run_ms")?,
        attempt_started_at: row.try_get("attempt_started_at")?,
        model_version_id: row.try_get("model_version_id")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        auto_promote: row.try_get("auto_promote")?,
        reason: row.try_get("reason")?,
        device: row.try_get("device")?,
    })
}

/// The `WHERE` clauses of a job filter (placeholders `$1`, `$2`, …) and the values they bind, in order.
fn filter_clauses(filter: &JobFilter) -> (Vec<String>, Vec<String>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    if let Some(status) = filter.status {
        values.push(status.as_str().to_string());
        clauses.push(format!("status = ${}", values.len()));
    }
    if let Some(model) = &filter.model_name {
        values.push(model.clone());
        clauses.push(format!("model_name = ${}", values.len()));
    }
    (clauses, values)
}

fn where_sql(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

fn status_list(statuses: &[JobStatus]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    pub async fn insert_job(&self, job: &NewJob) -> StoreResult<JobRecord> {
        self.tick()?;
        let now = now_ms();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO jobs (id, name, model_name, task, dataset_id, base_model, model_config, hyperparameters, \
             priority, status, attempts, max_attempts, cancel_requested, max_duration_ms, created_at, updated_at, \
             customization, auto_promote, reset_head, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'QUEUED', 0, $10, 0, $12, $11, $11, $13, $14, $15, $16) \
             RETURNING {COLUMNS}"
        )))
        .bind(&job.id)
        .bind(&job.name)
        .bind(&job.model_name)
        .bind(job.settings.task.as_str())
        .bind(&job.dataset_id)
        .bind(job.settings.base_model.as_ref().map(|b| b.to_string()))
        .bind(
            job.settings
                .model_config
                .map(|c| serde_json::to_string(&c).expect("config serialises")),
        )
        .bind(serde_json::to_string(&job.settings.hyperparameters).map_err(anyhow::Error::from)?)
        .bind(job.priority.rank() as i64)
        .bind(job.max_attempts)
        .bind(now)
        .bind(job.max_duration_ms)
        .bind(
            job.settings
                .lora
                .as_ref()
                .map(|l| serde_json::to_string(l).expect("LoRA settings serialise")),
        )
        .bind(&job.auto_promote)
        .bind(job.settings.reset_head as i64)
        .bind(&job.reason)
        .fetch_one(&self.pool)
        .await.map_err(|e| self.note(e))?;
        decode(&row)
    }

    pub async fn get_job(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        row.as_ref().map(decode).transpose()
    }

    /// Newest first, filtered; one round trip.
    pub async fn list_jobs(&self, filter: &JobFilter, page: &Page) -> StoreResult<Vec<JobRecord>> {
        self.tick()?;
        let (mut clauses, values) = filter_clauses(filter);
        let mut n = values.len();
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if page.after.is_some() {
            let (at, id) = (next(), next());
            clauses.push(format!(
                "(created_at < {at} OR (created_at = {at} AND id < {id}))"
            ));
        }
        let limit = next();
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs {} ORDER BY created_at DESC, id DESC LIMIT {limit}",
            where_sql(&clauses)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in values {
            query = query.bind(value);
        }
        if let Some((at, id)) = &page.after {
            query = query.bind(*at).bind(id.clone());
        }
        query = query.bind(page.first);
        query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.note(e))?
            .iter()
            .map(decode)
            .collect()
    }

    /// Jobs matching `filter`. Only the filters given appear in the statement, so the indexes on
    /// `(status, created_at, id)` and `(model_name, created_at, id)` serve it.
    pub async fn count_jobs(&self, filter: &JobFilter) -> StoreResult<i64> {
        self.tick()?;
        let (clauses, values) = filter_clauses(filter);
        let sql = format!("SELECT COUNT(*) AS n FROM jobs {}", where_sql(&clauses));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in values {
            query = query.bind(value);
        }
        let row = query
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        Ok(row.try_get("n")?)
    }

    /// Jobs by id, in one round trip (ids that name none are left out).
    pub async fn get_jobs(&self, ids: &[String]) -> StoreResult<Vec<JobRecord>> {
        let select = format!("SELECT {COLUMNS} FROM jobs WHERE id IN ({{in}})");
        self.fetch_in(&select, ids)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// Which of `ids` name jobs that are running.
    pub async fn running_among(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        let rows = self
            .fetch_in(
                "SELECT id FROM jobs WHERE status = 'RUNNING' AND id IN ({in})",
                ids,
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(|e| self.note(e)))
            .collect()
    }

    /// Claims the next job for `worker`: the highest-priority, oldest `QUEUED` job whose backoff (if
    /// any) has passed. Sets `RUNNING`, the lease, and counts the attempt.
    pub async fn claim_next_job(
        &self,
        worker: &str,
        lease_ms: i64,
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
                         WHERE status = 'QUEUED' AND (next_attempt_at IS NULL OR next_attempt_at <= $3) \
                         ORDER BY priority DESC, created_at ASC, id ASC LIMIT 1 {lock}) \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(now + lease_ms)
            .bind(now)
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

    /// Cancels a job: a queued (or paused) one at once, a running one by asking its worker to stop.
    /// Returns the job as it is now; a `Conflict` when it has already finished.
    pub async fn cancel_job(&self, id: &str) -> StoreResult<JobRecord> {
        self.tick()?;
        let now = now_ms();
        let direct = status_list(
            &JobStatus::sources_of(JobStatus::Cancelled)
                .into_iter()
                .filter(|s| *s != JobStatus::Running)
                .collect::<Vec<_>>(),
        );
        // A job waiting for an automatic retry no longer promises one.
        let sql = format!(
            "UPDATE jobs SET \
               status = CASE WHEN status IN ({direct}) THEN 'CANCELLED' ELSE status END, \
               finished_at = CASE WHEN status IN ({direct}) THEN $1 ELSE finished_at END, \
               error = CASE WHEN status IN ({direct}) THEN REPLACE(error, $3, $4) ELSE error END, \
               next_attempt_at = CASE WHEN status IN ({direct}) THEN NULL ELSE next_attempt_at END, \
               cancel_requested = CASE WHEN status = 'RUNNING' THEN 1 ELSE cancel_requested END, \
               updated_at = $1 \
             WHERE id = $2 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(id)
            .bind(RETRY_PROMISE)
            .bind(RETRY_CANCELLED)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.note(e))?
            .ok_or(StoreError::NotFound("job"))?;
        let job = decode(&row)?;
        if job.status.is_terminal() && job.status != JobStatus::Cancelled {
            return Err(StoreError::Conflict(format!(
                "the job has already finished ({})",
                job.status.as_str()
            )));
        }
        Ok(job)
    }

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

    /// Pauses a job: a queued one at once (`PAUSED`), a running one by asking its worker (it
    /// checkpoints and becomes `PAUSED`). Pausing a paused job changes nothing; an ended job is a
    /// `Conflict`.
    pub async fn pause_job(&self, id: &str) -> StoreResult<JobRecord> {
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET \
               status = CASE WHEN status = 'QUEUED' THEN 'PAUSED' ELSE status END, \
               pause_requested = CASE WHEN status = 'RUNNING' THEN 1 ELSE pause_requested END, \
               next_attempt_at = CASE WHEN status = 'QUEUED' THEN NULL ELSE next_attempt_at END, \
               updated_at = $1 \
             WHERE id = $2 RETURNING {COLUMNS}"
        )))
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?
        .ok_or(StoreError::NotFound("job"))?;
        let job = decode(&row)?;
        if job.status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "the job has ended ({}); only a running or queued job can be paused",
                job.status.as_str()
            )));
        }
        Ok(job)
    }

    /// Moves a job in one of the statuses `from` back to the queue: a `PAUSED` one as it was, a `FAILED`
    /// or `CANCELLED` one (a retry) with its attempts and running time counted from zero again. Returns
    /// the job; a `Conflict` naming its status when it is in another one.
    pub async fn requeue_job(&self, id: &str, from: &[JobStatus]) -> StoreResult<JobRecord> {
        if let Some(illegal) = from.iter().find(|s| !s.can_become(JobStatus::Queued)) {
            return Err(StoreError::Conflict(format!(
                "a {} job cannot be queued",
                illegal.as_str()
            )));
        }
        self.tick()?;
        let now = now_ms();
        let sources = status_list(from);
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET status = 'QUEUED', error = NULL, finished_at = NULL, cancel_requested = 0, \
             pause_requested = 0, next_attempt_at = NULL, \
             attempts = CASE WHEN status = 'PAUSED' THEN attempts ELSE 0 END, \
             run_ms = CASE WHEN status = 'PAUSED' THEN run_ms ELSE 0 END, updated_at = $1 \
             WHERE id = $2 AND status IN ({sources}) RETURNING {COLUMNS}"
        )))
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        match row {
            Some(row) => decode(&row),
            None => {
                let job = self.get_job(id).await?.ok_or(StoreError::NotFound("job"))?;
                Err(StoreError::Conflict(format!(
                    "the job is {}",
                    job.status.as_str()
                )))
            }
        }
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

    /// Epochs of many jobs in one round trip, ordered by job then epoch.
    pub async fn epochs_of(&self, job_ids: &[String]) -> StoreResult<Vec<(String, EpochMetrics)>> {
        self.epochs_where(
            "SELECT job_id, epoch, train_loss, val_loss, accuracy, prec, recall, f1, details FROM job_epochs \
             WHERE job_id IN ({in}) ORDER BY job_id, epoch",
            job_ids,
        )
        .await
    }

    /// The last finished epoch of each of many jobs (those that have one), in one round trip.
    pub async fn last_epochs_of(
        &self,
        job_ids: &[String],
    ) -> StoreResult<Vec<(String, EpochMetrics)>> {
        self.epochs_where(
            "SELECT job_id, epoch, train_loss, val_loss, accuracy, prec, recall, f1, details FROM job_epochs e \
             WHERE job_id IN ({in}) \
             AND epoch = (SELECT MAX(epoch) FROM job_epochs m WHERE m.job_id = e.job_id)",
            job_ids,
        )
        .await
    }

    async fn epochs_where(
        &self,
        sql: &'static str,
        job_ids: &[String],
    ) -> StoreResult<Vec<(String, EpochMetrics)>> {
        let rows = self
            .fetch_in(sql, job_ids)
            .await
            .map_err(|e| self.note(e))?;
        rows.iter()
            .map(|r| {
                let details: EpochDetails = match r.try_get::<Option<String>, _>("details")? {
                    Some(text) => json("epoch details", &text)?,
                    None => EpochDetails::default(),
                };
                Ok((
                    r.try_get("job_id")?,
                    EpochMetrics {
                        epoch: r.try_get::<i64, _>("epoch")? as u32,
                        train_loss: r.try_get("train_loss")?,
                        val_loss: r.try_get("val_loss")?,
                        accuracy: r.try_get("accuracy")?,
                        precision: r.try_get("prec")?,
                        recall: r.try_get("recall")?,
                        f1: r.try_get("f1")?,
                        per_label: details.per_label,
                        confusion_matrix: details.confusion_matrix,
                    },
                ))
            })
            .collect()
    }

    /// The last `last` points of one metric (all metrics when `name` is `None`) of each of many jobs,
    /// in one round trip: by job, oldest first.
    pub async fn metrics_of(
        &self,
        job_ids: &[String],
        name: Option<&str>,
        last: i64,
    ) -> StoreResult<Vec<(String, MetricPoint)>> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.tick()?;
        let n = job_ids.len();
        let name_clause = match name {
            Some(_) => format!("AND name = ${}", n + 1),
            None => String::new(),
        };
        let last_at = if name.is_some() { n + 2 } else { n + 1 };
        let sql = format!(
            "SELECT job_id, name, step, epoch, value, created_at FROM ( \
               SELECT job_id, name, step, epoch, value, created_at, \
                      ROW_NUMBER() OVER (PARTITION BY job_id ORDER BY step DESC, name) AS rn \
               FROM job_metrics WHERE job_id IN ({}) {name_clause}) ranked \
             WHERE rn <= ${last_at} ORDER BY job_id, step, name DESC",
            placeholders(1, n)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in job_ids {
            query = query.bind(id);
        }
        if let Some(name) = name {
            query = query.bind(name);
        }
        let rows = query
            .bind(last)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("job_id")?,
                    MetricPoint {
                        name: r.try_get("name")?,
                        step: r.try_get("step")?,
                        epoch: r.try_get("epoch")?,
                        value: r.try_get("value")?,
                        created_at: r.try_get("created_at")?,
                    },
                ))
            })
            .collect()
    }

    /// Every step of one metric of a job reduced to at most `points` points, oldest first: the steps
    /// cut into runs of equal width, each run answered as the mean of its values at its last step
    /// (with its last epoch and time). A series of at most `points` steps comes back as it is.
    pub async fn metric_series(
        &self,
        job_id: &str,
        name: &str,
        points: i64,
    ) -> StoreResult<Vec<MetricPoint>> {
        self.tick()?;
        // The width from the highest step, so that steps 1..=max fall in at most `points` runs.
        let rows = sqlx::query(
            "WITH s AS (SELECT step, epoch, value, created_at FROM job_metrics \
                        WHERE job_id = $1 AND name = $2), \
                  w AS (SELECT (MAX(step) + $3 - 1) / $3 AS width FROM s) \
             SELECT MAX(step) AS step, MAX(epoch) AS epoch, AVG(value) AS value, \
                    MAX(created_at) AS created_at \
             FROM s, w WHERE width > 0 GROUP BY (step - 1) / width ORDER BY 1",
        )
        .bind(job_id)
        .bind(name)
        .bind(points)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter()
            .map(|r| {
                Ok(MetricPoint {
                    name: name.to_string(),
                    step: r.try_get("step")?,
                    epoch: r.try_get("epoch")?,
                    value: r.try_get("value")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// The last `last` points of one metric (all metrics when `name` is `None`), oldest first.
    pub async fn job_metrics(
        &self,
        job_id: &str,
        name: Option<&str>,
        last: i64,
    ) -> StoreResult<Vec<MetricPoint>> {
        let rows = self.metrics_of(&[job_id.to_string()], name, last).await?;
        Ok(rows.into_iter().map(|(_, point)| point).collect())
    }
}
