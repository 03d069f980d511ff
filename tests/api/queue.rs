use std::time::Duration;

use kiln::domain::JobStatus;
use kiln::runner::Outcome;
use serde_json::json;

use crate::helpers::{
    Db, Objects, Options, eventually, separable_text_jsonl, spawn_app, spawn_with,
};

fn quick_job(dataset: &str, name: &str, priority: &str) -> serde_json::Value {
    json!({ "name": name, "modelName": "q", "task": "TEXT_CLASSIFICATION", "datasetId": dataset, "priority": priority,
            "hyperparameters": { "epochs": 1, "maxSeqLength": 16 } })
}

#[tokio::test]
async fn workers_take_the_highest_priority_then_the_oldest_job() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    let low = app.queued_job(quick_job(&dataset, "low", "LOW")).await;
    let normal_old = app
        .queued_job(quick_job(&dataset, "normal old", "NORMAL"))
        .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let normal_new = app
        .queued_job(quick_job(&dataset, "normal new", "NORMAL"))
        .await;
    let urgent = app
        .queued_job(quick_job(&dataset, "urgent", "URGENT"))
        .await;

    let mut order = Vec::new();
    while let Outcome::Ran { job_id, status } = app.run_next_job().await {
        assert_eq!(status, JobStatus::Completed);
        order.push(job_id);
    }

    assert_eq!(order, vec![urgent, normal_old, normal_new, low]);
}

async fn a_job_whose_worker_died_is_run_again_after_a_restart(db: Db) {
    let mut options = Options::new(db, Objects::Local);
    options.lease_seconds = 1;
    let app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    let job_id = app
        .queued_job(quick_job(&dataset, "orphan", "NORMAL"))
        .await;
    // A worker claims the job and dies without a word: its lease is all that is left.
    let claimed = app
        .state
        .store
        .claim_next_job("worker-that-dies", 300)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, job_id);
    // It had got as far as a second epoch.
    for epoch in [1, 2] {
        let m = kiln::train::EpochMetrics {
            epoch,
            train_loss: 9.0,
            val_loss: 9.0,
            accuracy: 0.0,
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
        };
        app.state.store.insert_epoch(&job_id, &m).await.unwrap();
    }
    assert_eq!(
        app.run_next_job().await,
        Outcome::Empty,
        "a live lease is respected"
    );

    let app = app.restart().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let outcome = app.run_next_job().await;

    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Completed
        }
    );
    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["attempts"], 2);
    let epochs: Vec<i64> = job["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1], "only the finished attempt's epochs remain");
    assert_ne!(job["epochs"][0]["trainLoss"], 9.0);
    assert_eq!(job["modelVersion"]["version"], 1);
}

#[tokio::test]
async fn a_job_whose_worker_died_is_run_again_after_a_restart_on_sqlite() {
    a_job_whose_worker_died_is_run_again_after_a_restart(Db::Sqlite).await;
}

#[tokio::test]
async fn a_job_whose_worker_died_is_run_again_after_a_restart_on_postgres() {
    a_job_whose_worker_died_is_run_again_after_a_restart(Db::Postgres).await;
}

#[tokio::test]
async fn a_job_that_keeps_losing_its_worker_fails_after_its_attempts() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    let job_id = app
        .queued_job(quick_job(&dataset, "cursed", "NORMAL"))
        .await;
    for _ in 0..3 {
        assert!(
            app.state
                .store
                .claim_next_job("dies", 1)
                .await
                .unwrap()
                .is_some()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    assert_eq!(app.run_next_job().await, Outcome::Empty);

    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "FAILED");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("stopped responding 3 time(s)"),
        "{job}"
    );
}

#[tokio::test]
async fn a_served_instance_runs_submitted_jobs_by_itself() {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.workers = 1;
    let app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;

    let job_id = app.queued_job(quick_job(&dataset, "auto", "NORMAL")).await;

    eventually(Duration::from_secs(30), "the job to complete", || async {
        app.job(&job_id).await["status"] == "COMPLETED"
    })
    .await;
    let health = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let playground = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(playground.contains("GraphiQL"));
}

#[tokio::test]
async fn stopping_kiln_puts_a_running_job_back_in_the_queue_even_with_a_subscriber_connected() {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.workers = 1;
    let mut app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(100, 3))
        .await;
    let mut input = quick_job(&dataset, "long", "NORMAL");
    input["hyperparameters"] = json!({ "epochs": 500, "batchSize": 4, "maxSeqLength": 16 });
    let job_id = app.queued_job(input).await;
    eventually(Duration::from_secs(20), "training to start", || async {
        app.job(&job_id).await["progress"]["step"]
            .as_i64()
            .unwrap_or(0)
            >= 2
    })
    .await;
    let _subscriber = app.subscribe_job(&job_id).await;

    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("kiln stops promptly");

    let url = format!("sqlite://{}", app.dir.path().join("kiln.db").display());
    let store = kiln::store::Store::connect(&url, 1).await.unwrap();
    let job = store.get_job(&job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert!(job.lease_owner.is_none());
}
