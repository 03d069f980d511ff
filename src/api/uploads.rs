//! Resumable uploads as the API shows them: `upload(id)` (the id is the last segment of the upload's
//! URL, `/uploads/<id>`) and the `uploadEvents(id)` subscription. The bytes themselves travel over the
//! tus protocol (`http/tus.rs`).

use async_graphql::{Context, ID, Object, Subscription};
use futures::{Stream, StreamExt};

use super::datasets::Dataset;
use super::{ApiResult, service, timestamp};
use crate::domain::{self, UploadRecord};

mirror_enum!(
    /// RECEIVING while bytes come (or will, when the client resumes), VALIDATING once every byte is
    /// stored and the file is being checked, DONE with its dataset (READY or INVALID: see the
    /// dataset), FAILED (see `error`), EXPIRED when it was not finished in time (its bytes are gone).
    UploadStatus => domain::UploadStatus { Receiving, Validating, Done, Failed, Expired }
);

/// A resumable upload (tus) and the dataset it made.
pub struct ResumableUpload(pub UploadRecord);

#[Object]
impl ResumableUpload {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// Where its bytes go (tus `PATCH`), relative to the server.
    async fn url(&self) -> String {
        format!("/uploads/{}", self.0.id)
    }
    /// The dataset's name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn file_name(&self) -> &str {
        &self.0.file_name
    }
    async fn format(&self) -> super::datasets::DatasetFormat {
        self.0.format.into()
    }
    /// Bytes stored so far.
    async fn offset(&self) -> i64 {
        self.0.offset
    }
    /// Bytes of the whole file.
    async fn length(&self) -> i64 {
        self.0.length
    }
    async fn status(&self) -> UploadStatus {
        self.0.status.into()
    }
    /// Why a FAILED upload made no dataset.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// Once DONE: the dataset it made, READY or INVALID (for bytes uploaded before with the same
    /// format and field names: that dataset).
    async fn dataset(&self, ctx: &Context<'_>) -> ApiResult<Option<Dataset>> {
        match &self.0.dataset_id {
            Some(id) => Ok(service(ctx).dataset(id).await?.map(Dataset)),
            None => Ok(None),
        }
    }
    async fn created_at(&self) -> String {
        timestamp(self.0.created_at)
    }
    /// When an unfinished upload's bytes are removed (moved on by each request that sends bytes).
    async fn expires_at(&self) -> String {
        timestamp(self.0.expires_at)
    }
}

#[derive(Default)]
pub struct UploadsQuery;

#[Object]
impl UploadsQuery {
    /// A resumable upload by id (the last segment of its `/uploads/<id>` URL).
    async fn upload(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<ResumableUpload>> {
        Ok(service(ctx).upload(&id).await?.map(ResumableUpload))
    }
}

#[derive(Default)]
pub struct UploadsSubscription;

#[Subscription]
impl UploadsSubscription {
    /// The upload as it is now, then again at each change (bytes arriving — at most 4 a second —,
    /// its file checked) until it is DONE, FAILED or EXPIRED.
    async fn upload_events(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = ResumableUpload> + use<>> {
        let events = service(ctx)
            .follow_upload(&id)
            .await
            .map_err(super::ApiError::from)?;
        let counted = service(ctx).metrics().subscriber("uploadEvents");
        Ok(events.map(move |upload| {
            let _ = &counted;
            ResumableUpload(upload)
        }))
    }
}
