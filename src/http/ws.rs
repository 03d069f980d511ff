//! GraphQL over WebSocket (`graphql-transport-ws`, and the older `graphql-ws`), with kiln's own handshake:
//!
//! - the client must send `connection_init` within the connection timeout (else close 4408), in at most
//!   [`MAX_INIT_BYTES`] (else 4400); a `subscribe` before it is refused with 4401;
//! - the token in its payload (`{"Authorization": "Bearer …"}`) is checked; a refusal closes with 4403
//!   and a reason starting with the error code (`UNAUTHENTICATED: …`);
//! - after that, async-graphql runs the protocol; messages are at most [`MAX_MESSAGE_BYTES`]; the server
//!   pings every [`PING_EVERY`] so that a live connection is never mistaken for an idle one, and at most
//!   [`MAX_WEBSOCKETS`](super::HttpLimits::max_websockets) are open at once (503 beyond).

use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};

use super::HttpState;
use crate::auth::AuthError;

/// The largest `connection_init`, before the client is known.
pub const MAX_INIT_BYTES: usize = 64 * 1024;
/// The largest message after the handshake.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// How often the server pings an open connection.
pub const PING_EVERY: Duration = Duration::from_secs(20);

pub async fn upgrade(
    State(s): State<HttpState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|list| {
            list.split(',')
                .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
        });
    let Some(protocol) = protocol else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must be graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    let Ok(permit) = s.websockets.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebSocket connections",
        )
            .into_response();
    };
    ws.protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            // Like a GraphQL request over HTTP, a connection's documents run on the GraphQL runtime.
            let _ = super::executor::run(async move {
                serve(socket, s, protocol).await;
                drop(permit);
            })
            .await;
        })
}

async fn serve(socket: WebSocket, s: HttpState, protocol: WebSocketProtocols) {
    let (mut sink, mut stream) = socket.split();
    let first = tokio::time::timeout(s.limits.timeout, async {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Text(text) => return Some(text.as_bytes().to_vec()),
                Message::Binary(bytes) => return Some(bytes.to_vec()),
                Message::Close(_) => return None,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
        None
    })
    .await;
    let init = match first {
        Err(_) => return close(&mut sink, 4408, "Connection initialisation timeout").await,
        Ok(None) => return,
        Ok(Some(init)) => init,
    };
    if init.len() > MAX_INIT_BYTES {
        return close(&mut sink, 4400, "connection_init is larger than 64 KiB").await;
    }
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(&init) else {
        return close(&mut sink, 4400, "the message is not JSON").await;
    };
    match message["type"].as_str() {
        Some("connection_init") => {}
        Some("subscribe" | "start") => return close(&mut sink, 4401, "Unauthorized").await,
        _ => return close(&mut sink, 4400, "expected connection_init").await,
    }
    let payload = &message["payload"];
    let authorization = payload
        .get("Authorization")
        .or_else(|| payload.get("authorization"))
        .and_then(|v| v.as_str());
    let principal = match s.auth.authenticate(authorization.map(str::as_bytes)).await {
        Ok(principal) => principal,
        Err(AuthError::Store(e)) => {
            let reference = uuid::Uuid::new_v4();
            tracing::error!(error = format!("{e:#}"), %reference, "checking a WebSocket token");
            return close(
                &mut sink,
                1011,
                &format!("internal error (reference {reference})"),
            )
            .await;
        }
        Err(refused) => {
            return close(&mut sink, 4403, &format!("UNAUTHENTICATED: {refused}")).await;
        }
    };

    // The rest of the conversation is async-graphql's, starting with the connection_init just read.
    let input = futures::stream::once(async move { init }).chain(
        stream
            .take_while(|message| std::future::ready(message.is_ok()))
            .filter_map(|message| {
                std::future::ready(match message {
                    Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                    Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                    _ => None,
                })
            }),
    );
    let mut data = Data::default();
    data.insert(principal);
    let output = async_graphql::http::WebSocket::new(s.schema.clone(), input, protocol)
        .on_connection_init(move |_| async move { Ok(data) })
        .map(|message| match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(code, reason) => Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })),
        });
    tokio::pin!(output);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            message = output.next() => match message {
                Some(message) => {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn close(sink: &mut futures::stream::SplitSink<WebSocket, Message>, code: u16, reason: &str) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}
