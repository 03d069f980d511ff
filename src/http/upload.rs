//! The GraphQL multipart request (an upload), read with limits: the `operations` and `map` parts are at
//! most [`MAX_PART_BYTES`] each and come first; exactly one file, named in `map`, spooled to an unnamed
//! temporary file in the work folder (it disappears with the request, or with the process); a part that
//! `map` does not name is refused before anything of it is stored.

use std::collections::HashMap;
use std::io::SeekFrom;

use std::path::Path;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use async_graphql::UploadValue;
use bytes::Bytes;
use futures::Stream;

use crate::api::ApiError;

/// The largest `operations` or `map` part.
pub const MAX_PART_BYTES: u64 = 1024 * 1024;

/// Reads a multipart request into a GraphQL request with its file attached.
pub async fn receive(
    content_type: &str,
    body: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    max_file_bytes: u64,
    spool_dir: &Path,
) -> Result<async_graphql::Request, ApiError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::bad("request", format!("not a multipart request: {e}")))?;
    let limits = multer::SizeLimit::new()
        .whole_stream(max_file_bytes.saturating_add(2 * MAX_PART_BYTES + 64 * 1024))
        .per_field(max_file_bytes)
        .for_field("operations", MAX_PART_BYTES)
        .for_field("map", MAX_PART_BYTES);
    let mut multipart = multer::Multipart::with_constraints(
        body,
        boundary,
        multer::Constraints::new().size_limit(limits),
    );
    let mut operations: Option<Bytes> = None;
    let mut map: Option<HashMap<String, Vec<String>>> = None;
    let mut file: Option<(Vec<String>, UploadValue)> = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "operations" if operations.is_none() => {
                operations = Some(field.bytes().await.map_err(multipart_error)?);
            }
            "map" if map.is_none() => {
                let bytes = field.bytes().await.map_err(multipart_error)?;
                map = Some(serde_json::from_slice(&bytes).map_err(|e| {
                    ApiError::bad(
                        "request",
                        format!("the map part is not a JSON map of files: {e}"),
                    )
                })?);
            }
            _ => {
                let Some(paths) = map.as_mut().and_then(|m| m.remove(&name)) else {
                    return Err(ApiError::bad(
                        "request",
                        format!(
                            "part {name:?} is not named in the map part (which must come first)"
                        ),
                    ));
                };
                if file.is_some() {
                    return Err(ApiError::bad(
                        "request",
                        "a request carries one file at most",
                    ));
                }
                let filename = field.file_name().unwrap_or_default().to_string();
                let content_type = field.content_type().map(|m| m.to_string());
                tokio::fs::create_dir_all(spool_dir)
                    .await
                    .map_err(ApiError::internal)?;
                let dir = spool_dir.to_path_buf();
                let content = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(ApiError::internal)?;
                // Written through tokio's file (its blocking pool), so a slow disk holds up no
                // other request.
                let mut spool =
                    tokio::fs::File::from_std(content.try_clone().map_err(ApiError::internal)?);
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    spool.write_all(&chunk).await.map_err(ApiError::internal)?;
                }
                spool.flush().await.map_err(ApiError::internal)?;
                spool
                    .seek(SeekFrom::Start(0))
                    .await
                    .map_err(ApiError::internal)?;
                drop(spool);
                file = Some((
                    paths,
                    UploadValue {
                        filename,
                        content_type,
                        content,
                    },
                ));
            }
        }
    }
    let operations =
        operations.ok_or_else(|| ApiError::bad("request", "the operations part is missing"))?;
    let mut request: async_graphql::Request = serde_json::from_slice(&operations).map_err(|e| {
        ApiError::bad(
            "request",
            format!("the operations part is not one GraphQL request: {e}"),
        )
    })?;
    if let Some((paths, upload)) = file {
        for path in &paths {
            let copy = UploadValue {
                filename: upload.filename.clone(),
                content_type: upload.content_type.clone(),
                content: upload.content.try_clone().map_err(ApiError::internal)?,
            };
            request.set_upload(path, copy);
        }
    }
    Ok(request)
}

fn multipart_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::FieldSizeExceeded { limit, field_name }
            if field_name.as_deref() == Some("operations")
                || field_name.as_deref() == Some("map") =>
        {
            ApiError::bad(
                "request",
                format!(
                    "part {:?} is larger than the limit of {limit} bytes",
                    field_name.unwrap_or_default()
                ),
            )
        }
        multer::Error::FieldSizeExceeded { limit, .. } => ApiError::TooLarge {
            field: "file".into(),
            message: format!(
                "the file is larger than the limit of {limit} bytes (KILN_MAX_UPLOAD_BYTES)"
            ),
        },
        multer::Error::StreamSizeExceeded { limit } => ApiError::bad(
            "request",
            format!("the body is larger than the limit of {limit} bytes"),
        ),
        multer::Error::StreamReadFailed(e) => ApiError::bad("request", e.to_string()),
        other => ApiError::bad(
            "request",
            format!("the multipart body cannot be read: {other}"),
        ),
    }
}
