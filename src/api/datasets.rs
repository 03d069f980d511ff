//! Datasets: upload (GraphQL multipart request), look up, list.

use std::io::{BufReader, Seek, SeekFrom};

use async_graphql::{Context, ID, Object, Upload};

use super::error::{ApiError, ApiResult};
use super::types::{
    Dataset, DatasetFormat, PageInfo, decode_cursor, encode_cursor, page_size, state,
};
use crate::data::{FieldNames, scan};
use crate::domain::{self, ObjectKey, now_ms};
use crate::store::NewDataset;

/// Longest dataset name and field name.
pub const MAX_NAME: usize = 200;

#[derive(Default)]
pub struct DatasetsQuery;

#[Object]
impl DatasetsQuery {
    async fn dataset(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Dataset>> {
        Ok(state(ctx).store.get_dataset(&id).await?.map(Dataset))
    }

    /// Newest first. `first`: 1–100 (default 20).
    async fn datasets(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<DatasetConnection> {
        let first = page_size(first)?;
        let mut datasets = state(ctx)
            .store
            .list_datasets(first + 1, decode_cursor(after)?)
            .await?;
        let has_next_page = datasets.len() as i64 > first;
        datasets.truncate(first as usize);
        Ok(DatasetConnection {
            datasets,
            has_next_page,
        })
    }
}

pub struct DatasetConnection {
    datasets: Vec<crate::store::DatasetRecord>,
    has_next_page: bool,
}

#[Object]
impl DatasetConnection {
    async fn nodes(&self) -> Vec<Dataset> {
        self.datasets.iter().cloned().map(Dataset).collect()
    }
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next_page,
            end_cursor: self
                .datasets
                .last()
                .map(|d| encode_cursor(d.created_at, &d.id)),
        }
    }
    async fn total_count(&self, ctx: &Context<'_>) -> ApiResult<i64> {
        Ok(state(ctx).store.count_datasets().await?)
    }
}

fn field_name(field: &str, value: Option<String>, default: &str) -> ApiResult<String> {
    let value = value
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| default.to_string());
    if value.is_empty() || value.chars().count() > MAX_NAME {
        return Err(ApiError::bad(
            field,
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    Ok(value)
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
        let app = state(ctx);
        let upload = file
            .value(ctx)
            .map_err(|e| ApiError::bad("file", format!("cannot be read: {e}")))?;
        let name = field_name("name", Some(name), "")?;
        let names = FieldNames {
            text: field_name("textField", text_field, "text")?,
            label: field_name("labelField", label_field, "label")?,
        };
        if names.text == names.label {
            return Err(ApiError::bad("labelField", "must differ from textField"));
        }
        let format: domain::DatasetFormat = match format {
            Some(f) => f.into(),
            None => domain::DatasetFormat::from_file_name(&upload.filename).ok_or_else(|| {
                ApiError::bad(
                    "format",
                    format!(
                        "cannot be told from the file name {:?}; pass JSONL or CSV",
                        upload.filename
                    ),
                )
            })?,
        };

        let id = uuid::Uuid::new_v4().to_string();
        let key = ObjectKey::parse(&format!("datasets/{id}/data.{}", format.extension()))?;
        let mut local = upload.content;
        let for_store = local.try_clone().map_err(ApiError::internal)?;
        let stored = app
            .objects
            .put_stream(
                &key,
                tokio::fs::File::from_std(for_store),
                app.config.max_upload_bytes,
            )
            .await
            .map_err(|e| {
                if format!("{e}").contains("larger than the limit") {
                    ApiError::bad("file", format!("{e}"))
                } else {
                    ApiError::internal(e)
                }
            })?;
        let new = NewDataset {
            id: id.clone(),
            name,
            format,
            object_key: key.to_string(),
            size_bytes: stored.size_bytes as i64,
            sha256: stored.sha256,
            text_field: names.text.clone(),
            label_field: names.label.clone(),
        };
        app.store.insert_dataset(&new, now_ms()).await?;

        // Validate from the local copy the multipart parser spooled to disk: one streaming pass.
        let scanned = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            local.seek(SeekFrom::Start(0))?;
            Ok(scan(BufReader::new(local), format, &names, false))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
        Ok(Dataset(
            app.store.finish_dataset_validation(&id, &scanned).await?,
        ))
    }
}
