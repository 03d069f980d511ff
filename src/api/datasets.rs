//! Datasets: upload (GraphQL multipart request), look up, list; archive, restore, delete, clean up.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ID, Object, SimpleObject, Upload};

use super::loaders::DatasetLoader;
use super::paging::{Count, Page, PageRequest, page};
use super::{ApiError, ApiResult, service, timestamp};
use crate::domain::{self, DatasetRecord};
use crate::service::UploadRequest;

mirror_enum!(
    /// File format of a dataset.
    DatasetFormat => domain::DatasetFormat { Jsonl, Csv }
);
mirror_enum!(
    /// What a dataset can train: TEXT (a text and a label field) or TABULAR (numeric features and a label).
    DatasetKind => domain::DatasetKind { Text, Tabular }
);
mirror_enum!(
    /// UPLOADED while being checked, then READY or INVALID.
    DatasetStatus => domain::DatasetStatus { Uploaded, Ready, Invalid }
);
mirror_enum!(
    /// FRESH until a job trains on it, then USED; ARCHIVED while put away (no new job may train on it;
    /// `restoreDataset` brings it back).
    DatasetLifecycle => domain::DatasetLifecycle { Fresh, Used, Archived }
);

#[derive(SimpleObject)]
pub struct LabelCount {
    pub label: String,
    pub count: i64,
}

/// One problem found in a dataset file.
#[derive(SimpleObject)]
pub struct DatasetError {
    /// 1-based line of the file (CSV: the header is line 1); null for problems of the whole file.
    pub line: Option<i64>,
    pub message: String,
}

pub struct Dataset(pub DatasetRecord);

impl Dataset {
    /// A dataset by id through the request's DataLoader (one round trip for every dataset a response
    /// holds).
    pub async fn load(ctx: &Context<'_>, id: &str) -> ApiResult<Option<Self>> {
        let loader = ctx.data_unchecked::<DataLoader<DatasetLoader>>();
        Ok(loader.load_one(id.to_string()).await?.map(Self))
    }
}

#[Object]
impl Dataset {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn format(&self) -> DatasetFormat {
        self.0.format.into()
    }
    /// Known once the file has been read.
    async fn kind(&self) -> Option<DatasetKind> {
        self.0.summary.kind.map(Into::into)
    }
    async fn status(&self) -> DatasetStatus {
        self.0.status.into()
    }
    /// Valid rows (rows with errors are not counted).
    async fn row_count(&self) -> i64 {
        self.0.summary.row_count as i64
    }
    async fn size_bytes(&self) -> i64 {
        self.0.size_bytes
    }
    /// SHA-256 of the uploaded bytes, hex.
    async fn sha256(&self) -> &str {
        &self.0.sha256
    }
    async fn text_field(&self) -> &str {
        &self.0.text_field
    }
    async fn label_field(&self) -> &str {
        &self.0.label_field
    }
    /// Feature columns of a tabular dataset.
    async fn features(&self) -> &[String] {
        &self.0.summary.features
    }
    /// Rows per label, sorted by label.
    async fn labels(&self) -> Vec<LabelCount> {
        self.0
            .summary
            .labels
            .iter()
            .map(|(label, count)| LabelCount {
                label: label.clone(),
                count: *count as i64,
            })
            .collect()
    }
    /// The first 100 problems found; `errorCount` counts all of them.
    async fn errors(&self) -> Vec<DatasetError> {
        self.0
            .summary
            .errors
            .iter()
            .map(|e| DatasetError {
                line: e.line.map(|l| l as i64),
                message: e.message.clone(),
            })
            .collect()
    }
    async fn error_count(&self) -> i64 {
        self.0.summary.error_count as i64
    }
    async fn created_at(&self) -> String {
        timestamp(self.0.created_at)
    }
    async fn lifecycle(&self) -> DatasetLifecycle {
        self.0.lifecycle().into()
    }
    /// When a job first trained on it.
    async fn used_at(&self) -> Option<String> {
        self.0.used_at.map(timestamp)
    }
    async fn archived_at(&self) -> Option<String> {
        self.0.archived_at.map(timestamp)
    }
    /// The jobs that train or trained on it, newest first. `first`: 1–100 (default 20).
    #[graphql(complexity = "super::paging::complexity(first, child_complexity)")]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Page<(i64, String), super::jobs::Job>> {
        let filter = domain::JobFilter {
            dataset_id: Some(self.0.id.clone()),
            ..Default::default()
        };
        super::jobs::job_page(ctx, filter, first, after).await
    }
    /// `GET` it with the API token: the file as uploaded.
    async fn download_url(&self) -> String {
        format!("/datasets/{}/download", self.0.id)
    }
}

/// A dataset `cleanupDatasets` kept, and why.
#[derive(SimpleObject)]
pub struct KeptDataset {
    pub dataset: Dataset,
    /// What still refers to it.
    pub reason: String,
}

/// What `cleanupDatasets` removed, or on a dry run would remove.
#[derive(SimpleObject)]
pub struct DatasetCleanup {
    pub dry_run: bool,
    pub removed: Vec<Dataset>,
    pub kept: Vec<KeptDataset>,
}

#[derive(Default)]
pub struct DatasetsQuery;

#[Object]
impl DatasetsQuery {
    async fn dataset(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Dataset>> {
        Ok(service(ctx).dataset(&id).await?.map(Dataset))
    }

    /// Newest first. `first`: 1–100 (default 20).
    #[graphql(complexity = "super::paging::complexity(first, child_complexity)")]
    async fn datasets(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Page<(i64, String), Dataset>> {
        let request = PageRequest::parse(first, after)?;
        let rows = service(ctx)
            .datasets(request.fetch(), request.after.clone())
            .await?;
        Ok(page(
            &request,
            rows,
            Count::Datasets,
            |d| (d.created_at, d.id.clone()),
            Dataset,
        ))
    }
}

#[derive(Default)]
pub struct DatasetsMutation;

#[Object]
impl DatasetsMutation {
    /// Uploads a JSONL or CSV file (GraphQL multipart request) and validates it. The answer's `status` is
    /// READY, or INVALID with `errors` naming each bad line. `format` defaults to the file's extension;
    /// `textField` to "text", `labelField` to "label". The upload limit is the server's
    /// `KILN_MAX_UPLOAD_BYTES` (1 GiB by default).
    async fn upload_dataset(
        &self,
        ctx: &Context<'_>,
        file: Upload,
        name: String,
        format: Option<DatasetFormat>,
        text_field: Option<String>,
        label_field: Option<String>,
    ) -> ApiResult<Dataset> {
        let upload = file
            .value(ctx)
            .map_err(|e| ApiError::bad("file", format!("cannot be read: {e}")))?;
        let request = UploadRequest {
            name,
            file_name: upload.filename,
            format: format.map(Into::into),
            text_field,
            label_field,
            content: upload.content,
        };
        Ok(Dataset(service(ctx).upload_dataset(request).await?))
    }

    /// Puts a dataset away: it keeps its jobs and lineage, but `submitJob` refuses it until
    /// `restoreDataset`.
    async fn archive_dataset(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Dataset> {
        Ok(Dataset(service(ctx).archive_dataset(&id).await?))
    }

    async fn restore_dataset(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Dataset> {
        Ok(Dataset(service(ctx).restore_dataset(&id).await?))
    }

    /// Deletes a dataset and its file; answers its id. `CONFLICT` while a model version's lineage
    /// names it (delete those versions first) or a job uses it (cancel and delete the jobs first),
    /// naming them.
    async fn delete_dataset(&self, ctx: &Context<'_>, id: ID) -> ApiResult<ID> {
        Ok(ID(service(ctx).delete_dataset(&id).await?.id))
    }

    /// Admins only: deletes the datasets created more than `olderThanDays` ago (in `lifecycle`, when
    /// given) that nothing refers to, oldest first, at most 500 a call. With `dryRun` (true unless
    /// false is given) nothing is deleted: the answer lists what would be, and what would be kept and
    /// why.
    async fn cleanup_datasets(
        &self,
        ctx: &Context<'_>,
        older_than_days: i32,
        lifecycle: Option<DatasetLifecycle>,
        dry_run: Option<bool>,
    ) -> ApiResult<DatasetCleanup> {
        let dry_run = dry_run.unwrap_or(true);
        let cleanup = service(ctx)
            .cleanup_datasets(
                super::caller(ctx)?,
                older_than_days.into(),
                lifecycle.map(Into::into),
                dry_run,
            )
            .await?;
        Ok(DatasetCleanup {
            dry_run: cleanup.dry_run,
            removed: cleanup.removed.into_iter().map(Dataset).collect(),
            kept: cleanup
                .kept
                .into_iter()
                .map(|(dataset, reason)| KeptDataset {
                    dataset: Dataset(dataset),
                    reason,
                })
                .collect(),
        })
    }
}
