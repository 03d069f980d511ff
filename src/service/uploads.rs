//! Resumable uploads: the use cases behind the tus protocol (the protocol itself is `http/tus.rs`).
//!
//! - [`Service::create_upload`] records what the client declares (length, name, format, field names)
//!   and opens a staging area in the object store;
//! - [`Service::append_upload`] stores the bytes of one request from the offset the client names. Bytes
//!   go to the object store as they arrive, in parts of [`STAGED_PART_SIZE`] (S3 multipart parts); what
//!   is left past the last whole part is kept as a small "tail" object that the next request starts
//!   from. A request holds the upload's row locked while it writes, so only one appends at a time, and
//!   the offset moves only when its bytes are stored. Memory stays at one part per request, whatever
//!   the file's size;
//! - when the last byte is stored, [`Service::finish_upload`] joins the parts, checks the file exactly
//!   as `uploadDataset` does and makes its dataset (or finds the dataset that already has these bytes);
//! - [`Service::terminate_upload`] and the sweep (expiry) remove what an unfinished upload stored.
//!
//! Every change is published as an `UploadChanged` event under the upload's id (`uploadEvents`).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::Digest;

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    DatasetRecord, FieldError, UploadRecord, UploadStatus, abbreviate, is_plausible_id, now_ms,
};
use crate::events::JobEvent;
use crate::objects::{STAGED_PART_SIZE, keys};
use crate::store::LockRefused;

/// How long a request's hold on an upload lasts unless renewed (a process that died holding it
/// lets go after this).
pub const LOCK_MS: i64 = 60_000;
/// How often a request that is still receiving renews its hold.
const RENEW_EVERY: Duration = Duration::from_secs(15);
/// Progress events while bytes arrive: at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// An upload left `VALIDATING` this long was being finished by a process that died: the sweep
/// finishes it.
pub const STALE_VALIDATION: Duration = Duration::from_secs(3600);

/// A checksum algorithm of the tus checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    /// The names `Tus-Checksum-Algorithm` lists.
    pub const NAMES: &'static str = "sha1,sha256";

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }
}

/// The digest a request says its body has.
#[derive(Debug, Clone)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub digest: Vec<u8>,
}

enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Sha1 => Self::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
        }
    }
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
        }
    }
    fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// Why a request's bytes were not taken.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("there is no upload with this id")]
    NotFound,
    #[error(
        "the upload expired before it was finished and its bytes were removed; upload the file again"
    )]
    Expired,
    #[error("the upload holds {0} bytes: send from Upload-Offset {0}")]
    Offset(i64),
    #[error("another request is sending this upload's bytes; try again in a moment")]
    Busy,
    #[error("every byte of this upload has arrived")]
    Complete,
    #[error("the body goes past the upload's Upload-Length of {0} bytes")]
    PastLength(i64),
    #[error("the body does not match its Upload-Checksum; nothing of it was kept")]
    ChecksumMismatch,
    #[error(
        "the body ended early, so its Upload-Checksum could not be checked; nothing of it was kept"
    )]
    Interrupted,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<crate::store::StoreError> for AppendError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Service(e.into())
    }
}

impl From<anyhow::Error> for AppendError {
    fn from(e: anyhow::Error) -> Self {
        Self::Service(ServiceError::Internal(e))
    }
}

impl Service {
    /// Records a new upload of `length` bytes with what `Upload-Metadata` declared (`name`,
    /// `filename`, `format`, `textField`, `labelField`; other keys are ignored) and opens its staging
    /// area.
    #[tracing::instrument(skip_all)]
    pub async fn create_upload(
        &self,
        length: i64,
        metadata: &BTreeMap<String, String>,
    ) -> ServiceResult<UploadRecord> {
        if length <= 0 {
            return Err(FieldError::new("Upload-Length", "the file is empty").into());
        }
        let max = self.settings.max_upload_bytes;
        if length as u64 > max {
            return Err(ServiceError::TooLarge(FieldError::new(
                "Upload-Length",
                format!(
                    "{length} bytes is more than the limit of {max} bytes (KILN_MAX_UPLOAD_BYTES)"
                ),
            )));
        }
        let file_name = metadata
            .get("filename")
            .or_else(|| metadata.get("name"))
            .cloned()
            .unwrap_or_default();
        let name = metadata.get("name").unwrap_or(&file_name);
        if name.is_empty() {
            return Err(FieldError::new(
                "Upload-Metadata.name",
                "is missing: name the dataset (or give its filename)",
            )
            .into());
        }
        let format = match metadata.get("format") {
            Some(raw) => Some(
                crate::domain::DatasetFormat::parse(&raw.to_ascii_uppercase())
                    .map_err(|e| FieldError::new("Upload-Metadata.format", e.message))?,
            ),
            None => None,
        };
        let mapping = crate::domain::MappingInput {
            text_field: metadata.get("textField").cloned(),
            label_field: metadata.get("labelField").cloned(),
            // A list in one metadata value: comma-separated.
            feature_fields: metadata
                .get("featureFields")
                .map(|list| list.split(',').map(|f| f.trim().to_string()).collect()),
        };
        let declared = super::datasets::Declared::parse(
            "Upload-Metadata.",
            name,
            &file_name,
            format,
            &mapping,
        )?;
        let id = uuid::Uuid::new_v4().to_string();
        let key = keys::dataset(&id, declared.format)?;
        let multipart_id = self.objects.begin_staged(&key).await?;
        let now = now_ms();
        let upload = UploadRecord {
            id,
            name: declared.name,
            file_name,
            format: declared.format,
            fields: declared.names,
            length,
            offset: 0,
            status: UploadStatus::Receiving,
            multipart_id,
            parts: Vec::new(),
            dataset_id: None,
            error: None,
            created_at: now,
            expires_at: now + self.settings.upload_expiry.as_millis() as i64,
            updated_at: now,
        };
        self.store.insert_upload(&upload).await?;
        Ok(upload)
    }

    /// An upload by id; an id that cannot be one names no upload.
    #[tracing::instrument(skip_all, fields(upload_id = %id))]
    pub async fn upload(&self, id: &str) -> ServiceResult<Option<UploadRecord>> {
        if !is_plausible_id(id) {
            return Ok(None);
        }
        Ok(self.store.get_upload(id).await?)
    }

    /// Stores the bytes of `body` from `offset` on. Bytes that arrived before the body broke off are
    /// kept (the client resumes after them), unless a `checksum` was given: then the body is kept whole
    /// or not at all. When the last byte is stored, the upload's dataset is made in the background.
    #[tracing::instrument(skip_all, fields(upload_id = %id))]
    pub async fn append_upload(
        &self,
        id: &str,
        offset: i64,
        body: impl Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
        checksum: Option<Checksum>,
    ) -> Result<UploadRecord, AppendError> {
        if !is_plausible_id(id) {
            return Err(AppendError::NotFound);
        }
        let now = now_ms();
        let upload = match self
            .store
            .lock_upload(id, offset, now, now + LOCK_MS)
            .await?
        {
            Ok(upload) => upload,
            Err(LockRefused::Missing) => return Err(AppendError::NotFound),
            Err(LockRefused::Offset(at)) => return Err(AppendError::Offset(at)),
            Err(LockRefused::Busy) => return Err(AppendError::Busy),
            Err(LockRefused::Closed(UploadStatus::Expired)) => return Err(AppendError::Expired),
            Err(LockRefused::Closed(_)) => return Err(AppendError::Complete),
        };
        let received = self.receive(&upload, body, checksum).await;
        let (new_offset, parts) = match received {
            Ok(received) => received,
            Err(e) => {
                if let Err(unlock) = self.store.unlock_upload(id, offset).await {
                    tracing::warn!(error = %unlock, "releasing an upload");
                }
                return Err(e);
            }
        };
        let complete = new_offset == upload.length;
        let status = if complete {
            UploadStatus::Validating
        } else {
            UploadStatus::Receiving
        };
        let now = now_ms();
        let expires_at = now + self.settings.upload_expiry.as_millis() as i64;
        let Some(committed) = self
            .store
            .commit_upload(id, offset, new_offset, &parts, status, now, expires_at)
            .await?
        else {
            return Err(AppendError::Offset(
                self.store
                    .get_upload(id)
                    .await?
                    .map_or(offset, |u| u.offset),
            ));
        };
        if offset % STAGED_PART_SIZE as i64 != 0 && new_offset != offset {
            self.delete_quietly(&keys::upload_tail(id, offset).map_err(ServiceError::from)?)
                .await;
        }
        self.publish_upload(&committed);
        if complete {
            let service = self.clone();
            let upload = committed.clone();
            tokio::spawn(async move { service.finish_upload(upload).await });
        }
        Ok(committed)
    }

    /// Reads `body` into the upload's parts: the new offset and the ids of its whole parts, the last
    /// part included when the body completes the file. What is past the last whole part is stored
    /// as the tail of the new offset.
    async fn receive(
        &self,
        upload: &UploadRecord,
        mut body: impl Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
        checksum: Option<Checksum>,
    ) -> Result<(i64, Vec<String>), AppendError> {
        let part_size = STAGED_PART_SIZE as i64;
        let key = keys::dataset(&upload.id, upload.format).map_err(ServiceError::from)?;
        let start = upload.offset;
        let mut parts = upload.parts.clone();
        parts.truncate((start / part_size) as usize);
        let mut buffer = BytesMut::with_capacity(STAGED_PART_SIZE);
        if start % part_size != 0 {
            let tail = self
                .objects
                .get_bytes(&keys::upload_tail(&upload.id, start).map_err(ServiceError::from)?)
                .await?;
            if tail.len() as i64 != start % part_size {
                return Err(anyhow::anyhow!(
                    "the stored tail of upload {} has {} bytes, expected {}",
                    upload.id,
                    tail.len(),
                    start % part_size
                )
                .into());
            }
            buffer.extend_from_slice(&tail);
        }
        let mut hasher = checksum.as_ref().map(|c| Hasher::new(c.algorithm));
        let mut received = 0i64;
        let mut interrupted = false;
        let mut renewed = tokio::time::Instant::now();
        let mut reported = tokio::time::Instant::now();
        while let Some(chunk) = body.next().await {
            let mut chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::info!(error = %e, bytes = received, "an upload's body broke off");
                    interrupted = true;
                    break;
                }
            };
            if start + received + chunk.len() as i64 > upload.length {
                return Err(AppendError::PastLength(upload.length));
            }
            received += chunk.len() as i64;
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&chunk);
            }
            while !chunk.is_empty() {
                let take = (STAGED_PART_SIZE - buffer.len()).min(chunk.len());
                buffer.extend_from_slice(&chunk.split_to(take));
                if buffer.len() == STAGED_PART_SIZE {
                    let part = buffer.split().freeze();
                    let id = self
                        .objects
                        .put_staged_part(&key, &upload.multipart_id, parts.len(), part)
                        .await?;
                    parts.push(id);
                }
            }
            if renewed.elapsed() >= RENEW_EVERY {
                renewed = tokio::time::Instant::now();
                let until = now_ms() + LOCK_MS;
                if !self
                    .store
                    .renew_upload_lock(&upload.id, start, until)
                    .await?
                {
                    return Err(AppendError::Offset(start));
                }
            }
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = tokio::time::Instant::now();
                let mut progress = upload.clone();
                progress.offset = start + received;
                self.publish_upload(&progress);
            }
        }
        if let (Some(hasher), Some(checksum)) = (hasher, checksum) {
            if interrupted {
                return Err(AppendError::Interrupted);
            }
            if hasher.finish() != checksum.digest {
                return Err(AppendError::ChecksumMismatch);
            }
        }
        let end = start + received;
        if !buffer.is_empty() {
            let rest = buffer.freeze();
            if end == upload.length {
                let id = self
                    .objects
                    .put_staged_part(&key, &upload.multipart_id, parts.len(), rest)
                    .await?;
                parts.push(id);
            } else if received > 0 {
                let tail = keys::upload_tail(&upload.id, end).map_err(ServiceError::from)?;
                self.objects.put_bytes(&tail, rest).await?;
            }
        }
        Ok((end, parts))
    }

    /// Makes the dataset of an upload whose bytes have all arrived: joins its parts into the dataset's
    /// file, checks it as `uploadDataset` does, and ends the upload `DONE` (or `FAILED` saying why).
    /// The same bytes with the same field names already stored make no second dataset: the upload
    /// ends with the existing one and its own bytes are removed.
    #[tracing::instrument(skip_all, fields(upload_id = %upload.id))]
    pub async fn finish_upload(&self, upload: UploadRecord) {
        let made = self.dataset_of_upload(&upload).await;
        let now = now_ms();
        let ended = match &made {
            Ok(dataset) => {
                self.metrics.upload(Some(upload.length as u64));
                self.store
                    .end_upload(&upload.id, UploadStatus::Done, Some(&dataset.id), None, now)
                    .await
            }
            Err(e) => {
                self.metrics.upload(None);
                let message = match e {
                    ServiceError::Internal(e) => {
                        tracing::error!(error = format!("{e:#}"), "making an upload's dataset");
                        "the uploaded file could not be stored as a dataset (see the server log); \
                         upload it again"
                            .to_string()
                    }
                    other => other.to_string(),
                };
                self.store
                    .end_upload(&upload.id, UploadStatus::Failed, None, Some(&message), now)
                    .await
            }
        };
        match ended {
            Ok(Some(ended)) => self.publish_upload(&ended),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "recording how an upload ended"),
        }
    }

    async fn dataset_of_upload(&self, upload: &UploadRecord) -> ServiceResult<DatasetRecord> {
        let key = keys::dataset(&upload.id, upload.format)?;
        // A process that died while finishing may have got this far already.
        if let Some(dataset) = self.store.get_dataset(&upload.id).await?
            && dataset.status != crate::domain::DatasetStatus::Uploaded
        {
            return Ok(dataset);
        }
        let mut joined = None;
        if self.objects.size_of(&key).await? != Some(upload.length as u64) {
            joined = self
                .objects
                .finish_staged(&key, &upload.multipart_id, &upload.parts)
                .await?;
        }
        let folder = keys::dataset_folder(&upload.id)?;
        for (name, _) in self.objects.list(&folder).await? {
            if let Some(offset) = name.strip_prefix("tail-").and_then(|o| o.parse().ok()) {
                self.delete_quietly(&keys::upload_tail(&upload.id, offset)?)
                    .await;
            }
        }
        // On local storage the stored file itself is hashed and checked; on S3 a local copy, removed
        // when this ends.
        let mut _copy = None;
        let (file, stored) = match self.objects.open_local_hashed(&key, joined).await? {
            Some(opened) => opened,
            None => {
                let local = self.spool_file().await?;
                let stored = self.objects.get_to_file_hashed(&key, local.path()).await?;
                let file = local.reopen().map_err(anyhow::Error::from)?;
                _copy = Some(local);
                (file, stored)
            }
        };
        let (size, sha256) = (stored.size_bytes, stored.sha256);
        let declared = super::datasets::Declared {
            name: upload.name.clone(),
            format: upload.format,
            names: upload.fields.clone(),
            rules: crate::domain::ValidationRules::default(),
        };
        if let Some(existing) = self
            .store
            .dataset_with_content(&sha256, declared.format, &declared.names, &declared.rules)
            .await?
        {
            tracing::info!(dataset = %existing.id, "the same bytes were uploaded before");
            if let Err(e) = self.objects.delete_prefix(&folder).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "removing a repeated upload's bytes"
                );
            }
            return Ok(existing);
        }
        if self.store.get_dataset(&upload.id).await?.is_none() {
            self.store
                .insert_dataset(
                    &crate::store::NewDataset {
                        id: upload.id.clone(),
                        name: declared.name.clone(),
                        format: declared.format,
                        object_key: key,
                        size_bytes: size as i64,
                        sha256: sha256.clone(),
                        fields: declared.names.clone(),
                        rules: declared.rules.clone(),
                        derivation: None,
                    },
                    now_ms(),
                )
                .await?;
        }
        self.store
            .record_dataset_bytes(&upload.id, size as i64, &sha256)
            .await?;
        self.check_dataset(&upload.id, &declared, file).await
    }

    /// Removes an upload and what it stored. An upload whose dataset is made loses only its record
    /// (the dataset stays); one being checked cannot be removed until that ends.
    #[tracing::instrument(skip_all, fields(upload_id = %id))]
    pub async fn terminate_upload(&self, id: &str) -> ServiceResult<()> {
        let Some(upload) = self.upload(id).await? else {
            return Err(ServiceError::NotFound(format!(
                "upload {} not found",
                abbreviate(id, 64)
            )));
        };
        match upload.status {
            UploadStatus::Validating => {
                return Err(ServiceError::Conflict(
                    "the upload's file is being checked; delete its dataset once it is made".into(),
                ));
            }
            UploadStatus::Done => {}
            UploadStatus::Receiving | UploadStatus::Failed | UploadStatus::Expired => {
                self.drop_upload_bytes(&upload).await?;
            }
        }
        self.store.delete_upload(id).await?;
        Ok(())
    }

    /// Ends unfinished uploads past their expiry (their bytes removed, `EXPIRED`) and finishes those a
    /// dead process left being checked. Returns how many expired.
    pub(super) async fn sweep_uploads(&self) -> ServiceResult<usize> {
        let now = now_ms();
        let stale_before = now - STALE_VALIDATION.as_millis() as i64;
        let mut expired = 0;
        for upload in self.store.uploads_to_sweep(now, stale_before).await? {
            match upload.status {
                UploadStatus::Receiving => {
                    if let Err(e) = self.drop_upload_bytes(&upload).await {
                        tracing::warn!(error = %e, upload = %upload.id, "removing an expired upload");
                        continue;
                    }
                    if let Some(ended) = self
                        .store
                        .end_upload(&upload.id, UploadStatus::Expired, None, None, now)
                        .await?
                    {
                        self.publish_upload(&ended);
                    }
                    expired += 1;
                }
                UploadStatus::Validating
                    if self
                        .store
                        .claim_validation(&upload.id, stale_before, now)
                        .await? =>
                {
                    self.finish_upload(upload).await;
                }
                _ => {}
            }
        }
        Ok(expired)
    }

    async fn drop_upload_bytes(&self, upload: &UploadRecord) -> ServiceResult<()> {
        let key = keys::dataset(&upload.id, upload.format)?;
        if upload.status == UploadStatus::Receiving {
            self.objects
                .abort_staged(&key, &upload.multipart_id, upload.parts.len())
                .await;
        }
        if self.store.get_dataset(&upload.id).await?.is_none() {
            self.objects
                .delete_prefix(&keys::dataset_folder(&upload.id)?)
                .await?;
        }
        Ok(())
    }

    /// An upload as it is now, then again at each change until it ends (DONE, FAILED or EXPIRED).
    /// Missed events (a subscriber that fell behind, a Redis reconnect) are made up by reading the
    /// store.
    #[tracing::instrument(skip_all, fields(upload_id = %id))]
    pub async fn follow_upload(
        &self,
        id: &str,
    ) -> ServiceResult<impl Stream<Item = UploadRecord> + use<>> {
        // Subscribe before reading the store, so nothing in between is lost.
        let mut rx = self.events.subscribe();
        let upload = self.upload(id).await?.ok_or_else(|| {
            ServiceError::NotFound(format!("no upload with id {}", abbreviate(id, 100)))
        })?;
        let store = self.store.clone();
        Ok(async_stream::stream! {
            let mut last = upload;
            yield last.clone();
            while !last.status.is_final() {
                let next = match rx.recv().await {
                    Ok(envelope) => match &envelope.event {
                        JobEvent::UploadChanged(progress) if envelope.job_id == last.id => {
                            Some(progress.clone())
                        }
                        JobEvent::Resync => None,
                        _ => continue,
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let next = match next {
                    Some(progress) => last.moved_to(progress),
                    None => match store.get_upload(&last.id).await {
                        Ok(Some(upload)) => upload,
                        _ => continue,
                    },
                };
                // Offsets only grow while receiving; an event from before the one last told is old.
                let old = next.status == last.status && next.offset < last.offset;
                if next != last && !old {
                    last = next;
                    yield last.clone();
                }
            }
        })
    }

    fn publish_upload(&self, upload: &UploadRecord) {
        self.events
            .publish(&upload.id, JobEvent::UploadChanged(upload.progress()));
    }

    async fn delete_quietly(&self, key: &crate::domain::ObjectKey) {
        if let Err(e) = self.objects.delete(key).await {
            tracing::warn!(error = format!("{e:#}"), %key, "removing an upload's leftover");
        }
    }
}
