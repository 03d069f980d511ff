//! axum only: the router, GraphQL over POST (JSON and multipart uploads) and WebSocket
//! (`graphql-transport-ws` and `graphql-ws`, same path), health checks, and the embedded playground.
//!
//! Authentication happens here, before a request body is read: `Authorization: Bearer <token>` on HTTP,
//! `{"Authorization": "Bearer <token>"}` in the WebSocket `connection_init` payload.

use std::sync::Arc;

use async_graphql::Data;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{AsyncReadExt, TryStreamExt};
use rust_embed::RustEmbed;

use crate::api::{self, ApiError, ApiSchema};
use crate::auth::{AuthError, Authenticator};
use crate::service::Service;

/// Largest GraphQL request body that is not a multipart upload.
pub const MAX_JSON_BODY: u64 = 1024 * 1024;

#[derive(RustEmbed)]
#[folder = "web-playground/"]
struct Playground;

/// What the handlers share: the schema, the use cases, the token check and the upload limit.
#[derive(Clone)]
pub struct HttpState {
    service: Service,
    auth: Arc<Authenticator>,
    schema: ApiSchema,
    max_upload_bytes: u64,
}

impl HttpState {
    pub fn new(service: Service, auth: Arc<Authenticator>, max_upload_bytes: u64) -> Self {
        Self {
            schema: api::schema(service.clone()),
            service,
            auth,
            max_upload_bytes,
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(|| playground_file(Path("index.html".to_string()))))
        .route("/playground/{*file}", get(playground_file))
        .route("/graphql", get(graphql_ws).post(graphql_post))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

fn auth_error(error: AuthError) -> ApiError {
    match error {
        AuthError::Store(e) => ApiError::internal(e),
        other => ApiError::Unauthenticated(other.to_string()),
    }
}

async fn graphql_post(
    State(s): State<HttpState>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match s.auth.authenticate(authorization).await {
        Ok(p) => p,
        Err(e) => {
            let status = if matches!(e, AuthError::Store(_)) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::UNAUTHORIZED
            };
            return (
                status,
                GraphQLResponse::from(api::error_response(auth_error(e))),
            )
                .into_response();
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let multipart = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("multipart/"));
    let limit = if multipart {
        s.max_upload_bytes.saturating_add(MAX_JSON_BODY)
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
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            GraphQLResponse::from(api::error_response(error)),
        )
            .into_response();
    }
    // Bodies without a declared length are cut at the limit (the parser then reports them incomplete).
    let body = request
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other)
        .into_async_read()
        .take(limit);
    let parsed = async_graphql::http::receive_body(
        content_type,
        body,
        api::multipart_options(s.max_upload_bytes),
    )
    .await;
    let gql_request = match parsed {
        Ok(r) => r,
        Err(e) => {
            let error = ApiError::bad("request", e.to_string());
            return (
                StatusCode::BAD_REQUEST,
                GraphQLResponse::from(api::error_response(error)),
            )
                .into_response();
        }
    };
    GraphQLResponse::from(
        s.schema
            .execute(api::prepare(gql_request, &s.service, principal))
            .await,
    )
    .into_response()
}

async fn graphql_ws(
    State(s): State<HttpState>,
    protocol: GraphQLProtocol,
    ws: WebSocketUpgrade,
) -> Response {
    ws.protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let auth = s.auth.clone();
            GraphQLWebSocket::new(socket, s.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    let header = payload
                        .get("Authorization")
                        .or_else(|| payload.get("authorization"))
                        .and_then(|v| v.as_str())
                        .map(str::to_string);
                    // async-graphql closes a refused connection with code 1002 and the error's message
                    // as the reason; the reason starts with the error code so clients can tell why.
                    let principal =
                        auth.authenticate(header.as_deref())
                            .await
                            .map_err(|e| match e {
                                AuthError::Store(e) => {
                                    async_graphql::Error::from(ApiError::internal(e))
                                }
                                other => {
                                    async_graphql::Error::new(format!("UNAUTHENTICATED: {other}"))
                                }
                            })?;
                    let mut data = Data::default();
                    data.insert(principal);
                    Ok(data)
                })
                .serve()
        })
}

async fn readyz(State(s): State<HttpState>) -> Response {
    match s.service.check_ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
        }
    }
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
