//! Several kiln processes on one Postgres, one object store and one Redis: the production profile.

use std::time::Duration;

use kiln::domain::JobStatus;
use kiln::runner::Outcome;
use serde_json::json;

use crate::helpers::{
    Db, Objects, Options, WsMessage, epochs, separable_text_jsonl, spawn_with, statuses,
};

fn replicated() -> Options {
    let mut options = Options::new(Db::Postgres, Objects::S3);
    options.redis = true;
    options
}

#[tokio::test]
async fn a_subscriber_on_one_replica_follows_a_job_trained_on_another() {
    let api = spawn_with(replicated()).await;
    let trainer = api.replica().await;
    let dataset = api
        .ready_dataset("d.jsonl", separable_text_jsonl(60, 8))
        .await;
    let job_id = api
        .queued_job(
            json!({ "name": "remote", "modelName": "remote", "task": "TEXT_CLASSIFICATION",
            "datasetId": dataset, "hyperparameters": { "epochs": 3, "maxSeqLength": 16 } }),
        )
        .await;
    let mut sub = api.subscribe_job(&job_id).await;
    let WsMessage::Next(first) = sub.next(Duration::from_secs(10)).await else {
        panic!("no status")
    };
    assert_eq!(first["data"]["jobEvents"]["status"], "QUEUED");

    assert_eq!(
        trainer.run_next_job().await,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Completed
        }
    );

    let events = sub.collect_until_complete(Duration::from_secs(20)).await;
    assert_eq!(statuses(&events), vec!["RUNNING", "COMPLETED"]);
    assert_eq!(epochs(&events), vec![1, 2, 3]);
}

#[tokio::test]
async fn cancelling_on_one_replica_stops_the_job_running_on_another_at_once() {
    let mut options = replicated();
    // A heartbeat every 20 s: a prompt stop can only come through the event bus.
    options.lease_seconds = 60;
    let api = spawn_with(options).await;
    let trainer = api.replica().await;
    let dataset = api
        .ready_dataset("d.jsonl", separable_text_jsonl(100, 8))
        .await;
    let job_id = api
        .queued_job(json!({ "name": "long", "modelName": "long", "task": "TEXT_CLASSIFICATION",
            "datasetId": dataset, "hyperparameters": { "epochs": 500, "batchSize": 4, "maxSeqLength": 16 } }))
        .await;
    let running = trainer.run_next_job_in_background();
    api.wait_until_training(&job_id).await;

    api.data(
        "mutation($id: ID!) { cancelJob(id: $id) { status } }",
        json!({ "id": job_id }),
    )
    .await;

    let outcome = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stopped before a heartbeat");
    assert_eq!(
        outcome.unwrap(),
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Cancelled
        }
    );
}
