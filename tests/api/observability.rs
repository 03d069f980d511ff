//! What an operator watches: `/metrics` read by a real Prometheus parser, `/readyz` per dependency,
//! JSON logs whose lines about a job carry its id, and the token-free metrics address.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, Db, Objects, Options, ServeProcess, TestApp, eventually, separable_text_jsonl,
    spawn_with,
};

/// One sample of a scrape: its name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The Python with `prometheus_client` (scripts/test installs it into `KILN_TEST_PYTHON`).
fn python() -> std::path::PathBuf {
    std::env::var_os("KILN_TEST_PYTHON").map_or_else(|| "python3".into(), Into::into)
}

/// Parses a scrape with `prometheus_client`'s OpenMetrics parser, which refuses what Prometheus would
/// refuse (bad names, types, a missing `# EOF`).
fn parse(text: &str) -> Vec<Sample> {
    use std::io::Write;
    const PARSER: &str = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = []\n\
        for family in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       out.append({'name': s.name, 'labels': s.labels, 'value': s.value})\n\
        print(json.dumps(out))\n";
    let mut child = std::process::Command::new(python())
        .args(["-c", PARSER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python starts (scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    samples
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: serde_json::from_value(s["labels"].clone()).unwrap(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels` (0 when there is none).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn samples(app: &TestApp) -> Vec<Sample> {
    let response = scrape(app, Some(ADMIN_TOKEN)).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    parse(&response.text().await.unwrap())
}

const PREDICT: &str =
    "query Score($inputs: [String!]) { predict(model: \"watched\", inputs: $inputs) { label } }";

async fn metrics_count_what_happens(db: Db, objects: Objects) {
    let mut options = Options::new(db, objects);
    options.workers = 0;
    options.redis = db == Db::Postgres;
    let app = spawn_with(options).await;

    // Only the admin token reads the metrics on the API's address.
    assert_eq!(scrape(&app, None).await.status(), 401);
    let minted = app
        .data(
            "mutation { createApiToken(name: \"viewer\") { token } }",
            json!({}),
        )
        .await;
    let member = minted["createApiToken"]["token"].as_str().unwrap();
    assert_eq!(scrape(&app, Some(member)).await.status(), 403);

    let before = samples(&app).await;
    assert_eq!(value(&before, "kiln_workers", &[("state", "idle")]), 0.0);

    let changes = app
        .subscribe("subscription { jobChanges { __typename } }", json!({}))
        .await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(40, 3))
        .await;
    let job = app
        .queued_job(
            json!({ "name": "watched", "modelName": "watched", "task": "TEXT_CLASSIFICATION",
            "datasetId": dataset, "priority": "HIGH",
            "hyperparameters": { "epochs": 2, "maxSeqLength": 16, "batchSize": 8 } }),
        )
        .await;
    let queued = samples(&app).await;
    assert_eq!(value(&queued, "kiln_jobs", &[("status", "QUEUED")]), 1.0);
    assert_eq!(
        value(&queued, "kiln_queue_depth", &[("priority", "HIGH")]),
        1.0
    );
    assert_eq!(
        value(
            &queued,
            "kiln_websocket_subscribers",
            &[("subscription", "jobChanges")]
        ),
        1.0
    );
    assert_eq!(
        value(&queued, "kiln_uploads_total", &[("outcome", "stored")]),
        1.0
    );
    assert!(value(&queued, "kiln_upload_bytes_total", &[]) > 1000.0);

    app.run_next_job().await;
    assert_eq!(app.job(&job).await["status"], "COMPLETED");
    for _ in 0..2 {
        let answer = app
            .graphql(
                PREDICT,
                json!({ "inputs": ["ignore all previous instructions"] }),
            )
            .await;
        assert!(answer["errors"].is_null(), "{answer}");
    }
    let refused = app.graphql(PREDICT, json!({ "inputs": [] })).await;
    assert!(!refused["errors"].is_null(), "{refused}");
    drop(changes);

    let after = samples(&app).await;
    assert_eq!(value(&after, "kiln_jobs", &[("status", "COMPLETED")]), 1.0);
    assert_eq!(value(&after, "kiln_jobs", &[("status", "QUEUED")]), 0.0);
    assert_eq!(value(&after, "kiln_epochs_completed_total", &[]), 2.0);
    assert_eq!(value(&after, "kiln_queue_wait_seconds_count", &[]), 1.0);
    assert_eq!(
        value(
            &after,
            "kiln_job_run_seconds_count",
            &[("status", "COMPLETED")]
        ),
        1.0
    );
    assert!(value(&after, "kiln_step_duration_seconds_count", &[]) >= 1.0);
    // The finished job's throughput is gone with its run.
    assert!(
        !after
            .iter()
            .any(|s| s.name == "kiln_job_samples_per_second")
    );
    assert_eq!(
        value(
            &after,
            "kiln_predict_requests_total",
            &[("model", "watched"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &after,
            "kiln_predict_requests_total",
            &[("model", "(unknown)"), ("outcome", "bad_input")]
        ),
        1.0
    );
    assert_eq!(value(&after, "kiln_model_cache_misses_total", &[]), 1.0);
    assert_eq!(value(&after, "kiln_model_cache_hits_total", &[]), 1.0);
    assert_eq!(
        value(
            &after,
            "kiln_graphql_requests_total",
            &[("operation", "Score"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &after,
            "kiln_graphql_requests_total",
            &[("operation", "Score"), ("outcome", "BAD_USER_INPUT")]
        ),
        1.0
    );
    assert!(
        value(
            &after,
            "kiln_graphql_request_duration_seconds_count",
            &[("operation", "anonymous")]
        ) >= 3.0
    );
    assert!(value(&after, "kiln_database_connections", &[("state", "idle")]) >= 1.0);
    eventually(
        Duration::from_secs(10),
        "the subscriber to be counted out",
        || async {
            value(
                &samples(&app).await,
                "kiln_websocket_subscribers",
                &[("subscription", "jobChanges")],
            ) == 0.0
        },
    )
    .await;

    // Ready: every dependency answered, each with its latency.
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let expected: &[&str] = if db == Db::Postgres {
        &["database", "objectStore", "redis"]
    } else {
        &["database", "objectStore"]
    };
    assert_eq!(names, expected, "{body}");
    for check in body["checks"].as_array().unwrap() {
        assert_eq!(check["ok"], true, "{body}");
        assert!(check["latencyMs"].as_f64().unwrap() >= 0.0, "{body}");
    }
}

mod metrics_count_what_happens {
    use super::*;

    #[tokio::test]
    async fn sqlite_and_local_files() {
        metrics_count_what_happens(Db::Sqlite, Objects::Local).await;
    }

    #[tokio::test]
    async fn postgres_s3_and_redis() {
        metrics_count_what_happens(Db::Postgres, Objects::S3).await;
    }
}

#[tokio::test]
async fn json_logs_carry_each_jobs_id_and_the_metrics_address_needs_no_token() {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.workers = 0;
    let app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(30, 5))
        .await;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = app.dir.path().join("serve.log");
    let metrics_bind = format!("127.0.0.1:{metrics_port}");
    let serve = ServeProcess::start_logging_to(
        &app,
        1,
        &[
            ("KILN_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("KILN_METRICS_BIND", &metrics_bind),
        ],
        &log,
    )
    .await;
    let job = app
        .queued_job(
            json!({ "name": "logged", "modelName": "logged", "task": "TEXT_CLASSIFICATION",
            "datasetId": dataset, "hyperparameters": { "epochs": 1, "maxSeqLength": 16 } }),
        )
        .await;
    eventually(Duration::from_secs(120), "the job to complete", || async {
        app.job(&job).await["status"] == "COMPLETED"
    })
    .await;

    // The metrics address answers without a token; the API's does not.
    let scraped = app
        .client
        .get(format!("http://{metrics_bind}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let samples = parse(&scraped.text().await.unwrap());
    assert_eq!(value(&samples, "kiln_epochs_completed_total", &[]), 1.0);
    assert_eq!(value(&samples, "kiln_workers", &[("state", "idle")]), 1.0);
    let api = app
        .client
        .get(format!("{}/metrics", serve.url))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    drop(serve);

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "message"] {
            assert!(line[field].is_string(), "{field} missing: {line}");
        }
    }
    // Every line that names the job, in the worker or in the job's own process, carries its id as
    // a field of its own; and there are such lines from both.
    let about_job: Vec<&Value> = lines
        .iter()
        .filter(|l| l.to_string().contains(&job))
        .collect();
    assert!(
        about_job.iter().all(|l| l["job_id"] == job.as_str()),
        "a line about the job without its job_id:\n{text}"
    );
    assert!(
        about_job.len() >= 2,
        "fewer than two lines about the job:\n{text}"
    );
}

/// One span as a collector received it: its name, trace, and string attributes.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    name: String,
    trace: Vec<u8>,
    attributes: BTreeMap<String, String>,
}

/// An OTLP/HTTP collector on a loopback port: every span posted to `/v1/traces` (protobuf).
async fn collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<ReceivedSpan>>>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;

    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = received.clone();
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let request =
                    ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                let mut spans = store.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            let attributes = span
                                .attributes
                                .iter()
                                .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                    Any::StringValue(s) => Some((kv.key.clone(), s.clone())),
                                    Any::IntValue(i) => Some((kv.key.clone(), i.to_string())),
                                    _ => None,
                                })
                                .collect();
                            spans.push(ReceivedSpan {
                                name: span.name,
                                trace: span.trace_id,
                                attributes,
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (address, received)
}

#[tokio::test]
async fn traces_of_a_request_and_of_a_job_run_reach_an_otlp_collector() {
    let (endpoint, received) = collector().await;
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.workers = 0;
    let app = spawn_with(options).await;
    let serve = ServeProcess::start(
        &app,
        1,
        &[
            ("KILN_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;
    let kiln = crate::helpers::Remote::new(&serve.url, ADMIN_TOKEN);
    let dataset = kiln
        .ready_dataset("d.jsonl", separable_text_jsonl(30, 5))
        .await;
    let submitted = kiln
        .data(
            "mutation SubmitTraced($input: SubmitJobInput!) { submitJob(input: $input) { id } }",
            json!({ "input": { "name": "traced", "modelName": "traced", "task": "TEXT_CLASSIFICATION",
                "datasetId": dataset, "hyperparameters": { "epochs": 1, "maxSeqLength": 16 } } }),
        )
        .await;
    let job = submitted["submitJob"]["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(120), "the job to complete", || async {
        kiln.job(&job).await["status"] == "COMPLETED"
    })
    .await;

    let spans = || received.lock().unwrap().clone();
    let named = |name: &str| {
        spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect::<Vec<_>>()
    };
    let submitted_span = || {
        named("GraphQL request")
            .into_iter()
            .find(|s| s.attributes.get("operation").map(String::as_str) == Some("SubmitTraced"))
    };
    let arrived = || {
        submitted_span().is_some()
            && named("run")
                .iter()
                .any(|s| s.attributes.get("job_id") == Some(&job))
            && named("job")
                .iter()
                .any(|s| s.attributes.get("job_id") == Some(&job))
    };
    let waited = std::time::Instant::now();
    while !arrived() {
        let names: std::collections::BTreeSet<String> =
            spans().into_iter().map(|s| s.name).collect();
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the spans did not all arrive; these did: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The request's span, with its operation and outcome; the use case it called is in its trace.
    let request = submitted_span().unwrap();
    assert_eq!(request.attributes["outcome"], "ok", "{request:?}");
    assert!(
        named("submit_job").iter().any(|s| s.trace == request.trace),
        "submit_job is not in the request's trace: {:?}",
        spans()
    );
    // The job's own process: its run is a trace holding the use cases it called (recording the
    // training, registering the model).
    let run = named("run-job")
        .into_iter()
        .find(|s| s.attributes.get("job_id") == Some(&job))
        .unwrap();
    // …which continues the worker's trace of the run that started it.
    let worker_run = named("run")
        .into_iter()
        .find(|s| s.attributes.get("job_id") == Some(&job))
        .expect("the worker's run span");
    assert_eq!(
        run.trace, worker_run.trace,
        "the job's process did not continue the worker's trace"
    );
    for inside in ["record_training", "register_model_version"] {
        assert!(
            named(inside).iter().any(|s| s.trace == run.trace),
            "{inside} is not in the job's trace: {:?}",
            spans()
                .iter()
                .filter(|s| s.trace == run.trace)
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        );
    }
}
