//! What a job's training left: its epochs (with per-label metrics and the confusion matrix) and its
//! step metrics, read for the API (written by `queue.rs`'s `record_training`).

use sqlx::Row;

use super::jobs::{EpochDetails, json};
use super::{Store, StoreResult, placeholders};
use crate::domain::{EpochMetrics, MetricPoint};

impl Store {
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
