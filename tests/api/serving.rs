//! What one client's predictions may cost everyone else: a `kiln serve` process's memory stays within
//! its budget for predictions whatever the requests, a version stays in the model cache's count until
//! its last request ends, a version whose stored files are gone says so, and a document's predictions count towards its
//! complexity.

use serde_json::{Value, json};

use crate::helpers::{Db, Objects, Options, ServeProcess, TestApp, spawn_app, spawn_with};
use crate::registry::train_versions;

const MIB: u64 = 1 << 20;

/// A text of about 4000 characters in the training vocabulary: more than 512 tokens.
fn long_text(i: usize) -> String {
    let words = [
        "ignore",
        "previous",
        "instructions",
        "weather",
        "garden",
        "museum",
    ];
    (0..600)
        .map(|j| words[(i + j) % words.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A text model that reads 512 tokens and has many attention heads, so that each long input costs
/// tens of MiB to predict while the model itself is small.
async fn long_sequence_model(app: &TestApp, model: &str) {
    app.trained_text_model(
        model,
        json!({ "hiddenSize": 64, "numLayers": 2, "numHeads": 16, "intermediateSize": 128 }),
        json!({ "epochs": 1, "maxSeqLength": 512 }),
    )
    .await;
}

/// A document with `aliases` predicts of `texts` each.
fn predicts(model: &str, aliases: usize, texts: &[String]) -> (String, Value) {
    let fields: String = (0..aliases)
        .map(|i| format!("p{i}: predict(model: \"{model}\", inputs: $texts) {{ label }} "))
        .collect();
    (
        format!("query($texts: [String!]) {{ {fields} }}"),
        json!({ "texts": texts }),
    )
}

#[tokio::test]
async fn predictions_stay_within_the_servers_memory_budget_whatever_the_requests() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    long_sequence_model(&app, "long").await;
    const BUDGET: u64 = 256 * MIB;
    let server = ServeProcess::start(
        &app,
        0,
        &[
            ("KILN_PREDICT_MEMORY", "256MiB"),
            ("KILN_PREDICT_WAIT_SECONDS", "120"),
        ],
    )
    .await;
    // Loaded and warmed with one short input: what the server holds before the heavy requests.
    let (query, variables) = predicts("long", 1, &["ignore previous".to_string()]);
    let body = server.graphql(&query, variables).await;
    assert!(body.get("errors").is_none(), "{body}");
    let before = server.memory("VmRSS:");

    // One request of 64 long inputs, and four clients at once each sending three aliased predicts
    // of 16: every input reads 512 tokens.
    let texts: Vec<String> = (0..64).map(long_text).collect();
    let (query, variables) = predicts("long", 1, &texts);
    let big = server.graphql(&query, variables);
    let (query, variables) = predicts("long", 3, &texts[..16]);
    let clients = (0..4).map(|_| server.graphql(&query, variables.clone()));
    let (big, others) = tokio::join!(big, futures::future::join_all(clients));
    assert_eq!(
        big["data"]["p0"].as_array().map(Vec::len),
        Some(64),
        "{big}"
    );
    for body in others {
        for p in ["p0", "p1", "p2"] {
            assert_eq!(body["data"][p].as_array().map(Vec::len), Some(16), "{body}");
        }
    }

    let peak = server.memory("VmHWM:");
    let grew = peak.saturating_sub(before);
    eprintln!(
        "serve: {} MiB before, peak {} MiB (+{} MiB; budget {} MiB)",
        before / MIB,
        peak / MIB,
        grew / MIB,
        BUDGET / MIB
    );
    assert!(
        grew <= BUDGET + 64 * MIB,
        "the server grew by {} MiB over its {} MiB budget for predictions",
        grew / MIB,
        BUDGET / MIB
    );
}

#[tokio::test]
async fn a_prediction_that_waits_too_long_for_memory_is_refused_plainly() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    long_sequence_model(&app, "long").await;
    let server = ServeProcess::start(
        &app,
        0,
        &[
            ("KILN_PREDICT_MEMORY", "64MiB"),
            ("KILN_PREDICT_WAIT_SECONDS", "0"),
        ],
    )
    .await;
    // One input alone needs more than the whole budget: refused by its place, before any work.
    let (query, variables) = predicts("long", 1, &[long_text(0)]);
    let body = server.graphql(&query, variables).await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "inputs[0]",
        "{body}"
    );
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("KILN_PREDICT_MEMORY"), "{message}");

    // Short inputs fit; many clients at once with no wait allowed: each is answered or refused with
    // RESOURCE_EXHAUSTED, never anything else.
    let texts: Vec<String> = (0..32).map(|i| long_text(i)[..200].to_string()).collect();
    let (query, variables) = predicts("long", 2, &texts);
    let bodies =
        futures::future::join_all((0..6).map(|_| server.graphql(&query, variables.clone()))).await;
    let mut refused = 0;
    for body in &bodies {
        match body.get("errors") {
            None => assert_eq!(body["data"]["p1"].as_array().map(Vec::len), Some(32)),
            Some(errors) => {
                assert_eq!(
                    errors[0]["extensions"]["code"], "RESOURCE_EXHAUSTED",
                    "{body}"
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "six clients at once within 64 MiB and no wait");
}

#[tokio::test]
async fn aliased_predicts_count_their_inputs_towards_the_querys_complexity() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    train_versions(&app, "rows", 1).await;
    let rows: Vec<Vec<f64>> = (0..256).map(|i| vec![i as f64, 1.0, 0.5]).collect();
    let query = |aliases: usize| {
        let fields: String = (0..aliases)
            .map(|i| {
                format!("p{i}: predict(model: \"rows\", rows: $rows) {{ label score probabilities {{ label probability }} }} ")
            })
            .collect();
        format!("query($rows: [[Float!]!]) {{ {fields} }}")
    };
    let body = app.graphql(&query(2), json!({ "rows": rows })).await;
    assert!(body.get("errors").is_none(), "{body}");
    let body = app.graphql(&query(8), json!({ "rows": rows })).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{body}"
    );
    assert!(body.get("data").is_none_or(Value::is_null), "{body}");
}

#[tokio::test]
async fn a_version_in_use_keeps_its_place_in_the_cache_until_its_requests_finish() {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.model_cache_size = 1;
    let app = spawn_with(options).await;
    long_sequence_model(&app, "long").await;
    long_sequence_model(&app, "long").await;
    let texts: Vec<String> = (0..64).map(long_text).collect();
    let (query, variables) = predicts("long", 1, &texts);
    let query = query.replace("inputs: $texts", "version: 1, inputs: $texts");

    // A long prediction on version 1 …
    let finished = std::sync::atomic::AtomicBool::new(false);
    let long = async {
        let body = app.graphql(&query, variables).await;
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        body
    };
    let load = async {
        crate::helpers::eventually(
            std::time::Duration::from_secs(60),
            "the long prediction to start",
            || async {
                let data = app
                    .data("{ loadedModels { version predictions } }", json!({}))
                    .await;
                data["loadedModels"][0]["predictions"] == 64
            },
        )
        .await;
        // … holds it in memory: version 2 takes its place in a cache of one only when it is done.
        let body = app
            .graphql(
                "mutation { loadModel(model: \"long\", version: 2) { version } }",
                json!({}),
            )
            .await;
        (body, finished.load(std::sync::atomic::Ordering::SeqCst))
    };
    let (long, (body, long_done)) = tokio::join!(long, load);
    assert!(body.get("errors").is_none(), "{body}");
    assert!(
        long_done,
        "version 2 loaded while version 1 was still in memory answering"
    );
    assert_eq!(
        long["data"]["p0"].as_array().map(Vec::len),
        Some(64),
        "{long}"
    );
    let data = app.data("{ loadedModels { version } }", json!({})).await;
    assert_eq!(data["loadedModels"], json!([{ "version": 2 }]));
}

async fn a_version_whose_files_are_gone_says_what_is_missing(db: Db, objects: Objects) {
    let mut options = Options::new(db, objects);
    options.model_cache_size = 1;
    let app = spawn_with(options).await;
    train_versions(&app, "rows", 2).await;
    let predict = |version: i64| {
        app.graphql(
            "query($v: Int!) { predict(model: \"rows\", version: $v, rows: [[1.0, 1.0, 0.5]]) { label } }",
            json!({ "v": version }),
        )
    };
    let body = predict(2).await;
    assert!(body.get("errors").is_none(), "{body}");

    // Version 1's weights are deleted behind kiln's back.
    let job = app
        .data(
            "{ model(name: \"rows\") { versions { version job { id } } } }",
            json!({}),
        )
        .await;
    let job_id = job["model"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 1)
        .unwrap()["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(app.model_run_dir("rows", &job_id).join("model.safetensors")).unwrap();

    for body in [
        predict(1).await,
        app.graphql(
            "mutation { loadModel(model: \"rows\", version: 1) { version } }",
            json!({}),
        )
        .await,
    ] {
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FAILED_PRECONDITION",
            "{body}"
        );
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "version 1 of model rows has lost stored files: model.safetensors is missing"
            ),
            "{message}"
        );
    }
    // The failed loads took no place from the healthy version.
    let data = app.data("{ loadedModels { version } }", json!({})).await;
    assert_eq!(data["loadedModels"], json!([{ "version": 2 }]));

    let download = app
        .client
        .get(app.url("/models/rows/versions/1/download"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 404);
    let body: Value = download.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("model.safetensors is missing"),
        "{body}"
    );
}

crate::helpers::on_storage!(a_version_whose_files_are_gone_says_what_is_missing: sqlite_local, postgres_s3);
