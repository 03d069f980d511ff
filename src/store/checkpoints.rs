//! A job's stored checkpoints: one row per checkpoint whose files (manifest last) are in the object store.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreResult};
use crate::domain::{CheckpointRecord, now_ms};

fn decode(row: &AnyRow) -> StoreResult<CheckpointRecord> {
    Ok(CheckpointRecord {
        job_id: row.try_get("job_id")?,
        step: row.try_get::<i64, _>("step")? as u64,
        epoch: row.try_get::<i64, _>("epoch")? as u32,
        size_bytes: row.try_get::<i64, _>("size_bytes")? as u64,
        object_prefix: row.try_get("object_prefix")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Records a checkpoint whose files are stored, while `worker` holds the job's lease (the same
    /// statement checks it). Returns `false`, writing nothing, when the lease is gone. A checkpoint of the
    /// same step (written again after a resume) replaces the earlier row.
    pub async fn insert_checkpoint(
        &self,
        worker: &str,
        checkpoint: &CheckpointRecord,
    ) -> StoreResult<bool> {
        self.tick()?;
        let done = sqlx::query(
            "INSERT INTO job_checkpoints (job_id, step, epoch, size_bytes, object_prefix, created_at) \
             SELECT $1, $2, $3, $4, $5, $6 FROM jobs \
             WHERE id = $1 AND lease_owner = $7 AND status = 'RUNNING' \
             ON CONFLICT (job_id, step) DO UPDATE SET epoch = excluded.epoch, \
             size_bytes = excluded.size_bytes, object_prefix = excluded.object_prefix, \
             created_at = excluded.created_at",
        )
        .bind(&checkpoint.job_id)
        .bind(checkpoint.step as i64)
        .bind(checkpoint.epoch as i64)
        .bind(checkpoint.size_bytes as i64)
        .bind(&checkpoint.object_prefix)
        .bind(now_ms())
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// The checkpoints of many jobs in one round trip, by job, oldest first.
    pub async fn checkpoints_of(&self, job_ids: &[String]) -> StoreResult<Vec<CheckpointRecord>> {
        let rows = self
            .fetch_in(
                "SELECT job_id, step, epoch, size_bytes, object_prefix, created_at FROM job_checkpoints \
                 WHERE job_id IN ({in}) ORDER BY job_id, step",
                job_ids,
            )
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Forgets one checkpoint (its files are the caller's to remove, after this).
    pub async fn delete_checkpoint(&self, job_id: &str, step: u64) -> StoreResult<()> {
        self.tick()?;
        sqlx::query("DELETE FROM job_checkpoints WHERE job_id = $1 AND step = $2")
            .bind(job_id)
            .bind(step as i64)
            .execute(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        Ok(())
    }
}
