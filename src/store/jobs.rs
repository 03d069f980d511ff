//! Job records: writing a submitted job, reading and listing jobs, and what users do to them (cancel,
//! pause, queue again). The queue as workers use it is in `queue.rs`, the epochs and step metrics in
//! `history.rs`, the queue as users see it in `waiting.rs`; all read rows with [`decode`].

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, StoreResult, corrupt};
use crate::domain::{
    BaseModelRef, JobFilter, JobRecord, JobStatus, Priority, RETRY_CANCELLED, RETRY_PROMISE,
    Resources, TaskKind, TrainingSettings, now_ms,
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
    pub resources: Resources,
    /// The fields it reads from its dataset.
    pub fields: crate::domain::FieldNames,
}

/// One page of a newest-first listing; `after` is the `(created_at, id)` of the previous page's last row.
#[derive(Debug, Clone)]
pub struct Page {
    pub first: i64,
    pub after: Option<(i64, String)>,
}

pub(super) const COLUMNS: &str = "id, name, model_name, task, dataset_id, base_model, model_config, hyperparameters, customization, priority, \
                       status, error, progress, attempts, max_attempts, lease_owner, lease_expires_at, \
                       cancel_requested, pause_requested, next_attempt_at, max_duration_ms, run_ms, \
                       attempt_started_at, model_version_id, created_at, started_at, finished_at, auto_promote, \
                       reset_head, reason, device, resources, fields";

/// What `job_epochs.details` holds.
#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EpochDetails {
    #[serde(default)]
    pub(super) per_label: Vec<crate::domain::LabelMetrics>,
    #[serde(default)]
    pub(super) confusion_matrix: Vec<Vec<u64>>,
}

pub(super) fn json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
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
        resources: row
            .try_get::<Option<String>, _>("resources")?
            .map(|r| json("job resources", &r))
            .transpose()?
            .unwrap_or_default(),
        fields: row
            .try_get::<Option<String>, _>("fields")?
            .map(|f| json("job fields", &f))
            .transpose()?,
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
    if let Some(dataset) = &filter.dataset_id {
        values.push(dataset.clone());
        clauses.push(format!("dataset_id = ${}", values.len()));
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
             customization, auto_promote, reset_head, reason, resources, gpus, fields) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'QUEUED', 0, $10, 0, $12, $11, $11, $13, $14, $15, $16, $17, $18, $19) \
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
        .bind(
            (job.resources != Resources::default())
                .then(|| serde_json::to_string(&job.resources).expect("resources serialise")),
        )
        .bind(job.resources.gpus as i64)
        .bind(serde_json::to_string(&job.fields).map_err(anyhow::Error::from)?)
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
}
