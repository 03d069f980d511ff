//! The model registry: named models and their numbered versions, each tied to the job and dataset that
//! produced it.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, StoreResult, corrupt};
use crate::domain::{EpochMetrics, JobRecord, ModelRecord, ModelVersionRecord, now_ms};

pub(super) const VERSION_COLUMNS: &str =
    "id, model_name, version, job_id, dataset_id, artifact_uri, metrics, created_at";

pub(super) fn decode_version(row: &AnyRow) -> StoreResult<ModelVersionRecord> {
    Ok(ModelVersionRecord {
        id: row.try_get("id")?,
        model_name: row.try_get("model_name")?,
        version: row.try_get("version")?,
        job_id: row.try_get("job_id")?,
        dataset_id: row.try_get("dataset_id")?,
        artifact_uri: row.try_get("artifact_uri")?,
        metrics: serde_json::from_str(&row.try_get::<String, _>("metrics")?)
            .map_err(|e| corrupt("model version metrics", e))?,
        created_at: row.try_get("created_at")?,
    })
}

fn decode_model(row: &AnyRow) -> StoreResult<ModelRecord> {
    Ok(ModelRecord {
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// In one transaction: registers the next version of the job's model and marks the job `COMPLETED`
    /// with it. Nothing is written if `worker` no longer holds the job.
    pub async fn complete_job_with_version(
        &self,
        job: &JobRecord,
        worker: &str,
        version_id: &str,
        artifact_uri: &str,
        metrics: &EpochMetrics,
    ) -> StoreResult<(JobRecord, ModelVersionRecord)> {
        let metrics_json = serde_json::to_string(metrics).map_err(anyhow::Error::from)?;
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(|e| self.note(e))?;
        self.tick()?;
        sqlx::query(
            "INSERT INTO models (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&job.model_name)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.note(e))?;
        self.tick()?;
        // The model's counter, not the versions left: a deleted version's number is not given again.
        let number: i64 = sqlx::query(
            "UPDATE models SET last_version = last_version + 1 WHERE name = $1 RETURNING last_version",
        )
        .bind(&job.model_name)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.note(e))?
        .try_get("last_version")?;
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO model_versions ({VERSION_COLUMNS}) VALUES ($1, $2, $8, $3, $4, $5, $6, $7) \
             RETURNING {VERSION_COLUMNS}"
        )))
        .bind(version_id)
        .bind(&job.model_name)
        .bind(&job.id)
        .bind(&job.dataset_id)
        .bind(artifact_uri)
        .bind(&metrics_json)
        .bind(now)
        .bind(number)
        .fetch_one(&mut *tx)
        .await.map_err(|e| self.note(e))?;
        let version = decode_version(&row)?;
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET status = 'COMPLETED', model_version_id = $1, finished_at = $2, updated_at = $2, \
             lease_owner = NULL, lease_expires_at = NULL, error = NULL, \
             run_ms = run_ms + COALESCE($2 - attempt_started_at, 0), attempt_started_at = NULL \
             WHERE id = $3 AND lease_owner = $4 AND status = 'RUNNING' RETURNING {}",
            super::jobs::COLUMNS
        )))
        .bind(version_id)
        .bind(now)
        .bind(&job.id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await.map_err(|e| self.note(e))?;
        let Some(row) = row else {
            tx.rollback().await.map_err(|e| self.note(e))?;
            return Err(StoreError::Conflict(
                "the worker no longer holds the job".into(),
            ));
        };
        let job = super::jobs::decode(&row)?;
        tx.commit().await.map_err(|e| self.note(e))?;
        Ok((job, version))
    }

    pub async fn get_model(&self, name: &str) -> StoreResult<Option<ModelRecord>> {
        self.tick()?;
        let row = sqlx::query("SELECT name, created_at FROM models WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        row.as_ref().map(decode_model).transpose()
    }

    /// Models by name, in name order, after `after`.
    pub async fn list_models(
        &self,
        first: i64,
        after: Option<&str>,
    ) -> StoreResult<Vec<ModelRecord>> {
        self.tick()?;
        let rows = sqlx::query(
            "SELECT name, created_at FROM models WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(first)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter().map(decode_model).collect()
    }

    pub async fn count_models(&self) -> StoreResult<i64> {
        self.tick()?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM models")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        Ok(row.try_get("n")?)
    }

    /// Versions by id, in one round trip.
    pub async fn get_model_versions(&self, ids: &[String]) -> StoreResult<Vec<ModelVersionRecord>> {
        let select = format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE id IN ({{in}})");
        self.fetch_in(&select, ids)
            .await
            .map_err(|e| self.note(e))?
            .iter()
            .map(decode_version)
            .collect()
    }

    /// All versions of many models, in one round trip, ordered by model then version.
    pub async fn versions_of_models(
        &self,
        names: &[String],
    ) -> StoreResult<Vec<ModelVersionRecord>> {
        let select = format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE model_name IN ({{in}}) ORDER BY model_name, version"
        );
        self.fetch_in(&select, names)
            .await
            .map_err(|e| self.note(e))?
            .iter()
            .map(decode_version)
            .collect()
    }

    /// Versions of a model by number, in one round trip, in version order (numbers that do not exist
    /// are left out).
    pub async fn model_versions_numbered(
        &self,
        model: &str,
        versions: &[i64],
    ) -> StoreResult<Vec<ModelVersionRecord>> {
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        self.tick()?;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE model_name = $1 AND version IN ({}) ORDER BY version",
            super::placeholders(2, versions.len())
        )))
        .bind(model);
        for v in versions {
            query = query.bind(*v);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        rows.iter().map(decode_version).collect()
    }

    /// One version of a model by its number.
    pub async fn model_version(
        &self,
        model: &str,
        version: i64,
    ) -> StoreResult<Option<ModelVersionRecord>> {
        Ok(self.model_versions_numbered(model, &[version]).await?.pop())
    }

    /// A model's newest version.
    pub async fn latest_model_version(
        &self,
        model: &str,
    ) -> StoreResult<Option<ModelVersionRecord>> {
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE model_name = $1 ORDER BY version DESC LIMIT 1"
        )))
        .bind(model)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        row.as_ref().map(decode_version).transpose()
    }
}
