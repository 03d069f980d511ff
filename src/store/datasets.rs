//! Dataset rows: what was uploaded, where its bytes are, and what validation found.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, StoreResult, corrupt};
use crate::domain::{
    DatasetFormat, DatasetKind, DatasetRecord, DatasetStatus, DatasetSummary, FieldNames,
    ObjectKey, RowError, ValidationRules,
};

#[derive(Debug, Clone)]
pub struct NewDataset {
    pub id: String,
    pub name: String,
    pub format: DatasetFormat,
    pub object_key: ObjectKey,
    pub size_bytes: i64,
    pub sha256: String,
    pub fields: FieldNames,
    pub rules: ValidationRules,
    /// How it was made from another dataset, when it was.
    pub derivation: Option<crate::domain::Derivation>,
}

/// How a mapping and rules are stored: the feature list as JSON (NULL for none), the rules as JSON.
fn reading_columns(
    fields: &FieldNames,
    rules: &ValidationRules,
) -> StoreResult<(Option<String>, String)> {
    let features = fields
        .features
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(anyhow::Error::from)?;
    let rules = serde_json::to_string(rules).map_err(anyhow::Error::from)?;
    Ok((features, rules))
}

const COLUMNS: &str = "id, name, format, kind, status, object_key, size_bytes, sha256, row_count, text_field, \
                       label_field, features, labels, errors, error_count, created_at, used_at, archived_at, \
                       feature_fields, rules, layout, stats, pii, derivation, token_lengths";

fn decode(row: &AnyRow) -> StoreResult<DatasetRecord> {
    let kind: Option<String> = row.try_get("kind")?;
    let features: String = row.try_get("features")?;
    let labels: String = row.try_get("labels")?;
    let labels: Vec<(String, u64)> =
        serde_json::from_str(&labels).map_err(|e| corrupt("dataset labels", e))?;
    let errors: String = row.try_get("errors")?;
    let errors: Vec<(Option<u64>, String)> =
        serde_json::from_str(&errors).map_err(|e| corrupt("dataset errors", e))?;
    Ok(DatasetRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        format: DatasetFormat::parse(&row.try_get::<String, _>("format")?)
            .map_err(|e| corrupt("dataset", e))?,
        status: DatasetStatus::parse(&row.try_get::<String, _>("status")?)
            .map_err(|e| corrupt("dataset", e))?,
        object_key: ObjectKey::parse(&row.try_get::<String, _>("object_key")?)
            .map_err(|e| corrupt("dataset", e))?,
        size_bytes: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        fields: FieldNames {
            text: row.try_get("text_field")?,
            label: row.try_get("label_field")?,
            features: row
                .try_get::<Option<String>, _>("feature_fields")?
                .map(|f| serde_json::from_str(&f))
                .transpose()
                .map_err(|e| corrupt("dataset feature fields", e))?,
        },
        rules: serde_json::from_str(&row.try_get::<String, _>("rules")?)
            .map_err(|e| corrupt("dataset rules", e))?,
        summary: DatasetSummary {
            kind: kind
                .map(|k| DatasetKind::parse(&k))
                .transpose()
                .map_err(|e| corrupt("dataset", e))?,
            row_count: row.try_get::<i64, _>("row_count")? as u64,
            labels: labels.into_iter().collect(),
            features: serde_json::from_str(&features)
                .map_err(|e| corrupt("dataset features", e))?,
            errors: errors
                .into_iter()
                .map(|(line, message)| RowError { line, message })
                .collect(),
            error_count: row.try_get::<i64, _>("error_count")? as u64,
            layout: serde_json::from_str(&row.try_get::<String, _>("layout")?)
                .map_err(|e| corrupt("dataset layout", e))?,
            stats: row
                .try_get::<Option<String>, _>("stats")?
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|e| corrupt("dataset statistics", e))?,
            pii: row
                .try_get::<Option<String>, _>("pii")?
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|e| corrupt("dataset personal data report", e))?,
        },
        created_at: row.try_get("created_at")?,
        used_at: row.try_get("used_at")?,
        archived_at: row.try_get("archived_at")?,
        derivation: row
            .try_get::<Option<String>, _>("derivation")?
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| corrupt("dataset derivation", e))?,
        token_lengths: serde_json::from_str(&row.try_get::<String, _>("token_lengths")?)
            .map_err(|e| corrupt("dataset token lengths", e))?,
    })
}

impl Store {
    /// Records an upload whose bytes are stored but not yet validated (`UPLOADED`).
    pub async fn insert_dataset(&self, new: &NewDataset, created_at: i64) -> StoreResult<()> {
        let (features, rules) = reading_columns(&new.fields, &new.rules)?;
        self.tick()?;
        sqlx::query(
            "INSERT INTO datasets (id, name, format, kind, status, object_key, size_bytes, sha256, row_count, \
             text_field, label_field, features, labels, errors, error_count, created_at, feature_fields, rules, \
             parent_id, derivation) \
             VALUES ($1, $2, $3, NULL, 'UPLOADED', $4, $5, $6, 0, $7, $8, '[]', '[]', '[]', 0, $9, $10, $11, $12, $13)",
        )
        .bind(&new.id)
        .bind(&new.name)
        .bind(new.format.as_str())
        .bind(new.object_key.as_str())
        .bind(new.size_bytes)
        .bind(&new.sha256)
        .bind(&new.fields.text)
        .bind(&new.fields.label)
        .bind(created_at)
        .bind(features)
        .bind(rules)
        .bind(
            new.derivation
                .as_ref()
                .and_then(|d| d.parent_id.clone()),
        )
        .bind(
            new.derivation
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(anyhow::Error::from)?,
        )
        .execute(&self.pool)
        .await.map_err(|e| self.note(e))?;
        Ok(())
    }

    /// Datasets still `UPLOADED` that were created before `before` (epoch ms): uploads that never
    /// finished.
    pub async fn unfinished_uploads(&self, before: i64) -> StoreResult<Vec<DatasetRecord>> {
        self.tick()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM datasets WHERE status = 'UPLOADED' AND created_at < $1"
        )))
        .bind(before)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter().map(decode).collect()
    }

    /// A checked dataset (`READY` or `INVALID`) with these bytes (their SHA-256) read with this format,
    /// these field names and these rules: the newest, if any.
    pub async fn dataset_with_content(
        &self,
        sha256: &str,
        format: DatasetFormat,
        fields: &FieldNames,
        rules: &ValidationRules,
    ) -> StoreResult<Option<DatasetRecord>> {
        let (features, rules) = reading_columns(fields, rules)?;
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM datasets WHERE sha256 = $1 AND format = $2 AND text_field = $3 \
             AND label_field = $4 AND COALESCE(feature_fields, '') = $5 AND rules = $6 \
             AND status IN ('READY', 'INVALID') ORDER BY created_at DESC LIMIT 1"
        )))
        .bind(sha256)
        .bind(format.as_str())
        .bind(&fields.text)
        .bind(&fields.label)
        .bind(features.unwrap_or_default())
        .bind(rules)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        row.as_ref().map(decode).transpose()
    }

    /// Deletes a dataset's row in one transaction that first checks nothing refers to it (see
    /// [`Store::dataset_references`]: `Conflict` saying what does). Returns the row deleted.
    pub async fn delete_unreferenced_dataset(&self, id: &str) -> StoreResult<DatasetRecord> {
        let mut tx = self.pool.begin().await.map_err(|e| self.note(e))?;
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM datasets WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.note(e))?
        .ok_or(StoreError::NotFound("dataset"))?;
        let dataset = decode(&row)?;
        if let Some(why) = self.references_in(&mut tx, id).await? {
            return Err(StoreError::Conflict(why));
        }
        self.tick()?;
        sqlx::query("DELETE FROM datasets WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.note(e))?;
        tx.commit().await.map_err(|e| self.note(e))?;
        Ok(dataset)
    }

    /// What refers to a dataset, in words, or `None`: model versions whose lineage it is (named), or
    /// jobs that train or trained on it (named; waiting and running ones first).
    pub async fn dataset_references(&self, id: &str) -> StoreResult<Option<String>> {
        let mut tx = self.pool.begin().await.map_err(|e| self.note(e))?;
        let found = self.references_in(&mut tx, id).await;
        tx.rollback().await.map_err(|e| self.note(e))?;
        found
    }

    async fn references_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: &str,
    ) -> StoreResult<Option<String>> {
        let versions = self
            .named_references(
                tx,
                "SELECT model_name || ' v' || CAST(version AS TEXT) AS name FROM model_versions \
                 WHERE dataset_id = $1 ORDER BY model_name, version LIMIT $2",
                id,
            )
            .await?;
        if let Some(versions) = versions {
            return Ok(Some(format!(
                "dataset {id} is in the lineage of model versions {versions}: delete those versions \
                 first (or archive the dataset instead)"
            )));
        }
        let jobs = self
            .named_references(
                tx,
                "SELECT id || ' (' || status || ')' AS name FROM jobs WHERE dataset_id = $1 ORDER BY \
                 CASE WHEN status IN ('QUEUED', 'RUNNING', 'PAUSED') THEN 0 ELSE 1 END, created_at \
                 LIMIT $2",
                id,
            )
            .await?;
        Ok(jobs.map(|jobs| {
            format!(
                "jobs {jobs} train or trained on dataset {id}: cancel and delete them first (or \
                 archive the dataset instead)"
            )
        }))
    }

    /// The `name` column of `sql` (binding the dataset's id and a limit), the first 10 joined with
    /// commas (and "more" when there are more), or `None` when it finds nothing.
    async fn named_references(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        sql: &'static str,
        id: &str,
    ) -> StoreResult<Option<String>> {
        const SHOWN: usize = 10;
        self.tick()?;
        let rows = sqlx::query(sql)
            .bind(id)
            .bind(SHOWN as i64 + 1)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| self.note(e))?;
        let mut names = rows
            .iter()
            .map(|r| Ok(r.try_get::<String, _>("name")?))
            .collect::<StoreResult<Vec<_>>>()?;
        if names.len() > SHOWN {
            names.truncate(SHOWN);
            names.push("more".into());
        }
        Ok((!names.is_empty()).then(|| names.join(", ")))
    }

    /// Marks a dataset used by a job from `at` on (the first time only).
    pub async fn mark_dataset_used(&self, id: &str, at: i64) -> StoreResult<()> {
        self.tick()?;
        sqlx::query("UPDATE datasets SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        Ok(())
    }

    /// Archives a dataset (`Some(at)`) or restores it (`None`).
    pub async fn set_dataset_archived(
        &self,
        id: &str,
        at: Option<i64>,
    ) -> StoreResult<Option<DatasetRecord>> {
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE datasets SET archived_at = $1 WHERE id = $2 RETURNING {COLUMNS}"
        )))
        .bind(at)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        row.as_ref().map(decode).transpose()
    }

    /// Checked datasets created before `before`, oldest first, at most `limit`: those in `lifecycle`
    /// when given.
    pub async fn datasets_created_before(
        &self,
        before: i64,
        lifecycle: Option<crate::domain::DatasetLifecycle>,
        limit: i64,
    ) -> StoreResult<Vec<DatasetRecord>> {
        use crate::domain::DatasetLifecycle;
        self.tick()?;
        let filter = match lifecycle {
            None => "",
            Some(DatasetLifecycle::Fresh) => " AND archived_at IS NULL AND used_at IS NULL",
            Some(DatasetLifecycle::Used) => " AND archived_at IS NULL AND used_at IS NOT NULL",
            Some(DatasetLifecycle::Archived) => " AND archived_at IS NOT NULL",
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM datasets WHERE created_at < $1 AND status <> 'UPLOADED'{filter} \
             ORDER BY created_at, id LIMIT $2"
        )))
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter().map(decode).collect()
    }

    /// Records the size and SHA-256 of an upload's stored bytes.
    pub async fn record_dataset_bytes(&self, id: &str, size: i64, sha256: &str) -> StoreResult<()> {
        self.tick()?;
        sqlx::query("UPDATE datasets SET size_bytes = $1, sha256 = $2 WHERE id = $3")
            .bind(size)
            .bind(sha256)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        Ok(())
    }

    /// Removes a dataset no job refers to (an upload that did not finish).
    pub async fn delete_dataset(&self, id: &str) -> StoreResult<()> {
        self.tick()?;
        sqlx::query(
            "DELETE FROM datasets WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM jobs WHERE dataset_id = $1)",
        )
        .bind(id)
        .execute(&self.pool)
        .await.map_err(|e| self.note(e))?;
        Ok(())
    }

    /// Stores what validation found, with the mapping and rules it read the file by, and moves the
    /// dataset to `READY` or `INVALID`; token lengths measured before are dropped (the text they
    /// counted may be another field now).
    pub async fn finish_dataset_validation(
        &self,
        id: &str,
        fields: &FieldNames,
        rules: &ValidationRules,
        scan: &DatasetSummary,
    ) -> StoreResult<DatasetRecord> {
        let (features, rules) = reading_columns(fields, rules)?;
        self.tick()?;
        let status = scan.status();
        let labels: Vec<(&String, &u64)> = scan.labels.iter().collect();
        let errors: Vec<(Option<u64>, &String)> =
            scan.errors.iter().map(|e| (e.line, &e.message)).collect();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE datasets SET status = $1, kind = $2, row_count = $3, features = $4, labels = $5, errors = $6, \
             error_count = $7, layout = $8, text_field = $9, label_field = $10, feature_fields = $11, rules = $12, \
             stats = $13, pii = $14, token_lengths = '[]' WHERE id = $15 RETURNING {COLUMNS}"
        )))
        .bind(status.as_str())
        .bind(scan.kind.map(|k| k.as_str()))
        .bind(scan.row_count as i64)
        .bind(serde_json::to_string(&scan.features).map_err(anyhow::Error::from)?)
        .bind(serde_json::to_string(&labels).map_err(anyhow::Error::from)?)
        .bind(serde_json::to_string(&errors).map_err(anyhow::Error::from)?)
        .bind(scan.error_count as i64)
        .bind(serde_json::to_string(&scan.layout).map_err(anyhow::Error::from)?)
        .bind(&fields.text)
        .bind(&fields.label)
        .bind(features)
        .bind(rules)
        .bind(
            scan.stats
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(anyhow::Error::from)?,
        )
        .bind(
            scan.pii
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(anyhow::Error::from)?,
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await.map_err(|e| self.note(e))?
        .ok_or(StoreError::NotFound("dataset"))?;
        decode(&row)
    }

    /// Keeps a dataset's token lengths (every tokenizer measured).
    pub async fn record_token_lengths(
        &self,
        id: &str,
        lengths: &[crate::domain::TokenLengths],
    ) -> StoreResult<DatasetRecord> {
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE datasets SET token_lengths = $1 WHERE id = $2 RETURNING {COLUMNS}"
        )))
        .bind(serde_json::to_string(lengths).map_err(anyhow::Error::from)?)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?
        .ok_or(StoreError::NotFound("dataset"))?;
        decode(&row)
    }

    /// The datasets derived from `parent_id`, oldest first (at most `limit`).
    pub async fn dataset_children(
        &self,
        parent_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<DatasetRecord>> {
        self.tick()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM datasets WHERE parent_id = $1 ORDER BY created_at, id LIMIT {limit}"
        )))
        .bind(parent_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter().map(decode).collect()
    }

    pub async fn get_dataset(&self, id: &str) -> StoreResult<Option<DatasetRecord>> {
        Ok(self
            .get_datasets(&[id.to_string()])
            .await
            .map_err(|e| self.note(e))?
            .into_iter()
            .next())
    }

    /// Datasets by id, in one round trip (DataLoader batches).
    pub async fn get_datasets(&self, ids: &[String]) -> StoreResult<Vec<DatasetRecord>> {
        let select = format!("SELECT {COLUMNS} FROM datasets WHERE id IN ({{in}})");
        self.fetch_in(&select, ids)
            .await
            .map_err(|e| self.note(e))?
            .iter()
            .map(decode)
            .collect()
    }

    /// Newest first; `after` is the `(created_at, id)` of the last row of the previous page.
    pub async fn list_datasets(
        &self,
        first: i64,
        after: Option<(i64, String)>,
    ) -> StoreResult<Vec<DatasetRecord>> {
        self.tick()?;
        let rows = match after {
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM datasets ORDER BY created_at DESC, id DESC LIMIT $1"
                )))
                .bind(first)
                .fetch_all(&self.pool)
                .await.map_err(|e| self.note(e))?
            }
            Some((at, id)) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM datasets WHERE created_at < $1 OR (created_at = $1 AND id < $2) \
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                )))
                .bind(at)
                .bind(id)
                .bind(first)
                .fetch_all(&self.pool)
                .await.map_err(|e| self.note(e))?
            }
        };
        rows.iter().map(decode).collect()
    }

    pub async fn count_datasets(&self) -> StoreResult<i64> {
        self.tick()?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM datasets")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        Ok(row.try_get("n")?)
    }
}
