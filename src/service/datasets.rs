//! Datasets: upload and validate (the same bytes with the same field names make one dataset), look
//! up, list.

use super::{Service, ServiceError, ServiceResult};
use crate::data::{FieldNames, ReadOptions, RowSource, scan};
use crate::domain::{
    DatasetFormat, DatasetRecord, DatasetStatus, DisplayName, FieldError, MappingInput, RulesInput,
    ValidationRules, abbreviate, is_plausible_id, now_ms,
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
    /// The fields to read: text `text`, label `label` unless given.
    pub mapping: MappingInput,
    /// Rules the rows must meet.
    pub rules: Option<RulesInput>,
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
            &upload.mapping,
        )?
        .with_rules(upload.rules.as_ref())?;
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
                    fields: declared.names.clone(),
                    rules: declared.rules.clone(),
                    derivation: None,
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
                &declared.names,
                &declared.rules,
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
        local: std::fs::File,
    ) -> ServiceResult<DatasetRecord> {
        let scanned = self
            .scan_file(local, declared.format, &declared.names, &declared.rules)
            .await?;
        self.keep_scan(id, &declared.names, &declared.rules, scanned)
            .await
    }

    /// Stores what a validation pass found: the keys of its rows beside the file, then the summary
    /// with the mapping and rules it read by.
    async fn keep_scan(
        &self,
        id: &str,
        names: &FieldNames,
        rules: &ValidationRules,
        (summary, row_keys): Scanned,
    ) -> ServiceResult<DatasetRecord> {
        if let Some(row_keys) = row_keys {
            self.objects
                .put_bytes(&keys::dataset_row_keys(id)?, row_keys.into())
                .await?;
        }
        Ok(self
            .store
            .finish_dataset_validation(id, names, rules, &summary)
            .await?)
    }

    /// Rows of dataset `id` whose text (or feature values, for a table) also occurs in dataset
    /// `other`: a test set's leakage from a training set. Both must have been read since kiln keeps row
    /// keys (`CONFLICT` naming `validateDataset` otherwise).
    #[tracing::instrument(skip_all, fields(dataset_id = %id))]
    pub async fn dataset_overlap(
        &self,
        id: &str,
        other: &str,
    ) -> ServiceResult<(DatasetRecord, crate::data::Overlap)> {
        let other = self.dataset(other).await?.ok_or_else(|| {
            FieldError::new(
                "datasetId",
                format!("no dataset with id {}", abbreviate(other, 100)),
            )
        })?;
        let this = self.dataset(id).await?.ok_or_else(|| {
            ServiceError::NotFound(format!("no dataset with id {}", abbreviate(id, 100)))
        })?;
        let mut lists = Vec::with_capacity(2);
        for dataset in [&this, &other] {
            if dataset.summary.stats.is_none() {
                return Err(ServiceError::Conflict(format!(
                    "dataset {} was read before kiln kept the keys of its rows; validateDataset(id: \
                     \"{}\") reads it again",
                    dataset.id, dataset.id
                )));
            }
            lists.push(
                self.objects
                    .get_bytes(&keys::dataset_row_keys(&dataset.id)?)
                    .await?,
            );
        }
        let found = crate::data::overlap(&lists[0], &lists[1], MAX_OVERLAP_LINES)
            .ok_or_else(|| anyhow::anyhow!("the row keys of dataset {} are damaged", this.id))?;
        Ok((other, found))
    }

    /// One pass over a local file with this mapping and these rules, off the async threads: what it
    /// found, and the keys of its rows.
    pub(super) async fn scan_file(
        &self,
        local: std::fs::File,
        format: DatasetFormat,
        names: &FieldNames,
        rules: &ValidationRules,
    ) -> ServiceResult<Scanned> {
        let options = ReadOptions {
            max_line_bytes: self.settings.max_line_bytes,
            rules: rules.clone(),
            ..ReadOptions::new(format, names.clone())
        };
        let scanned = tokio::task::spawn_blocking(move || {
            let scan = scan(&RowSource::File(local), &options);
            let keys = scan.row_keys();
            (scan.summary, keys)
        })
        .await
        .map_err(anyhow::Error::from)?;
        Ok(scanned)
    }

    /// A stored dataset's file in a local temporary file, to read it again.
    pub(super) async fn local_copy(
        &self,
        dataset: &DatasetRecord,
    ) -> ServiceResult<tempfile::NamedTempFile> {
        let local = self.spool_file().await?;
        self.objects
            .get_to_file(&dataset.object_key, local.path())
            .await?;
        Ok(local)
    }

    /// A new empty file in the work folder's spool (`uploads/`), removed when dropped: a dataset's
    /// bytes on their way in or out.
    pub(super) async fn spool_file(&self) -> ServiceResult<tempfile::NamedTempFile> {
        let spool = self.settings.work_dir.join("uploads");
        tokio::fs::create_dir_all(&spool)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(tempfile::NamedTempFile::new_in(&spool).map_err(anyhow::Error::from)?)
    }

    /// A dataset whose upload has been checked (`READY` or `INVALID`): what it can be read again for,
    /// or made into another. `NotFound`, or `Conflict` while it is still `UPLOADED`.
    pub(super) async fn checked_dataset(&self, id: &str) -> ServiceResult<DatasetRecord> {
        let dataset = self.dataset(id).await?.ok_or_else(|| {
            ServiceError::NotFound(format!("no dataset with id {}", abbreviate(id, 100)))
        })?;
        if dataset.status == DatasetStatus::Uploaded {
            return Err(ServiceError::Conflict(format!(
                "dataset {} is still being uploaded and checked",
                dataset.id
            )));
        }
        Ok(dataset)
    }

    /// Reads a dataset's stored file again with another mapping or other rules (each left out stays
    /// as it is; `rules` replaces the rules whole) and stores what was found: the dataset becomes
    /// `READY` or `INVALID` under them. Jobs already submitted keep the mapping they were given.
    #[tracing::instrument(skip_all, fields(dataset_id = %id))]
    pub async fn validate_dataset(
        &self,
        id: &str,
        mapping: &MappingInput,
        rules: Option<&RulesInput>,
    ) -> ServiceResult<DatasetRecord> {
        let dataset = self.checked_dataset(id).await?;
        let names = mapping.apply("mapping.", &dataset.fields)?;
        let rules = match rules {
            Some(input) => ValidationRules::parse("rules.", input)?,
            None => dataset.rules.clone(),
        };
        let local = self.local_copy(&dataset).await?;
        let file = local.reopen().map_err(anyhow::Error::from)?;
        let scanned = self.scan_file(file, dataset.format, &names, &rules).await?;
        self.keep_scan(&dataset.id, &names, &rules, scanned).await
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

/// What a validation pass found, and the keys of the rows it read.
pub(super) type Scanned = (crate::domain::DatasetSummary, Option<Vec<u8>>);

/// The most lines `overlapWith` lists.
pub const MAX_OVERLAP_LINES: usize = 20;

/// What an upload declares about its file, checked: the dataset's name, its format (from the file
/// name when not given), its field names and the rules its rows must meet.
#[derive(Debug, Clone)]
pub struct Declared {
    pub name: String,
    pub format: DatasetFormat,
    pub names: FieldNames,
    pub rules: ValidationRules,
}

impl Declared {
    /// `prefix` goes before the field names in errors (`Upload-Metadata.` for a resumable upload).
    pub fn parse(
        prefix: &str,
        name: &str,
        file_name: &str,
        format: Option<DatasetFormat>,
        mapping: &MappingInput,
    ) -> Result<Self, FieldError> {
        let field = |f: &str| format!("{prefix}{f}");
        let name = DisplayName::parse(&field("name"), name)?.into_string();
        let names = mapping.apply(prefix, &FieldNames::default())?;
        let format = match format {
            Some(f) => f,
            None => DatasetFormat::from_file_name(file_name).ok_or_else(|| {
                FieldError::new(
                    field("format"),
                    format!(
                        "cannot be told from the file name {:?}; pass JSONL, CSV or PARQUET",
                        abbreviate(file_name, 100)
                    ),
                )
            })?,
        };
        Ok(Self {
            name,
            format,
            names,
            rules: ValidationRules::default(),
        })
    }

    /// With the rules given at upload, checked (`rules.` in errors).
    pub fn with_rules(mut self, rules: Option<&RulesInput>) -> Result<Self, FieldError> {
        if let Some(rules) = rules {
            self.rules = ValidationRules::parse("rules.", rules)?;
        }
        Ok(self)
    }
}
