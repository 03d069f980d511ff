//! Connections that never finish, oversized parts, and how tokens are read: nothing a client sends (or
//! fails to send) holds server resources for long.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Db, Objects, Options, TestApp, spawn_app, spawn_with};

async fn with_timeout(seconds: u64) -> TestApp {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.http_timeout_seconds = seconds;
    spawn_with(options).await
}

/// Reads until the server closes the connection; returns what it sent and how long that took.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_websocket_that_never_initialises_is_closed_with_4408() {
    let app = with_timeout(1).await;

    let started = Instant::now();
    let closed = app.open_ws(None).await.err().expect("closed by the server");

    assert!(closed.starts_with("4408 "), "{closed}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_websocket_is_refused_before_initialisation_and_with_an_oversized_init() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;

    let early = json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { jobEvents(jobId: \"x\") { __typename } }" } });
    let closed = app.open_ws(Some(early.to_string())).await.err().unwrap();
    assert!(closed.starts_with("4401 "), "{closed}");

    let padded = json!({ "type": "connection_init", "payload": { "pad": "x".repeat(100 * 1024) } });
    let closed = app.open_ws(Some(padded.to_string())).await.err().unwrap();
    assert!(closed.starts_with("4400 "), "{closed}");

    // Beyond the message limit the frame is not even buffered: the connection is dropped.
    let huge = json!({ "type": "connection_init", "payload": { "pad": "x".repeat(4 << 20) } });
    assert!(app.open_ws(Some(huge.to_string())).await.is_err());
    assert!(
        app.connect_ws(Some(&app.token)).await.is_ok(),
        "a proper connection still works"
    );
}

#[tokio::test]
async fn idle_connections_and_slow_headers_are_closed() {
    let app = with_timeout(1).await;

    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    let (_, took) = until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "{took:?}");

    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST /graphql HTTP/1.1\r\nHost: kiln\r\n")
        .await
        .unwrap();
    let (_, took) = until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A keep-alive connection that goes quiet after a request is closed too.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: kiln\r\n\r\n")
        .await
        .unwrap();
    let (answer, took) = until_closed(&mut kept, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn an_upload_that_stalls_is_answered_and_closed() {
    let app = with_timeout(1).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=X\r\nContent-Length: 100000000\r\n\r\n",
        app.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'-'; 300]).await.unwrap();

    let (answer, took) = until_closed(&mut stream, Duration::from_secs(10)).await;

    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("no bytes of the body arrived"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.max_connections = 3;
    let app = spawn_with(options).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();

    assert!(
        client.get(app.url("/healthz")).send().await.is_err(),
        "a fourth connection is not served while three are open"
    );
    held.clear();
    let fresh = reqwest::Client::new();
    let answer = fresh.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

/// Sends `form` as a multipart GraphQL request and asserts that it is refused with a 400 whose
/// message contains `problem`.
async fn assert_upload_refused(app: &TestApp, form: reqwest::multipart::Form, problem: &str) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&app.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 400, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(problem), "{body}");
}

#[tokio::test]
async fn an_uploads_other_parts_are_held_to_the_json_limit_and_named_in_the_map() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let operations = json!({ "query": "mutation($file: Upload!) { uploadDataset(file: $file, name: \"d\") { id } }",
        "variables": { "file": null } })
    .to_string();
    let file = || {
        reqwest::multipart::Part::bytes(b"{\"text\":\"a\",\"label\":\"x\"}\n".to_vec())
            .file_name("d.jsonl")
    };

    let huge = format!("{operations}{}", " ".repeat(2 << 20));
    assert_upload_refused(
        &app,
        reqwest::multipart::Form::new()
            .text("operations", huge)
            .text("map", r#"{"0": ["variables.file"]}"#)
            .part("0", file()),
        "\"operations\" is larger than the limit of 1048576 bytes",
    )
    .await;

    assert_upload_refused(
        &app,
        reqwest::multipart::Form::new()
            .text("operations", operations.clone())
            .text("map", r#"{"0": ["variables.file"]}"#)
            .part("0", file())
            .part("1", file()),
        "part \"1\" is not named in the map",
    )
    .await;

    assert_upload_refused(
        &app,
        reqwest::multipart::Form::new()
            .text("operations", operations)
            .text(
                "map",
                r#"{"0": ["variables.file"], "1": ["variables.file"]}"#,
            )
            .part("0", file())
            .part("1", file()),
        "one file at most",
    )
    .await;
    let count = app.data("{ datasets { totalCount } }", json!({})).await;
    assert_eq!(count["datasets"]["totalCount"], 0);
}

#[tokio::test]
async fn the_bearer_scheme_is_read_in_any_case_and_a_non_ascii_token_is_invalid() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let body: serde_json::Value = app
            .client
            .post(app.url("/graphql"))
            .header("authorization", format!("{scheme} {}", app.token))
            .json(&json!({ "query": "{ me { name } }" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body.get("errors").is_none(), "{scheme}: {body}");
    }
    let response = app
        .client
        .post(app.url("/graphql"))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes("Bearer kiln_é".as_bytes()).unwrap(),
        )
        .json(&json!({ "query": "{ me { name } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["message"], "invalid API token", "{body}");
}
