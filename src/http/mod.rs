//! axum only: the router, GraphQL over POST (JSON, and multipart uploads read by [`upload`]) and
//! WebSocket ([`ws`]: `graphql-transport-ws` and `graphql-ws`, same path), health checks, and the embedded
//! playground, model downloads ([`download`]), resumable uploads over the tus protocol ([`tus`]), served with connection limits and timeouts ([`serve`]).
//!
//! Authentication happens here, before a request body is read: `Authorization: Bearer <token>` on HTTP
//! (the scheme in any case), `{"Authorization": "Bearer <token>"}` in the WebSocket `connection_init`
//! payload.
//!
//! Limits: at most `KILN_MAX_CONNECTIONS` connections (and as many WebSockets); a connection that sends
//! nothing for `KILN_HTTP_TIMEOUT_SECONDS` (headers not done, an upload stalled, idle keep-alive) is
//! closed; non-upload bodies are at most [`MAX_JSON_BODY`]; an upload's `operations` and `map` parts at
//! most [`upload::MAX_PART_BYTES`] each.

mod download;
mod executor;
mod serve;
mod tus;
mod upload;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_graphql_axum::GraphQLResponse;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, head, post};
use futures::{AsyncReadExt, Stream, StreamExt, TryStreamExt};
use rust_embed::RustEmbed;
use tokio::sync::Semaphore;

use crate::api::{self, ApiError, ApiSchema};
use crate::auth::{AuthError, Authenticator, Principal};
use crate::service::Service;

pub use serve::ConnectionLimits;

/// How long `/readyz` waits for each dependency.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest GraphQL request body that is not a multipart upload.
pub const MAX_JSON_BODY: u64 = 1024 * 1024;

#[derive(RustEmbed)]
#[folder = "web-playground/"]
struct Playground;

/// What HTTP serving is limited by.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_upload_bytes: u64,
    pub max_connections: usize,
    /// How long a connection may send nothing: headers, an upload's body, an idle connection, a
    /// WebSocket's `connection_init`.
    pub timeout: Duration,
    /// Where uploads are spooled while they are read.
    pub spool_dir: PathBuf,
}

impl HttpLimits {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            max_upload_bytes: config.max_upload_bytes,
            max_connections: config.max_connections,
            timeout: Duration::from_secs(config.http_timeout_seconds),
            spool_dir: config.work_dir.join("uploads"),
        }
    }
}

/// What the handlers share: the schema, the use cases, the token check and the limits.
#[derive(Clone)]
pub struct HttpState {
    service: Service,
    auth: Arc<Authenticator>,
    schema: ApiSchema,
    limits: Arc<HttpLimits>,
    /// One permit per open WebSocket.
    websockets: Arc<Semaphore>,
    /// One permit per request sending a resumable upload's bytes ([`tus::MAX_APPENDS_IN_FLIGHT`]).
    uploads_in_flight: Arc<Semaphore>,
}

impl HttpState {
    pub fn new(service: Service, auth: Arc<Authenticator>, limits: HttpLimits) -> Self {
        Self {
            schema: api::schema(service.clone()),
            service,
            auth,
            websockets: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            uploads_in_flight: Arc::new(Semaphore::new(tus::MAX_APPENDS_IN_FLIGHT)),
            limits: Arc::new(limits),
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = ConnectionLimits {
        max_connections: state.limits.max_connections,
        timeout: state.limits.timeout,
    };
    serve::serve(listener, router(state), limits, shutdown).await
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| playground_file(Path("app/index.html".to_string()))),
        )
        .route(
            "/graphiql",
            get(|| playground_file(Path("index.html".to_string()))),
        )
        .route("/playground/{*file}", get(playground_file))
        .route("/graphql", get(ws::upgrade).post(graphql_post))
        .route(
            "/models/{name}/versions/{version}/download",
            get(download::model_version),
        )
        .route("/jobs/{id}/logs/download", get(download::job_logs))
        .route("/datasets/{id}/download", get(download::dataset))
        .route("/uploads", post(tus::create).options(tus::options))
        .route(
            "/uploads/{id}",
            head(tus::head).patch(tus::patch).delete(tus::terminate),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_for_admins))
        .with_state(state)
}

/// The HTTP status of a use case's error.
fn status_of(error: &crate::service::ServiceError) -> StatusCode {
    use crate::service::ServiceError;
    match error {
        ServiceError::BadInput(_) => StatusCode::BAD_REQUEST,
        ServiceError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ServiceError::NotFound(_) | ServiceError::Lost(_) => StatusCode::NOT_FOUND,
        ServiceError::Busy(_) | ServiceError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Conflict(_) | ServiceError::FailedPrecondition { .. } => StatusCode::CONFLICT,
        ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
        ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn auth_error(error: AuthError) -> ApiError {
    match error {
        AuthError::Store(e) => ApiError::internal(e),
        other => ApiError::Unauthenticated(other.to_string()),
    }
}

fn refuse(status: StatusCode, error: ApiError) -> Response {
    (status, GraphQLResponse::from(api::error_response(error))).into_response()
}

/// The caller of an HTTP request, or the response refusing it (401, or 500 when tokens cannot be read).
async fn authenticate(s: &HttpState, headers: &HeaderMap) -> Result<Principal, Response> {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    s.auth.authenticate(authorization).await.map_err(|e| {
        let status = if matches!(e, AuthError::Store(_)) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::UNAUTHORIZED
        };
        refuse(status, auth_error(e))
    })
}

async fn graphql_post(
    State(s): State<HttpState>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let principal = match authenticate(&s, &headers).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let multipart = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("multipart/"));
    let limit = if multipart {
        s.limits
            .max_upload_bytes
            .saturating_add(2 * upload::MAX_PART_BYTES + 64 * 1024)
    } else {
        MAX_JSON_BODY
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        let error = ApiError::bad(
            "request",
            format!("the body is larger than the limit of {limit} bytes"),
        );
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, error);
    }
    let body = stalling_body(request, s.limits.timeout);
    // Reading is async; turning what was read into a response is CPU work (parsing, validation,
    // execution, serialising), which runs where it cannot hold up what keeps the server alive.
    let gql_request = if multipart {
        let received = upload::receive(
            content_type.as_deref().unwrap_or_default(),
            body,
            s.limits.max_upload_bytes,
            &s.limits.spool_dir,
        )
        .await;
        match received {
            Ok(request) => Ok(request),
            Err(error @ ApiError::TooLarge { .. }) => {
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, error);
            }
            Err(error) => return refuse(StatusCode::BAD_REQUEST, error),
        }
    } else {
        // Bodies without a declared length are cut at the limit (the parser then reports them
        // incomplete).
        let mut bytes = Vec::new();
        let reader = body.into_async_read().take(limit);
        futures::pin_mut!(reader);
        let read = reader.read_to_end(&mut bytes).await;
        if let Err(e) = read {
            return refuse(
                StatusCode::BAD_REQUEST,
                ApiError::bad("request", e.to_string()),
            );
        }
        Err(bytes)
    };
    let schema = s.schema.clone();
    let service = s.service.clone();
    let response = executor::run(async move {
        let request = match gql_request {
            Ok(request) => request,
            Err(bytes) => {
                let parsed =
                    async_graphql::http::receive_body(content_type, &bytes[..], Default::default())
                        .await;
                match parsed {
                    Ok(request) => request,
                    Err(e) => {
                        let error = ApiError::bad("request", e.to_string());
                        return Err(refuse(StatusCode::BAD_REQUEST, error));
                    }
                }
            }
        };
        Ok(schema
            .execute(api::prepare(request, &service, principal))
            .await)
    })
    .await;
    match response {
        Some(Ok(response)) => GraphQLResponse::from(response).into_response(),
        Some(Err(refused)) => refused,
        None => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::internal(anyhow::anyhow!("the GraphQL request's task ended early")),
        ),
    }
}

/// The request body as a stream that fails when no bytes arrive for `timeout`.
fn stalling_body(
    request: Request,
    timeout: Duration,
) -> impl Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let data = request.into_body().into_data_stream();
    tokio_stream::StreamExt::timeout(data, timeout).map(move |item| match item {
        Ok(chunk) => chunk.map_err(std::io::Error::other),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no bytes of the body arrived for {} s", timeout.as_secs()),
        )),
    })
}

/// Each dependency's answer: 200 when all answered within [`READY_TIMEOUT`], else 503; the body says
/// which failed, how and how long each took.
async fn readyz(State(s): State<HttpState>) -> Response {
    let checks = s.service.check_ready(READY_TIMEOUT).await;
    let ready = checks.iter().all(|c| c.error.is_none());
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": checks.iter().map(|c| serde_json::json!({
            "name": c.name,
            "ok": c.error.is_none(),
            "latencyMs": (c.latency.as_secs_f64() * 1e6).round() / 1e3,
            "error": c.error,
        })).collect::<Vec<_>>(),
    });
    if !ready {
        tracing::warn!(checks = %body["checks"], "not ready");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics` on the API's address: the admin token is required.
async fn metrics_for_admins(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let principal = match authenticate(&s, &headers).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    if principal.role != crate::auth::Role::Admin {
        return refuse(
            StatusCode::FORBIDDEN,
            ApiError::Forbidden("/metrics needs the admin token".into()),
        );
    }
    metrics_text(&s.service).await
}

/// The metrics in the OpenMetrics text format (which Prometheus reads; it is what the registry's
/// encoder writes, `# EOF` included).
pub async fn metrics_text(service: &Service) -> Response {
    match service.scrape_metrics().await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            let error = ApiError::internal(e);
            refuse(StatusCode::SERVICE_UNAVAILABLE, error)
        }
    }
}

/// A router serving only `/metrics` (without a token) and `/healthz`: for `KILN_METRICS_BIND`, an
/// address the operator keeps for the scraper and the health checks (a `kiln worker` serves no API).
pub fn metrics_router(service: Service) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(service): State<Service>| async move { metrics_text(&service).await }),
        )
        .with_state(service)
}

async fn playground_file(Path(file): Path<String>) -> Response {
    match Playground::get(&file) {
        Some(content) => {
            let mime = mime_of(&file);
            Response::builder()
                .header(header::CONTENT_TYPE, mime)
                .body(Body::from(content.data.into_owned()))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn mime_of(file: &str) -> &'static str {
    match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}
