//! Deleting a job, a model version or a model, each in one transaction that first checks nothing still
//! needs it. The object store's files are the caller's to remove once the rows are gone.

use sqlx::Row;

use super::{Store, StoreError, StoreResult};
use crate::domain::{AliasTarget, JobRecord, ModelVersionRecord};

/// A job's rows in the tables that hang off it.
const JOB_TABLES: [&str; 4] = ["job_epochs", "job_metrics", "job_checkpoints", "job_logs"];
/// A model's rows in the tables that hang off it, besides its versions.
const MODEL_TABLES: [&str; 4] = [
    "model_alias_history",
    "promotion_policies",
    "model_alias_requests",
    "model_training_defaults",
];

impl Store {
    /// Deletes an ended job and its epochs, metrics, checkpoints and log. A `Conflict` while it is
    /// queued, running or paused, or while a model version it produced exists.
    pub async fn delete_job(&self, id: &str) -> StoreResult<JobRecord> {
        let mut tx = self.pool.begin().await.map_err(|e| self.note(e))?;
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM jobs WHERE id = $1",
            super::jobs::COLUMNS
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.note(e))?
        .ok_or(StoreError::NotFound("job"))?;
        let job = super::jobs::decode(&row)?;
        if !job.status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "job {id} is {}; cancel it first, then delete it",
                job.status.as_str()
            )));
        }
        self.tick()?;
        let produced =
            sqlx::query("SELECT model_name, version FROM model_versions WHERE job_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.note(e))?;
        if let Some(row) = produced {
            let model: String = row.try_get("model_name")?;
            let version: i64 = row.try_get("version")?;
            return Err(StoreError::Conflict(format!(
                "job {id} produced version {version} of model {model}; delete that version first \
                 (deleteModelVersion), then the job"
            )));
        }
        for table in JOB_TABLES {
            self.tick()?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE job_id = $1"
            )))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.note(e))?;
        }
        self.tick()?;
        sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.note(e))?;
        tx.commit().await.map_err(|e| self.note(e))?;
        Ok(job)
    }

    /// Deletes one version of a model; its job stays, without a version. A `Conflict` while an alias
    /// points to it. Its number is not given again.
    pub async fn delete_model_version(
        &self,
        model: &str,
        version: i64,
    ) -> StoreResult<ModelVersionRecord> {
        let mut tx = self.pool.begin().await.map_err(|e| self.note(e))?;
        // Taking the model's row first orders this against alias moves, which take it too.
        self.lock_model(&mut tx, model).await?;
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM model_versions WHERE model_name = $1 AND version = $2",
            super::models::VERSION_COLUMNS
        )))
        .bind(model)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.note(e))?
        .ok_or(StoreError::NotFound("model version"))?;
        let record = super::models::decode_version(&row)?;
        let pointing: Vec<String> = self
            .aliases_in(&mut tx, model)
            .await?
            .into_iter()
            .filter(|(_, target)| target.versions().contains(&version))
            .map(|(alias, _)| alias)
            .collect();
        if !pointing.is_empty() {
            return Err(StoreError::Conflict(format!(
                "version {version} of model {model} is what alias {} {} to; move or delete {} first",
                pointing.join(", "),
                if pointing.len() == 1 {
                    "points"
                } else {
                    "point"
                },
                if pointing.len() == 1 { "it" } else { "them" },
            )));
        }
        self.tick()?;
        sqlx::query("UPDATE jobs SET model_version_id = NULL WHERE model_version_id = $1")
            .bind(&record.id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.note(e))?;
        self.tick()?;
        sqlx::query("DELETE FROM model_alias_requests WHERE model_name = $1 AND version = $2")
            .bind(model)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.note(e))?;
        self.tick()?;
        sqlx::query("DELETE FROM model_versions WHERE id = $1")
            .bind(&record.id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.note(e))?;
        tx.commit().await.map_err(|e| self.note(e))?;
        Ok(record)
    }

    /// Deletes a model with its versions, alias history, promotion policies and training defaults; its
    /// jobs stay, without versions. A `Conflict` while it has an alias, or a job queued, running or
    /// paused for it. Returns the versions deleted.
    pub async fn delete_model(&self, model: &str) -> StoreResult<Vec<ModelVersionRecord>> {
        let mut tx = self.pool.begin().await.map_err(|e| self.note(e))?;
        self.lock_model(&mut tx, model).await?;
        let aliases: Vec<String> = self
            .aliases_in(&mut tx, model)
            .await?
            .into_iter()
            .map(|(alias, _)| alias)
            .collect();
        if !aliases.is_empty() {
            return Err(StoreError::Conflict(format!(
                "model {model} still has {} {}; delete {} first (deleteModelAlias)",
                if aliases.len() == 1 {
                    "alias"
                } else {
                    "aliases"
                },
                aliases.join(", "),
                if aliases.len() == 1 { "it" } else { "them" },
            )));
        }
        self.tick()?;
        let active: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE model_name = $1 \
             AND status IN ('QUEUED', 'RUNNING', 'PAUSED')",
        )
        .bind(model)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.note(e))?
        .try_get("n")?;
        if active > 0 {
            return Err(StoreError::Conflict(format!(
                "model {model} has {active} job{} queued, running or paused; cancel {} first",
                if active == 1 { "" } else { "s" },
                if active == 1 { "it" } else { "them" },
            )));
        }
        self.tick()?;
        let versions = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM model_versions WHERE model_name = $1 ORDER BY version",
            super::models::VERSION_COLUMNS
        )))
        .bind(model)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.note(e))?
        .iter()
        .map(super::models::decode_version)
        .collect::<StoreResult<Vec<_>>>()?;
        self.tick()?;
        sqlx::query(
            "UPDATE jobs SET model_version_id = NULL WHERE model_version_id IN \
             (SELECT id FROM model_versions WHERE model_name = $1)",
        )
        .bind(model)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.note(e))?;
        for table in MODEL_TABLES.iter().chain(&["model_versions", "models"]) {
            let column = if *table == "models" {
                "name"
            } else {
                "model_name"
            };
            self.tick()?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE {column} = $1"
            )))
            .bind(model)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.note(e))?;
        }
        tx.commit().await.map_err(|e| self.note(e))?;
        Ok(versions)
    }

    /// Takes the model's row for the rest of `tx` (Postgres: a row lock; SQLite: the write lock).
    /// `NotFound` when there is no such model.
    pub(super) async fn lock_model(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        model: &str,
    ) -> StoreResult<()> {
        self.tick()?;
        let locked = sqlx::query("UPDATE models SET last_version = last_version WHERE name = $1")
            .bind(model)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.note(e))?
            .rows_affected();
        if locked == 0 {
            return Err(StoreError::NotFound("model"));
        }
        Ok(())
    }

    /// A model's aliases and their targets, read in `tx`.
    async fn aliases_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        model: &str,
    ) -> StoreResult<Vec<(String, AliasTarget)>> {
        self.tick()?;
        let rows = sqlx::query(
            "SELECT alias, target FROM model_aliases WHERE model_name = $1 ORDER BY alias",
        )
        .bind(model)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter()
            .map(|row| {
                let target: String = row.try_get("target")?;
                let target =
                    serde_json::from_str(&target).map_err(|e| super::corrupt("alias target", e))?;
                Ok((row.try_get("alias")?, target))
            })
            .collect()
    }
}
