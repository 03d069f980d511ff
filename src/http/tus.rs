//! Resumable uploads over the tus 1.0.0 protocol (<https://tus.io/protocols/resumable-upload>) at
//! `/uploads`, with its creation, termination, checksum (sha1, sha256) and expiration extensions, so
//! stock clients (tus-js-client, Uppy) work unchanged. The rules are the use cases of
//! `service/uploads.rs`; this is the protocol's headers and status codes:
//!
//! | request | answer |
//! |---|---|
//! | `OPTIONS /uploads` (no token) | 204 with `Tus-Version`, `Tus-Extension`, `Tus-Max-Size`, `Tus-Checksum-Algorithm` |
//! | `POST /uploads` with `Upload-Length`, `Upload-Metadata` | 201 with `Location: /uploads/<id>`, `Upload-Expires`; 413 past `Tus-Max-Size` |
//! | `HEAD /uploads/<id>` | 200 with `Upload-Offset`, `Upload-Length`; 404; 410 once expired |
//! | `PATCH /uploads/<id>` (`application/offset+octet-stream`, `Upload-Offset`, maybe `Upload-Checksum`) | 204 with the new `Upload-Offset`; 409 at another offset; 423 while another request writes; 460 on a checksum mismatch; 413 past `Upload-Length` |
//! | `DELETE /uploads/<id>` | 204 |
//!
//! Every request but `OPTIONS` needs the bearer token and `Tus-Resumable: 1.0.0` (else 412), and every
//! answer carries `Tus-Resumable`. Errors are plain text saying what is wrong.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::{ApiError, HttpState, authenticate, stalling_body};
use crate::domain::{UploadRecord, UploadStatus, parse_upload_metadata};
use crate::service::ServiceError;
use crate::service::uploads::{AppendError, Checksum, ChecksumAlgorithm};

pub const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,termination,checksum,expiration";
/// Requests sending an upload's bytes at once, in this process: each holds at most one staged part
/// (5 MiB) in memory. Further ones are answered 503 and retried by the client.
pub const MAX_APPENDS_IN_FLIGHT: usize = 32;

fn tus_header(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

/// Adds `Tus-Resumable` to an answer.
fn with_version(mut response: Response) -> Response {
    response.headers_mut().insert(
        tus_header("tus-resumable"),
        HeaderValue::from_static(TUS_VERSION),
    );
    response
}

/// A plain-text refusal.
fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    with_version(
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message.into(),
        )
            .into_response(),
    )
}

/// A use case's error as the protocol's answer: the status, and the message the API would give.
fn service_failure(error: ServiceError) -> Response {
    let status = super::status_of(&error);
    let error: async_graphql::Error = ApiError::from(error).into();
    refuse(status, error.message)
}

/// Checks the token and the protocol version of a request; the refusal when either is wrong.
async fn admit(s: &HttpState, headers: &HeaderMap) -> Result<(), Response> {
    authenticate(s, headers).await.map_err(with_version)?;
    match headers.get("tus-resumable").map(HeaderValue::as_bytes) {
        Some(b"1.0.0") => Ok(()),
        other => {
            let mut refused = refuse(
                StatusCode::PRECONDITION_FAILED,
                match other {
                    None => "Tus-Resumable: 1.0.0 is missing".to_string(),
                    Some(v) => format!(
                        "Tus-Resumable {:?} is not a version this server speaks (1.0.0)",
                        String::from_utf8_lossy(v)
                    ),
                },
            );
            refused.headers_mut().insert(
                tus_header("tus-version"),
                HeaderValue::from_static(TUS_VERSION),
            );
            Err(refused)
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A header holding a non-negative integer; what is wrong when it is absent or not one (a 400).
fn number(headers: &HeaderMap, name: &str) -> Result<i64, String> {
    let Some(raw) = header_str(headers, name) else {
        return Err(format!("{name} is missing"));
    };
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("{name} {raw:?} is not a non-negative integer"))
}

fn http_date(epoch_ms: i64) -> HeaderValue {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(epoch_ms.max(0) as u64);
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).unwrap_or(HeaderValue::from_static(""))
}

/// `OPTIONS /uploads`: what this server supports.
pub async fn options(State(s): State<HttpState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        tus_header("tus-version"),
        HeaderValue::from_static(TUS_VERSION),
    );
    headers.insert(
        tus_header("tus-extension"),
        HeaderValue::from_static(EXTENSIONS),
    );
    headers.insert(
        tus_header("tus-max-size"),
        HeaderValue::from(s.limits.max_upload_bytes),
    );
    headers.insert(
        tus_header("tus-checksum-algorithm"),
        HeaderValue::from_static(ChecksumAlgorithm::NAMES),
    );
    with_version(response)
}

/// `POST /uploads`: a new upload.
pub async fn create(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if let Err(refused) = admit(&s, &headers).await {
        return refused;
    }
    if headers.contains_key("upload-defer-length") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Upload-Defer-Length is not supported: send Upload-Length",
        );
    }
    let length = match number(&headers, "Upload-Length") {
        Ok(n) => n,
        Err(problem) => return refuse(StatusCode::BAD_REQUEST, problem),
    };
    let metadata = match header_str(&headers, "upload-metadata").map(parse_upload_metadata) {
        None => BTreeMap::new(),
        Some(Ok(metadata)) => metadata,
        Some(Err(e)) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match s.service.create_upload(length, &metadata).await {
        Ok(upload) => {
            let mut response = StatusCode::CREATED.into_response();
            let headers = response.headers_mut();
            if let Ok(location) = HeaderValue::from_str(&format!("/uploads/{}", upload.id)) {
                headers.insert(header::LOCATION, location);
            }
            headers.insert(tus_header("upload-offset"), HeaderValue::from(0));
            headers.insert(tus_header("upload-expires"), http_date(upload.expires_at));
            with_version(response)
        }
        Err(e) => service_failure(e),
    }
}

/// The answer for an upload that no longer takes bytes because it expired (410), or `None`.
fn expired(upload: &UploadRecord) -> Option<Response> {
    let gone = upload.status == UploadStatus::Expired
        || (upload.status == UploadStatus::Receiving
            && upload.expires_at <= crate::domain::now_ms());
    gone.then(|| refuse(StatusCode::GONE, AppendError::Expired.to_string()))
}

/// `HEAD /uploads/<id>`: how many bytes are stored.
pub async fn head(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = admit(&s, &headers).await {
        return refused;
    }
    let upload = match s.service.upload(&id).await {
        Ok(Some(upload)) => upload,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, AppendError::NotFound.to_string()),
        Err(e) => return service_failure(e),
    };
    if let Some(gone) = expired(&upload) {
        return gone;
    }
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert(
        tus_header("upload-offset"),
        HeaderValue::from(upload.offset),
    );
    headers.insert(
        tus_header("upload-length"),
        HeaderValue::from(upload.length),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if upload.status == UploadStatus::Receiving {
        headers.insert(tus_header("upload-expires"), http_date(upload.expires_at));
    }
    with_version(response)
}

/// `Upload-Checksum: <algorithm> <base64 digest>`; what is wrong with it (a 400).
fn checksum(headers: &HeaderMap) -> Result<Option<Checksum>, String> {
    let Some(raw) = header_str(headers, "upload-checksum") else {
        return Ok(None);
    };
    let (name, digest) = raw.trim().split_once(' ').unwrap_or((raw, ""));
    let Some(algorithm) = ChecksumAlgorithm::parse(name) else {
        return Err(format!(
            "Upload-Checksum: algorithm {name:?} is not supported (Tus-Checksum-Algorithm: {})",
            ChecksumAlgorithm::NAMES
        ));
    };
    let digest = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|e| format!("Upload-Checksum: the digest is not base64: {e}"))?;
    Ok(Some(Checksum { algorithm, digest }))
}

/// `PATCH /uploads/<id>`: bytes from `Upload-Offset` on.
pub async fn patch(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    if let Err(refused) = admit(&s, &headers).await {
        return refused;
    }
    if header_str(&headers, "content-type") != Some("application/offset+octet-stream") {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/offset+octet-stream",
        );
    }
    let offset = match number(&headers, "Upload-Offset") {
        Ok(n) => n,
        Err(problem) => return refuse(StatusCode::BAD_REQUEST, problem),
    };
    let checksum = match checksum(&headers) {
        Ok(c) => c,
        Err(problem) => return refuse(StatusCode::BAD_REQUEST, problem),
    };
    let Ok(permit) = Arc::clone(&s.uploads_in_flight).try_acquire_owned() else {
        let mut busy = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{MAX_APPENDS_IN_FLIGHT} uploads are sending bytes to this server now; try again in a moment"
            ),
        );
        busy.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return busy;
    };
    let body = Box::pin(stalling_body(request, s.limits.timeout));
    let service = s.service.clone();
    // Its own task: when the client goes away mid-body, the bytes that came are still stored.
    let appended = tokio::spawn(async move {
        let _permit = permit;
        service.append_upload(&id, offset, body, checksum).await
    })
    .await;
    match appended {
        Ok(Ok(upload)) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            headers.insert(
                tus_header("upload-offset"),
                HeaderValue::from(upload.offset),
            );
            if upload.status == UploadStatus::Receiving {
                headers.insert(tus_header("upload-expires"), http_date(upload.expires_at));
            }
            with_version(response)
        }
        Ok(Err(e)) => append_failure(e),
        Err(e) => service_failure(ServiceError::Internal(e.into())),
    }
}

fn append_failure(error: AppendError) -> Response {
    let status = match &error {
        AppendError::Service(_) => {
            return match error {
                AppendError::Service(e) => service_failure(e),
                other => refuse(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
            };
        }
        AppendError::NotFound => StatusCode::NOT_FOUND,
        AppendError::Expired => StatusCode::GONE,
        AppendError::Offset(_) | AppendError::Complete => StatusCode::CONFLICT,
        AppendError::Busy => StatusCode::LOCKED,
        AppendError::PastLength(_) => StatusCode::PAYLOAD_TOO_LARGE,
        AppendError::ChecksumMismatch => {
            StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST)
        }
        AppendError::Interrupted => StatusCode::BAD_REQUEST,
    };
    refuse(status, error.to_string())
}

/// `DELETE /uploads/<id>`: the upload and its stored bytes are removed.
pub async fn terminate(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = admit(&s, &headers).await {
        return refused;
    }
    match s.service.terminate_upload(&id).await {
        Ok(()) => with_version(StatusCode::NO_CONTENT.into_response()),
        Err(e) => service_failure(e),
    }
}
