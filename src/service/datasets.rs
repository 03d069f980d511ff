//! Datasets: upload and validate (the same bytes with the same field names make one dataset), look
//! up, list.

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
        let declared = Declared::parse(
            "",
            &upload.name,
            &upload.file_name,
            upload.format,
            upload.text_field,
            upload.label_field,
        )?;
        let id = uuid::Uuid::new_v4().to_string();
        let key = keys::dataset(&id, declared.format)?;
        // The row comes first, so that bytes are never stored without one; an upload that fails on the
        // way takes its row and whatever was stored with it.
        self.store
            .insert_dataset(
                &NewDataset {
                    id: id.clone(),
                    name: declared.name.clone(),
                    format: declared.format,
                    object_key: key.clone(),
                    size_bytes: 0,
                    sha256: String::new(),
                    text_field: declared.names.text.clone(),
                    label_field: declared.names.label.clone(),
                },
                now_ms(),
            )
            .await?;
        let local = upload.content;
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
                    too_large @ ObjectError::TooLarge { .. } => super::ServiceError::TooLarge(
                        FieldError::new("file", format!("{too_large} (KILN_MAX_UPLOAD_BYTES)")),
                    ),
                    ObjectError::Other(e) => super::ServiceError::Internal(e),
                });
            }
        };
        if let Some(existing) = self
            .store
            .dataset_with_content(
                &stored.sha256,
                declared.format,
                &declared.names.text,
                &declared.names.label,
            )
            .await?
        {
            tracing::info!(dataset = %existing.id, "the same bytes were uploaded before");
            self.discard_dataset(&id, &key).await;
            return Ok(existing);
        }
        self.store
            .record_dataset_bytes(&id, stored.size_bytes as i64, &stored.sha256)
            .await?;
        self.check_dataset(&id, &declared, local).await
    }

    /// One streaming pass over a local copy of a dataset's file (from its start): the dataset becomes
    /// `READY` or `INVALID` with what was found.
    pub(super) async fn check_dataset(
        &self,
        id: &str,
        declared: &Declared,
        mut local: std::fs::File,
    ) -> ServiceResult<DatasetRecord> {
        let options = ReadOptions {
            max_line_bytes: self.settings.max_line_bytes,
            ..ReadOptions::new(declared.format, declared.names.clone())
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
            .finish_dataset_validation(id, &scanned.summary)
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

/// What an upload declares about its file, checked: the dataset's name, its format (from the file
/// name when not given) and its field names.
#[derive(Debug, Clone)]
pub struct Declared {
    pub name: String,
    pub format: DatasetFormat,
    pub names: FieldNames,
}

impl Declared {
    /// `prefix` goes before the field names in errors (`Upload-Metadata.` for a resumable upload).
    pub fn parse(
        prefix: &str,
        name: &str,
        file_name: &str,
        format: Option<DatasetFormat>,
        text_field: Option<String>,
        label_field: Option<String>,
    ) -> Result<Self, FieldError> {
        let field = |f: &str| format!("{prefix}{f}");
        let name = DisplayName::parse(&field("name"), name)?.into_string();
        let names = FieldNames {
            text: field_name(&field("textField"), text_field, "text")?,
            label: field_name(&field("labelField"), label_field, "label")?,
        };
        if names.text == names.label {
            return Err(FieldError::new(
                field("labelField"),
                "must differ from textField",
            ));
        }
        let format = match format {
            Some(f) => f,
            None => DatasetFormat::from_file_name(file_name).ok_or_else(|| {
                FieldError::new(
                    field("format"),
                    format!(
                        "cannot be told from the file name {:?}; pass JSONL or CSV",
                        abbreviate(file_name, 100)
                    ),
                )
            })?,
        };
        Ok(Self {
            name,
            format,
            names,
        })
    }
}

/// A field name (`textField`, `labelField`): a display name, `default` when absent.
fn field_name(field: &str, value: Option<String>, default: &str) -> Result<String, FieldError> {
    Ok(DisplayName::parse(field, value.as_deref().unwrap_or(default))?.into_string())
}
