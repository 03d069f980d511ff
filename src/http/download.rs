//! File downloads over HTTP with the API token: a model version's ZIP, a job's log as a ZIP, a
//! dataset's file as uploaded (with its length). The body is streamed as the archive is written, by the response itself (no thread per download); a client that
//! takes nothing for `KILN_HTTP_TIMEOUT_SECONDS` is disconnected. The archive is made as it is sent, so
//! its length is not known ahead and ranges are not served (`Accept-Ranges: none`; a `Range` header is
//! ignored and the whole archive sent).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{HttpState, authenticate, refuse};
use crate::api::ApiError;
use crate::service::ServiceError;
use crate::service::downloads::Download;

/// `GET /models/{name}/versions/{version}/download`.
pub async fn model_version(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    if let Err(refused) = authenticate(&s, &headers).await {
        return refused;
    }
    match s.service.download_model_version(&model, &version).await {
        Ok(download) => attachment(download),
        Err(e) => failure(e),
    }
}

/// `GET /datasets/{id}/download`: the file as uploaded.
pub async fn dataset(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = authenticate(&s, &headers).await {
        return refused;
    }
    match s.service.download_dataset(&id).await {
        Ok(download) => attachment(download),
        Err(e) => failure(e),
    }
}

/// `GET /jobs/{id}/logs/download`.
pub async fn job_logs(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Response {
    if let Err(refused) = authenticate(&s, &headers).await {
        return refused;
    }
    match s.service.download_job_logs(&job_id).await {
        Ok(download) => attachment(download),
        Err(e) => failure(e),
    }
}

fn attachment(download: Download) -> Response {
    let disposition = format!("attachment; filename=\"{}\"", download.file_name);
    let mut response = Body::from_stream(download.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(download.content_type),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    if let Some(size) = download.size {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// A use case's error as an HTTP response: its status, and the GraphQL-shaped error body.
fn failure(error: ServiceError) -> Response {
    refuse(super::status_of(&error), ApiError::from(error))
}
