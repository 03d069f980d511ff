//! Resumable uploads at `/uploads` (the tus 1.0.0 protocol): driven by the protocol's reference client,
//! npm `tus-js-client` (run by Node.js, installed by `scripts/test`), through an interruption and a kiln
//! restart; and request by request against the protocol's rules, across two replicas.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Db, Objects, TestApp, execute_sql, on_storage, spawn_app};

const PART: usize = 5 * 1024 * 1024;

const UPLOAD: &str = "query($id: ID!) { upload(id: $id) { id url name fileName format offset length status \
    error dataset { id name status rowCount sha256 sizeBytes } } }";

const UPLOAD_EVENTS: &str = "subscription($id: ID!) { uploadEvents(id: $id) { offset length status error \
    dataset { id status rowCount sha256 } } }";

/// A valid text dataset of about `bytes` bytes (two labels, distinct rows).
pub fn text_file(bytes: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(bytes + 200);
    let mut rows = 0;
    while out.len() < bytes {
        let label = if rows % 2 == 0 { "injection" } else { "benign" };
        let line = json!({
            "text": format!("row {rows} of a file big enough to need several parts, said {label}"),
            "label": label,
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
        rows += 1;
    }
    (out, rows)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A tus client made of single requests.
struct Tus<'a> {
    app: &'a TestApp,
}

impl<'a> Tus<'a> {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.app
            .client
            .request(method, self.app.url(path))
            .bearer_auth(&self.app.token)
            .header("Tus-Resumable", "1.0.0")
    }

    async fn create(&self, length: usize, metadata: &[(&str, &str)]) -> reqwest::Response {
        let metadata = metadata
            .iter()
            .map(|(k, v)| format!("{k} {}", b64(v)))
            .collect::<Vec<_>>()
            .join(",");
        self.request(reqwest::Method::POST, "/uploads")
            .header("Upload-Length", length.to_string())
            .header("Upload-Metadata", metadata)
            .send()
            .await
            .unwrap()
    }

    /// Creates an upload of `length` bytes named `name`: its path.
    async fn created(&self, length: usize, name: &str) -> String {
        let response = self
            .create(length, &[("name", name), ("filename", "rows.jsonl")])
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(response.headers().contains_key("upload-expires"));
        response.headers()["location"].to_str().unwrap().to_string()
    }

    async fn patch(&self, path: &str, offset: usize, bytes: &[u8]) -> reqwest::Response {
        self.request(reqwest::Method::PATCH, path)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn offset(&self, path: &str) -> (StatusCode, Option<usize>) {
        let response = self
            .request(reqwest::Method::HEAD, path)
            .send()
            .await
            .unwrap();
        let offset = response
            .headers()
            .get("upload-offset")
            .map(|v| v.to_str().unwrap().parse().unwrap());
        (response.status(), offset)
    }
}

/// The files (not folders: an S3 server's may stay behind empty) under `dir`, relative to it.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn id_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

/// Follows an upload until it ends: its last event.
async fn ended(app: &TestApp, id: &str) -> Value {
    let mut sub = app.subscribe(UPLOAD_EVENTS, json!({ "id": id })).await;
    let events = sub
        .collect_field_until_complete("uploadEvents", Duration::from_secs(60))
        .await;
    events.last().cloned().expect("at least the upload's state")
}

async fn the_tus_protocol_answers_as_its_spec_says(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let tus = Tus { app: &app };

    // What the server supports, without a token.
    let options = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/uploads"))
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    let h = options.headers();
    assert_eq!(h["tus-version"], "1.0.0");
    assert_eq!(h["tus-resumable"], "1.0.0");
    assert_eq!(
        h["tus-extension"],
        "creation,termination,checksum,expiration"
    );
    assert_eq!(h["tus-max-size"], app.config.max_upload_bytes.to_string());
    assert_eq!(h["tus-checksum-algorithm"], "sha1,sha256");

    // The token and the protocol version are required.
    let anonymous = app
        .client
        .post(app.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let unversioned = app
        .client
        .post(app.url("/uploads"))
        .bearer_auth(&app.token)
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(unversioned.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(unversioned.headers()["tus-version"], "1.0.0");

    // What the client declares is checked, naming what is wrong.
    let too_large = tus
        .create(app.config.max_upload_bytes as usize + 1, &[("name", "big")])
        .await;
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        too_large
            .text()
            .await
            .unwrap()
            .contains("KILN_MAX_UPLOAD_BYTES"),
        "the refusal names the limit"
    );
    let bad_format = tus
        .create(
            10,
            &[("name", "x"), ("filename", "x.txt"), ("format", "xml")],
        )
        .await;
    assert_eq!(bad_format.status(), StatusCode::BAD_REQUEST);
    let message = bad_format.text().await.unwrap();
    assert!(message.starts_with("Upload-Metadata.format:"), "{message}");
    let no_length = tus
        .request(reqwest::Method::POST, "/uploads")
        .send()
        .await
        .unwrap();
    assert_eq!(no_length.status(), StatusCode::BAD_REQUEST);
    assert_eq!(no_length.text().await.unwrap(), "Upload-Length is missing");

    // A file of two whole parts and a bit, sent in pieces that do not line up with the parts, half
    // to this kiln and half to another replica.
    let (file, rows) = text_file(2 * PART + 300_000);
    let path = tus.created(file.len(), "rows in pieces").await;
    let id = id_of(&path).to_string();
    assert_eq!(tus.offset(&path).await, (StatusCode::OK, Some(0)));

    let wrong_type = tus
        .request(reqwest::Method::PATCH, &path)
        .header("Content-Type", "application/octet-stream")
        .header("Upload-Offset", "0")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let first = 3 * 1024 * 1024 + 17;
    let response = tus.patch(&path, 0, &file[..first]).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers()["upload-offset"], first.to_string());
    assert_eq!(response.headers()["tus-resumable"], "1.0.0");

    // At the wrong offset: 409, saying where it is.
    let behind = tus.patch(&path, 0, &file[..100]).await;
    assert_eq!(behind.status(), StatusCode::CONFLICT);
    assert!(
        behind
            .text()
            .await
            .unwrap()
            .contains(&format!("send from Upload-Offset {first}"))
    );

    // A checksum that does not match keeps nothing; one that does is taken.
    let second = first + 3 * 1024 * 1024;
    let wrong = tus
        .request(reqwest::Method::PATCH, &path)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", first.to_string())
        .header(
            "Upload-Checksum",
            format!("sha1 {}", b64("not the digest of these bytes")),
        )
        .body(file[first..second].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 460);
    assert_eq!(tus.offset(&path).await.1, Some(first));
    let digest =
        base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(&file[first..second]));
    let checked = tus
        .request(reqwest::Method::PATCH, &path)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", first.to_string())
        .header("Upload-Checksum", format!("sha1 {digest}"))
        .body(file[first..second].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(checked.status(), StatusCode::NO_CONTENT);

    // The API shows how far it is.
    let seen = app.data(UPLOAD, json!({ "id": id })).await;
    let upload = &seen["upload"];
    assert_eq!(upload["offset"], second);
    assert_eq!(upload["length"], file.len());
    assert_eq!(upload["status"], "RECEIVING");
    assert_eq!(upload["url"], path);
    assert_eq!(upload["format"], "JSONL");
    assert_eq!(upload["dataset"], Value::Null);

    // The rest goes through another replica; more than the declared length is refused first.
    let replica = app.replica().await;
    let other = Tus { app: &replica };
    assert_eq!(other.offset(&path).await.1, Some(second));
    let mut past = file[second..].to_vec();
    past.extend_from_slice(b"{\"text\": \"one row too many\", \"label\": \"benign\"}\n");
    let too_much = other.patch(&path, second, &past).await;
    assert_eq!(too_much.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(other.offset(&path).await.1, Some(second));
    let last = other.patch(&path, second, &file[second..]).await;
    assert_eq!(
        last.status(),
        StatusCode::NO_CONTENT,
        "{:?}",
        last.text().await
    );

    let end = ended(&replica, &id).await;
    assert_eq!(end["status"], "DONE", "{end}");
    assert_eq!(end["offset"], file.len());
    let dataset = &end["dataset"];
    assert_eq!(dataset["status"], "READY", "{end}");
    assert_eq!(dataset["rowCount"], rows);
    assert_eq!(dataset["sha256"], hex::encode(Sha256::digest(&file)));
    assert_eq!(dataset["id"], id, "the dataset takes the upload's id");
    let stored = app.stored_dataset(&id, kiln::domain::DatasetFormat::Jsonl);
    assert!(stored == file, "the stored file is the file sent");
    // Nothing of the staging is left beside it: the file, and the keys of its rows (overlapWith).
    let folder = app.object_root().join("datasets").join(&id);
    assert_eq!(
        files_under(&folder),
        vec!["data.jsonl".to_string(), "row-keys".to_string()]
    );
    // A finished upload takes no more bytes and answers its full offset.
    assert_eq!(tus.offset(&path).await, (StatusCode::OK, Some(file.len())));
    assert_eq!(
        tus.patch(&path, file.len(), b"x").await.status(),
        StatusCode::CONFLICT
    );

    // Termination of an unfinished upload removes it and its bytes.
    let dropped = tus.created(file.len(), "dropped").await;
    assert_eq!(
        tus.patch(&dropped, 0, &file[..PART + 10]).await.status(),
        StatusCode::NO_CONTENT
    );
    let response = tus
        .request(reqwest::Method::DELETE, &dropped)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(tus.offset(&dropped).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        files_under(&app.object_root().join("datasets").join(id_of(&dropped))),
        Vec::<String>::new(),
        "a terminated upload's bytes are removed"
    );
}

on_storage!(the_tus_protocol_answers_as_its_spec_says: sqlite_local, postgres_s3);

async fn an_unfinished_upload_expires_and_answers_gone(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let tus = Tus { app: &app };
    let (file, _) = text_file(PART + 1000);
    let path = tus.created(file.len(), "left unfinished").await;
    let id = id_of(&path).to_string();
    assert_eq!(
        tus.patch(&path, 0, &file[..PART + 10]).await.status(),
        StatusCode::NO_CONTENT
    );
    let folder = app.object_root().join("datasets").join(&id);
    assert!(!files_under(&folder).is_empty());

    // Its expiry passes (KILN_UPLOAD_EXPIRY_HOURS after its last bytes).
    execute_sql(
        &app,
        &format!("UPDATE uploads SET expires_at = 1 WHERE id = '{id}'"),
    )
    .await;
    assert_eq!(tus.offset(&path).await.0, StatusCode::GONE);
    let refused = tus.patch(&path, PART + 10, &file[PART + 10..]).await;
    assert_eq!(refused.status(), StatusCode::GONE);
    assert!(refused.text().await.unwrap().contains("expired"));

    let swept = app.kiln.service.sweep_debris().await.unwrap();
    assert_eq!(swept.expired_uploads, 1);
    assert_eq!(
        files_under(&folder),
        Vec::<String>::new(),
        "an expired upload's bytes are removed"
    );
    let seen = app.data(UPLOAD, json!({ "id": id })).await;
    assert_eq!(seen["upload"]["status"], "EXPIRED");
    assert_eq!(tus.offset(&path).await.0, StatusCode::GONE);
}

on_storage!(an_unfinished_upload_expires_and_answers_gone: sqlite_local, postgres_s3);

/// A link to kiln that carries what the client sends at about 4 MiB/s (answers at full speed), and
/// that the test can cut: every connection dropped, new ones refused.
struct SlowLink {
    url: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The tasks carrying each connection's two directions.
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    async fn to(kiln: std::net::SocketAddr) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_cut, all) = (cut.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if is_cut.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let Ok(outbound) = tokio::net::TcpStream::connect(kiln).await else {
                    continue;
                };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_kiln, mut to_kiln) = outbound.into_split();
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from_client.read(&mut buf).await {
                        if n == 0 || to_kiln.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                });
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_kiln, &mut to_client).await;
                });
                all.lock().unwrap().extend([up, down]);
            }
        });
        Self {
            url,
            cut,
            tasks,
            accept,
        }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Node.js and the installed tus-js-client, or `None` (having said why) when the test should skip.
fn tus_js_client() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/tus-upload.mjs");
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser/node_modules/tus-js-client")
        .exists();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed && node {
        return Some(script);
    }
    let what = "Node.js and tests/browser/node_modules/tus-js-client (npm ci in tests/browser)";
    if std::env::var_os("KILN_TEST_REQUIRE_TOOLS").is_some() {
        panic!("the tus client test needs {what}: run scripts/test");
    }
    eprintln!("skipping the tus client test: it needs {what}");
    None
}

/// Runs the tus-js-client script against `app`: the JSON lines it printed.
async fn run_client(
    script: &Path,
    app: &TestApp,
    file: &Path,
    extra: &[(&str, String)],
) -> Vec<Value> {
    let output = tokio::process::Command::new("node")
        .arg(script)
        .env("KILN_URL", &app.base)
        .env("KILN_TOKEN", &app.token)
        .env("FILE", file)
        .envs(extra.iter().map(|(k, v)| (k, v.as_str())))
        .output()
        .await
        .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        output.status.success(),
        "tus-js-client failed: {lines:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    lines
}

async fn a_stock_tus_client_resumes_after_a_restart_and_the_same_bytes_make_one_dataset(
    db: Db,
    objects: Objects,
) {
    let Some(script) = tus_js_client() else {
        return;
    };
    let app = spawn_app(db, objects).await;
    let (file, rows) = text_file(2 * PART + 123_456);
    let path = app.dir.path().join("prompts.jsonl");
    std::fs::write(&path, &file).unwrap();

    // The client sends the whole file in one request over a slow link, which is cut in the middle of
    // it (and the client dies with it).
    let link = SlowLink::to(app.addr).await;
    let mut client = tokio::process::Command::new("node")
        .arg(&script)
        .env("KILN_URL", &link.url)
        .env("KILN_TOKEN", &app.token)
        .env("FILE", &path)
        .env("NAME", "prompts")
        .env("CHUNK_BYTES", (64 * 1024 * 1024).to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(client.stdout.take().unwrap()));
    let created = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the client creates an upload")
        .unwrap()
        .expect("a line");
    let created: Value = serde_json::from_str(&created).unwrap();
    let id = id_of(created["created"].as_str().expect("created")).to_string();
    let mut sub = app.subscribe(UPLOAD_EVENTS, json!({ "id": id })).await;
    loop {
        let crate::helpers::WsMessage::Next(payload) = sub.next(Duration::from_secs(30)).await
        else {
            panic!("the upload's events ended early");
        };
        let offset = payload["data"]["uploadEvents"]["offset"].as_i64().unwrap();
        if offset >= (PART + PART / 2) as i64 {
            break;
        }
    }
    link.cut();
    client.kill().await.unwrap();

    // The bytes that arrived before the cut are kept.
    crate::helpers::eventually(
        Duration::from_secs(30),
        "the cut-off bytes are stored",
        || {
            let app = &app;
            let id = id.clone();
            async move {
                let seen = app.data(UPLOAD, json!({ "id": id })).await;
                seen["upload"]["offset"].as_i64().unwrap() > 0
            }
        },
    )
    .await;
    let seen = app.data(UPLOAD, json!({ "id": id })).await;
    let stored = seen["upload"]["offset"].as_i64().unwrap();
    assert!(
        stored >= (PART + PART / 2) as i64 && stored < file.len() as i64,
        "{seen}"
    );

    // kiln restarts; the client resumes where the server says it is, and finishes.
    let app = app.restart().await;
    let lines = run_client(
        &script,
        &app,
        &path,
        &[
            ("UPLOAD_URL", format!("{}/uploads/{id}", app.base)),
            ("CHUNK_BYTES", (2 * 1024 * 1024).to_string()),
        ],
    )
    .await;
    assert!(lines.iter().any(|l| l.get("done").is_some()), "{lines:?}");
    let first_ack = lines
        .iter()
        .find_map(|l| l["progress"].as_i64())
        .expect("progress");
    assert!(
        first_ack > stored,
        "the client went on from the stored offset {stored} (first acknowledged {first_ack})"
    );
    assert!(first_ack <= stored + 2 * 1024 * 1024);

    let end = ended(&app, &id).await;
    assert_eq!(end["status"], "DONE", "{end}");
    assert_eq!(end["dataset"]["status"], "READY");
    assert_eq!(end["dataset"]["rowCount"], rows);
    assert_eq!(end["dataset"]["sha256"], hex::encode(Sha256::digest(&file)));
    let dataset_id = end["dataset"]["id"].as_str().unwrap().to_string();

    // The same bytes again, by tus and by uploadDataset: the same dataset, nothing stored twice.
    let lines = run_client(&script, &app, &path, &[("NAME", "prompts again".into())]).await;
    let again = id_of(lines.iter().find_map(|l| l["done"].as_str()).unwrap()).to_string();
    let end = ended(&app, &again).await;
    assert_eq!(end["status"], "DONE");
    assert_eq!(end["dataset"]["id"], dataset_id);
    assert_eq!(
        files_under(&app.object_root().join("datasets").join(&again)),
        Vec::<String>::new(),
        "the repeated upload's bytes are removed"
    );
    let body = app
        .upload(
            "prompts once more",
            "prompts.jsonl",
            file.clone(),
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["uploadDataset"]["id"], dataset_id, "{body}");
    let count = app.data("{ datasets { totalCount } }", json!({})).await;
    assert_eq!(count["datasets"]["totalCount"], 1);
}

on_storage!(
    a_stock_tus_client_resumes_after_a_restart_and_the_same_bytes_make_one_dataset: sqlite_local,
    postgres_s3
);

#[tokio::test]
async fn a_file_past_the_upload_limit_is_refused_as_too_large_both_ways() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let mut config = app.config.clone();
    config.max_upload_bytes = 1000;
    let app = app.restart_with(config).await;
    let (file, _) = text_file(2000);

    let body = app
        .upload("big", "big.jsonl", file.clone(), json!({}))
        .await;
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "PAYLOAD_TOO_LARGE", "{body}");
    assert_eq!(error["extensions"]["field"], "file");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("larger than the limit of 1000 bytes")
    );

    let tus = Tus { app: &app };
    let refused = tus.create(file.len(), &[("name", "big")]).await;
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        refused.text().await.unwrap(),
        format!(
            "Upload-Length: {} bytes is more than the limit of 1000 bytes (KILN_MAX_UPLOAD_BYTES)",
            file.len()
        )
    );
    let count = app.data("{ datasets { totalCount } }", json!({})).await;
    assert_eq!(count["datasets"]["totalCount"], 0, "nothing was stored");
}
