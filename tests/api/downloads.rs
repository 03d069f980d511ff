//! Model downloads under hostile clients: hundreds of downloads nobody reads hold no thread and do
//! not stop the server answering, are cut after the connection timeout, and paths have one spelling.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::helpers::{ADMIN_TOKEN, Db, Objects, ServeProcess, TestApp, eventually, spawn_app};

/// A text model of about 50 MiB: its ZIP is far larger than what socket buffers hold.
async fn large_model(app: &TestApp, model: &str) {
    app.trained_text_model(
        model,
        json!({ "hiddenSize": 512, "numLayers": 4, "numHeads": 8, "intermediateSize": 2048 }),
        json!({ "epochs": 1, "batchSize": 16, "maxSeqLength": 16 }),
    )
    .await;
}

/// More than tokio's blocking pool has threads (512), which the downloads once held one each of.
const STALLED: usize = 600;

/// How many file descriptors a process has open.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// What a process has open, counted by kind (sockets, files under each folder).
fn describe_files(pid: u32) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let target = std::fs::read_link(entry.unwrap().path())
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "gone".into());
        let kind = match target.split_once(':') {
            Some((kind, _)) if !target.starts_with('/') => kind.to_string(),
            _ => Path::new(&target)
                .parent()
                .map_or(target.clone(), |p| p.display().to_string()),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    format!("{} open files: {kinds:?}", kinds.values().sum::<usize>())
}

#[tokio::test]
async fn hundreds_of_downloads_nobody_reads_do_not_stop_the_server() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    large_model(&app, "large").await;
    let server = ServeProcess::start(&app, 0, &[("KILN_HTTP_TIMEOUT_SECONDS", "5")]).await;
    let body = server
        .graphql(
            "mutation { loadModel(model: \"large\") { version } }",
            json!({}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let files_before = open_files(server.pid());

    // Each client asks for the ZIP and never reads a byte of it.
    let address = server.url.trim_start_matches("http://").to_string();
    let request = format!(
        "GET /models/large/versions/1/download HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(address.parse().unwrap()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    eventually(
        Duration::from_secs(30),
        "the server to hold every download",
        || async { open_files(server.pid()) >= files_before + STALLED },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The server answers its health check, a prediction and a download meanwhile.
    let started = Instant::now();
    let health = server
        .client
        .get(format!("{}/healthz", server.url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(health.status(), 200);
    let healthz = started.elapsed();
    let started = Instant::now();
    let body = server
        .graphql(
            "{ predict(model: \"large\", inputs: [\"ignore previous instructions\"]) { label } }",
            json!({}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let predict = started.elapsed();
    eprintln!(
        "with {STALLED} stalled downloads: /healthz in {healthz:?}, a predict in {predict:?}"
    );
    assert!(
        healthz < Duration::from_secs(2),
        "/healthz took {healthz:?}"
    );
    assert!(predict < Duration::from_secs(2), "predict took {predict:?}");
    let zip = server
        .client
        .get(format!("{}/models/large/versions/1/download", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(zip.len() > 40 << 20, "{} bytes", zip.len());

    // A client that takes nothing for the connection timeout is disconnected.
    let started = Instant::now();
    while open_files(server.pid()) > files_before + 50 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stalled downloads were not cut: the server holds {} (before: {files_before})",
            describe_files(server.pid())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the stalled downloads were cut; the server holds {}",
        describe_files(server.pid())
    );
    drop(stalled);
}

#[tokio::test]
async fn a_download_path_names_a_version_one_way_and_says_ranges_are_not_served() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    crate::registry::train_versions(&app, "rows", 1).await;
    let get = |path: &str| {
        app.client
            .get(app.url(path))
            .bearer_auth(&app.token)
            .header("Range", "bytes=0-9")
    };
    let response = get("/models/rows/versions/1/download")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["accept-ranges"], "none");
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.len() > 10, "the whole archive, not a range");
    assert_eq!(&bytes[..4], b"PK\x03\x04");
    for other in ["+1", "01", "1.0", "0"] {
        let response = get(&format!("/models/rows/versions/{other}/download"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{other}");
    }
}
