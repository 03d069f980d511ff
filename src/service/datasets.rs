//! Datasets: upload and validate, look up, list.

use std::io::{BufReader, Seek, SeekFrom};

use super::{Service, ServiceResult};
use crate::data::{FieldNames, ReadOptions, scan};
use crate::domain::{
    DatasetFormat, DatasetRecord, DisplayName, FieldError, abbreviate, is_plausible_id, now_ms,
};
use crate::objects::{ObjectError, keys};
use crate::store::NewDataset;

/// An uploaded file and what the user said about it, before any check.
#[derive(Debug)]
pub struct UploadRequest {
    pub name: String,
    /// The file's name on the user's side, which tells the format when `format` is absent.
    pub file_name: String,
    pub format: Option<DatasetFormat>,
    /// Default `text`.
    pub text_field: Option<String>,
    /// Default `label`.
    pub label_field: Option<String>,
    /// The bytes, in a local file (the multipart parser spools uploads to one).
    pub content: std::fs::File,
}

impl Service {
    /// Stores an upload and validates it: the bytes stream to the object store while their SHA-256 is
    /// computed, the dataset row is written `UPLOADED`, then one streaming pass over the local copy
    /// decides `READY` or `INVALID` (with the problems by line) before this returns.
    #[tracing::instrument(skip_all)]
    pub async fn upload_dataset(&self, upload: UploadRequest) -> ServiceResult<DatasetRecord> {
        let stored = self.store_upload(upload).await;
        self.metrics
            .upload(stored.as_ref().ok().map(|d| d.size_bytes.max(0) as u64));
        stored
    }

    async fn store_upload(&self, upload: UploadRequest) -> ServiceResult<DatasetRecord> {
        let name = DisplayName::parse("name", &upload.name)?;
        let names = FieldNames {
            text: field_name("textField", upload.text_field, "text")?,
            label: field_name("labelField", upload.label_field, "label")?,
        };
        if names.text == names.label {
            return Err(FieldError::new("labelField", "must differ from textField").into());
        }
        let format = match upload.format {
            Some(f) => f,
            None => DatasetFormat::from_file_name(&upload.file_name).ok_or_else(|| {
                FieldError::new(
                    "format",
                    format!(
                        "cannot be told from the file name {:?}; pass JSONL or CSV",
                        abbreviate(&upload.file_name, 100)
                    ),
                )
            })?,
        };

        let id = uuid::Uuid::new_v4().to_string();
        let key = keys::dataset(&id, format)?;
        // The row comes first, so that bytes are never stored without one; an upload that fails on the
        // way takes its row and whatever was stored with it.
        self.store
            .insert_dataset(
                &NewDataset {
                    id: id.clone(),
                    name: name.into_string(),
                    format,
                    object_key: key.clone(),
                    size_bytes: 0,
                    sha256: String::new(),
                    text_field: names.text.clone(),
                    label_field: names.label.clone(),
                },
                now_ms(),
            )
            .await?;
        let mut local = upload.content;
        let for_store = local.try_clone().map_err(anyhow::Error::from)?;
        let stored = self
            .objects
            .put_stream(
                &key,
                tokio::fs::File::from_std(for_store),
                self.settings.max_upload_bytes,
            )
            .await;
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                self.discard_dataset(&id, &key).await;
                return Err(match e {
                    too_large @ ObjectError::TooLarge { .. } => {
                        FieldError::new("file", too_large.to_string()).into()
                    }
                    ObjectError::Other(e) => super::ServiceError::Internal(e),
                });
            }
        };
        self.store
            .record_dataset_bytes(&id, stored.size_bytes as i64, &stored.sha256)
            .await?;

        // One streaming pass over the local copy the upload was spooled to.
        let options = ReadOptions {
            max_line_bytes: self.settings.max_line_bytes,
            ..ReadOptions::new(format, names)
        };
        let scanned = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            local.seek(SeekFrom::Start(0))?;
            Ok(scan(BufReader::new(local), &options))
        })
        .await
        .map_err(anyhow::Error::from)?
        .map_err(anyhow::Error::from)?;
        Ok(self
            .store
            .finish_dataset_validation(&id, &scanned.summary)
            .await?)
    }

    /// Removes a dataset whose upload did not finish: its row and its object (best effort; what is left
    /// is found again at the next start).
    async fn discard_dataset(&self, id: &str, key: &crate::domain::ObjectKey) {
        if let Err(e) = self.objects.delete(key).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "removing an unfinished upload's object"
            );
        }
        if let Err(e) = self.store.delete_dataset(id).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "removing an unfinished upload's row"
            );
        }
    }

    /// A dataset by id; an id that cannot be one names no dataset.
    #[tracing::instrument(skip_all, fields(dataset_id = %id))]
    pub async fn dataset(&self, id: &str) -> ServiceResult<Option<DatasetRecord>> {
        if !is_plausible_id(id) {
            return Ok(None);
        }
        Ok(self.store.get_dataset(id).await?)
    }

    /// Datasets by id, in one round trip.
    #[tracing::instrument(skip_all)]
    pub async fn datasets_by_id(&self, ids: &[String]) -> ServiceResult<Vec<DatasetRecord>> {
        Ok(self.store.get_datasets(ids).await?)
    }

    /// Newest first, after the `(created_at, id)` of the previous page's last row.
    #[tracing::instrument(skip_all)]
    pub async fn datasets(
        &self,
        first: i64,
        after: Option<(i64, String)>,
    ) -> ServiceResult<Vec<DatasetRecord>> {
        super::jobs::check_cursor(after.as_ref())?;
        Ok(self.store.list_datasets(first, after).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn count_datasets(&self) -> ServiceResult<i64> {
        Ok(self.store.count_datasets().await?)
    }
}

/// A field name (`textField`, `labelField`): a display name, `default` when absent.
fn field_name(field: &str, value: Option<String>, default: &str) -> Result<String, FieldError> {
    Ok(DisplayName::parse(field, value.as_deref().unwrap_or(default))?.into_string())
}
