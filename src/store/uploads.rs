//! Resumable upload rows. Bytes are appended by one request at a time: [`Store::lock_upload`] takes the
//! row at the offset the client named, and [`Store::commit_upload`] moves the offset (and releases the
//! lock) only if the row is still where that request found it.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreResult, corrupt};
use crate::domain::{DatasetFormat, FieldNames, UploadRecord, UploadStatus};

const COLUMNS: &str = "id, name, file_name, format, text_field, label_field, length, upload_offset, status, \
                       multipart_id, parts, dataset_id, error, created_at, expires_at, updated_at, feature_fields";

fn decode(row: &AnyRow) -> StoreResult<UploadRecord> {
    let parts: String = row.try_get("parts")?;
    Ok(UploadRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        file_name: row.try_get("file_name")?,
        format: DatasetFormat::parse(&row.try_get::<String, _>("format")?)
            .map_err(|e| corrupt("upload", e))?,
        fields: FieldNames {
            text: row.try_get("text_field")?,
            label: row.try_get("label_field")?,
            features: row
                .try_get::<Option<String>, _>("feature_fields")?
                .map(|f| serde_json::from_str(&f))
                .transpose()
                .map_err(|e| corrupt("upload feature fields", e))?,
        },
        length: row.try_get("length")?,
        offset: row.try_get("upload_offset")?,
        status: UploadStatus::parse(&row.try_get::<String, _>("status")?)
            .map_err(|e| corrupt("upload", e))?,
        multipart_id: row.try_get("multipart_id")?,
        parts: serde_json::from_str(&parts).map_err(|e| corrupt("upload parts", e))?,
        dataset_id: row.try_get("dataset_id")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Why a request could not take an upload to append to it.
#[derive(Debug, PartialEq, Eq)]
pub enum LockRefused {
    /// No such upload.
    Missing,
    /// The upload's offset is not the one the request named (it holds this many bytes).
    Offset(i64),
    /// Another request is appending to it.
    Busy,
    /// The upload is past receiving (or expired).
    Closed(UploadStatus),
}

impl Store {
    pub async fn insert_upload(&self, upload: &UploadRecord) -> StoreResult<()> {
        self.tick()?;
        sqlx::query(
            "INSERT INTO uploads (id, name, file_name, format, text_field, label_field, length, upload_offset, \
             status, multipart_id, parts, dataset_id, error, locked_until, created_at, expires_at, updated_at, \
             feature_fields) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, 0, $12, $13, $14, $15)",
        )
        .bind(&upload.id)
        .bind(&upload.name)
        .bind(&upload.file_name)
        .bind(upload.format.as_str())
        .bind(&upload.fields.text)
        .bind(&upload.fields.label)
        .bind(upload.length)
        .bind(upload.offset)
        .bind(upload.status.as_str())
        .bind(&upload.multipart_id)
        .bind(serde_json::to_string(&upload.parts).map_err(anyhow::Error::from)?)
        .bind(upload.created_at)
        .bind(upload.expires_at)
        .bind(upload.updated_at)
        .bind(
            upload
                .fields
                .features
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(anyhow::Error::from)?,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        Ok(())
    }

    pub async fn get_upload(&self, id: &str) -> StoreResult<Option<UploadRecord>> {
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM uploads WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        row.as_ref().map(decode).transpose()
    }

    /// Takes a receiving upload whose offset is `offset` for one request, until `until` (epoch ms; the
    /// request renews it while bytes keep coming).
    pub async fn lock_upload(
        &self,
        id: &str,
        offset: i64,
        now: i64,
        until: i64,
    ) -> StoreResult<Result<UploadRecord, LockRefused>> {
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE uploads SET locked_until = $1 WHERE id = $2 AND upload_offset = $3 AND status = 'RECEIVING' \
             AND locked_until < $4 AND expires_at > $4 RETURNING {COLUMNS}"
        )))
        .bind(until)
        .bind(id)
        .bind(offset)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        if let Some(row) = row {
            return Ok(Ok(decode(&row)?));
        }
        let Some(upload) = self.get_upload(id).await? else {
            return Ok(Err(LockRefused::Missing));
        };
        Ok(Err(if upload.status != UploadStatus::Receiving {
            LockRefused::Closed(upload.status)
        } else if upload.expires_at <= now {
            LockRefused::Closed(UploadStatus::Expired)
        } else if upload.offset != offset {
            LockRefused::Offset(upload.offset)
        } else {
            LockRefused::Busy
        }))
    }

    /// Keeps the lock a request holds (at `offset`) until `until`; false when it is no longer its own.
    pub async fn renew_upload_lock(&self, id: &str, offset: i64, until: i64) -> StoreResult<bool> {
        self.tick()?;
        let done = sqlx::query(
            "UPDATE uploads SET locked_until = $1 WHERE id = $2 AND upload_offset = $3 AND status = 'RECEIVING'",
        )
        .bind(until)
        .bind(id)
        .bind(offset)
        .execute(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a locked upload from offset `from` to `to` with the parts stored so far, releases the
    /// lock, and moves the expiry to `expires_at`; `VALIDATING` once every byte is there. `None` when
    /// the row is not at `from` any more.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_upload(
        &self,
        id: &str,
        from: i64,
        to: i64,
        parts: &[String],
        status: UploadStatus,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<Option<UploadRecord>> {
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE uploads SET upload_offset = $1, parts = $2, status = $3, locked_until = 0, updated_at = $4, \
             expires_at = $5 WHERE id = $6 AND upload_offset = $7 AND status = 'RECEIVING' RETURNING {COLUMNS}"
        )))
        .bind(to)
        .bind(serde_json::to_string(parts).map_err(anyhow::Error::from)?)
        .bind(status.as_str())
        .bind(now)
        .bind(expires_at)
        .bind(id)
        .bind(from)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        row.as_ref().map(decode).transpose()
    }

    /// Releases a request's lock without moving the upload (its bytes were refused).
    pub async fn unlock_upload(&self, id: &str, offset: i64) -> StoreResult<()> {
        self.tick()?;
        sqlx::query(
            "UPDATE uploads SET locked_until = 0 WHERE id = $1 AND upload_offset = $2 AND status = 'RECEIVING'",
        )
        .bind(id)
        .bind(offset)
        .execute(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        Ok(())
    }

    /// Takes a `VALIDATING` upload untouched since `stale_before` (a process that was making its dataset
    /// died) for this process; false when another took it first.
    pub async fn claim_validation(
        &self,
        id: &str,
        stale_before: i64,
        now: i64,
    ) -> StoreResult<bool> {
        self.tick()?;
        let done = sqlx::query(
            "UPDATE uploads SET updated_at = $1 WHERE id = $2 AND status = 'VALIDATING' AND updated_at < $3",
        )
        .bind(now)
        .bind(id)
        .bind(stale_before)
        .execute(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends an upload: `DONE` with its dataset, `FAILED` with the error, or `EXPIRED`.
    pub async fn end_upload(
        &self,
        id: &str,
        status: UploadStatus,
        dataset_id: Option<&str>,
        error: Option<&str>,
        now: i64,
    ) -> StoreResult<Option<UploadRecord>> {
        self.tick()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE uploads SET status = $1, dataset_id = $2, error = $3, locked_until = 0, updated_at = $4 \
             WHERE id = $5 RETURNING {COLUMNS}"
        )))
        .bind(status.as_str())
        .bind(dataset_id)
        .bind(error)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        row.as_ref().map(decode).transpose()
    }

    pub async fn delete_upload(&self, id: &str) -> StoreResult<bool> {
        self.tick()?;
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Uploads still receiving whose expiry has passed, and those left validating since `stale_before`.
    pub async fn uploads_to_sweep(
        &self,
        now: i64,
        stale_before: i64,
    ) -> StoreResult<Vec<UploadRecord>> {
        self.tick()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM uploads WHERE (status = 'RECEIVING' AND expires_at <= $1 AND locked_until < $1) \
             OR (status = 'VALIDATING' AND updated_at < $2) ORDER BY created_at LIMIT 1000"
        )))
        .bind(now)
        .bind(stale_before)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter().map(decode).collect()
    }
}
