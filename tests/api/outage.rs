//! The database going away for a while: requests fail fast, cached tokens keep working, /readyz says so
//! at once, and a training job keeps its progress and finishes.

use std::time::{Duration, Instant};

use kiln::domain::JobStatus;
use kiln::runner::Outcome;
use serde_json::json;

use crate::helpers::{Db, Objects, Options, eventually, long_text_jsonl, spawn_with};

#[tokio::test]
async fn a_database_outage_fails_requests_fast_keeps_cached_tokens_and_loses_no_training() {
    let mut options = Options::new(Db::Postgres, Objects::Local);
    options.db_proxy = true;
    options.token_cache_seconds = 1;
    let app = spawn_with(options).await;
    let proxy = app.db_proxy.clone().unwrap();
    let dataset = app.ready_dataset("d.jsonl", long_text_jsonl(160)).await;
    let job_id = app
        .queued_job(json!({ "name": "through", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "modelConfig": { "hiddenSize": 128, "numLayers": 2, "numHeads": 2, "intermediateSize": 256 },
            "hyperparameters": { "epochs": 8, "batchSize": 16, "maxSeqLength": 64 } }))
        .await;
    let worker = app.run_next_job_in_background();
    eventually(Duration::from_secs(60), "two finished epochs", || async {
        app.job(&job_id).await["epochs"]
            .as_array()
            .is_some_and(|e| e.len() >= 2)
    })
    .await;
    assert!(app.data("{ me { name } }", json!({})).await["me"].is_object());
    // The cached token is no longer fresh: it would be checked against the database.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    proxy.cut();
    let cut_at = Instant::now();

    let me = app.graphql("{ me { name } }", json!({})).await;
    assert!(
        me.get("errors").is_none(),
        "a known token still works: {me}"
    );
    let started = Instant::now();
    let listing = app.graphql("{ jobs { totalCount } }", json!({})).await;
    assert_eq!(
        listing["errors"][0]["extensions"]["code"], "UNAVAILABLE",
        "{listing}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a request while the database is known down fails at once ({:?})",
        started.elapsed()
    );
    let started = Instant::now();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(3));
    // It says which dependency is down, and that the others answer.
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "not ready", "{body}");
    assert_eq!(body["checks"][0]["name"], "database", "{body}");
    assert_eq!(body["checks"][0]["ok"], false, "{body}");
    assert!(
        body["checks"][0]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(body["checks"][1]["name"], "objectStore", "{body}");
    assert_eq!(body["checks"][1]["ok"], true, "{body}");
    let remaining = Duration::from_secs(5).saturating_sub(cut_at.elapsed());
    tokio::time::sleep(remaining).await;
    proxy.restore();

    let outcome = tokio::time::timeout(Duration::from_secs(120), worker)
        .await
        .expect("the job finishes")
        .unwrap();

    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Completed
        }
    );
    let job = app.job(&job_id).await;
    assert_eq!(job["attempts"], 1, "the job was not started again");
    let epochs: Vec<i64> = job["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs, (1..=8).collect::<Vec<_>>(), "no epoch was lost");
    assert_eq!(job["modelVersion"]["version"], 1);
}
