use std::time::Duration;

use kiln::domain::{
    DatasetFormat, EpochMetrics, HyperparamsInput, JobStatus, Priority, TaskKind, TrainingInput,
    TrainingSettings,
};
use kiln::objects::keys;
use kiln::runner::Outcome;
use kiln::store::{NewDataset, NewJob, Store, TrainingRecord};
use serde_json::json;

use crate::helpers::{
    Db, Objects, Options, eventually, execute_sql, fresh_store, on_storage, separable_text_jsonl,
    spawn_app, spawn_with,
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

async fn a_job_whose_worker_died_is_run_again_after_a_restart(db: Db, objects: Objects) {
    let mut options = Options::new(db, objects);
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
        .store()
        .claim_next_job("worker-that-dies", 300, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, job_id);
    // It had got as far as a second epoch.
    for epoch in [1, 2] {
        let m = EpochMetrics {
            epoch,
            train_loss: 9.0,
            val_loss: 9.0,
            accuracy: 0.0,
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            per_label: Vec::new(),
            confusion_matrix: Vec::new(),
        };
        let held = app
            .store()
            .record_training(
                &job_id,
                "worker-that-dies",
                TrainingRecord {
                    epoch: Some(&m),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(held);
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

on_storage!(a_job_whose_worker_died_is_run_again_after_a_restart: sqlite_local, postgres_local);

#[tokio::test]
async fn a_job_that_keeps_losing_its_worker_fails_after_its_attempts() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    let job_id = app
        .queued_job(quick_job(&dataset, "cursed", "NORMAL"))
        .await;
    // Three workers claim it and die in turn (a 1 ms lease, never renewed).
    for _ in 0..3 {
        assert!(
            app.kiln
                .service
                .claim_next_job("dies", 1, 0)
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
        .get(app.url("/graphiql"))
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
    app.wait_until_training(&job_id).await;
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

#[tokio::test]
async fn a_worker_that_loses_its_lease_stops_training_and_writes_nothing_more() {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.lease_seconds = 3;
    let app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(100, 3))
        .await;
    let mut input = quick_job(&dataset, "long", "NORMAL");
    input["hyperparameters"] = json!({ "epochs": 500, "batchSize": 4, "maxSeqLength": 16 });
    let job_id = app.queued_job(input).await;
    let worker = app.run_next_job_in_background();
    eventually(Duration::from_secs(30), "two finished epochs", || async {
        app.job(&job_id).await["epochs"]
            .as_array()
            .is_some_and(|e| e.len() >= 2)
    })
    .await;

    // Another worker takes the job over, as it would after this one's lease had expired.
    execute_sql(
        &app,
        &format!(
            "UPDATE jobs SET lease_owner = 'thief', lease_expires_at = {} WHERE id = '{job_id}'",
            kiln::domain::now_ms() + 600_000
        ),
    )
    .await;
    let recorded = |app: &crate::helpers::TestApp| {
        let store = app.store().clone();
        let job_id = job_id.clone();
        async move {
            let points = store.job_metrics(&job_id, None, 10_000).await.unwrap();
            let epochs = store
                .epochs_of(std::slice::from_ref(&job_id))
                .await
                .unwrap();
            let job = store.get_job(&job_id).await.unwrap().unwrap();
            (points, epochs, job.progress)
        }
    };
    let at_takeover = recorded(&app).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker stops training promptly")
        .unwrap();

    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Running
        },
        "the job is left to the worker that holds it"
    );
    let after = recorded(&app).await;
    assert!(
        after == at_takeover,
        "the worker wrote after losing its lease: {} → {} points, {} → {} epochs",
        at_takeover.0.len(),
        after.0.len(),
        at_takeover.1.len(),
        after.1.len()
    );
    let job = app.store().get_job(&job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.lease_owner.as_deref(), Some("thief"));
    assert!(job.model_version_id.is_none());
    assert!(
        !app.dir.path().join("work/jobs").join(&job_id).exists(),
        "the worker cleaned up its output folder"
    );
}

/// A store with one READY dataset to queue jobs on.
async fn store_with_dataset(db: Db) -> (Store, tempfile::TempDir, String) {
    let (store, dir) = fresh_store(db).await;
    let id = "dataset-1".to_string();
    store
        .insert_dataset(
            &NewDataset {
                id: id.clone(),
                name: "d".into(),
                format: DatasetFormat::Jsonl,
                object_key: keys::dataset(&id, DatasetFormat::Jsonl).unwrap(),
                size_bytes: 1,
                sha256: "00".into(),
                fields: Default::default(),
                rules: Default::default(),
                derivation: None,
            },
            0,
        )
        .await
        .unwrap();
    (store, dir, id)
}

async fn queue(store: &Store, dataset: &str, id: &str, priority: Priority) {
    let settings = TrainingSettings::parse(&TrainingInput {
        task: Some(TaskKind::TextClassification),
        hyperparameters: HyperparamsInput::default(),
        ..Default::default()
    })
    .unwrap();
    store
        .insert_job(&NewJob {
            id: id.into(),
            name: id.into(),
            model_name: "m".into(),
            dataset_id: dataset.into(),
            settings,
            priority,
            max_attempts: 2,
            max_duration_ms: None,
            auto_promote: None,
            reason: None,
            resources: Default::default(),
            fields: Default::default(),
        })
        .await
        .unwrap();
    // Distinct creation times, so "oldest first" is one order.
    tokio::time::sleep(Duration::from_millis(3)).await;
}

async fn the_queue_hands_out_jobs_by_priority_then_age(db: Db, _: Objects) {
    let (store, _dir, dataset) = store_with_dataset(db).await;
    queue(&store, &dataset, "low", Priority::Low).await;
    queue(&store, &dataset, "old", Priority::Normal).await;
    queue(&store, &dataset, "new", Priority::Normal).await;
    queue(&store, &dataset, "urgent", Priority::Urgent).await;

    let mut order = Vec::new();
    while let Some(job) = store.claim_next_job("w", 60_000, 0).await.unwrap() {
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.lease_owner.as_deref(), Some("w"));
        assert_eq!(job.attempts, 1);
        order.push(job.id);
    }

    assert_eq!(order, ["urgent", "old", "new", "low"]);
}

on_storage!(the_queue_hands_out_jobs_by_priority_then_age: sqlite_local, postgres_local);

async fn an_expired_lease_lets_another_worker_claim_the_job_after_its_backoff(db: Db, _: Objects) {
    let (store, _dir, dataset) = store_with_dataset(db).await;
    queue(&store, &dataset, "job", Priority::Normal).await;
    let first = store
        .claim_next_job("first", 300, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .claim_next_job("second", 300, 0)
            .await
            .unwrap()
            .is_none(),
        "a live lease is respected"
    );
    assert!(store.expired_jobs().await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;

    let expired = store.expired_jobs().await.unwrap();
    assert_eq!(expired.len(), 1);
    let later = kiln::domain::now_ms() + 60_000;
    let queued = store
        .end_expired_attempt("job", Some(later), "its worker stopped responding")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!(queued.next_attempt_at, Some(later));
    assert!(
        store
            .claim_next_job("second", 50, 0)
            .await
            .unwrap()
            .is_none(),
        "not before its backoff has passed"
    );
    // Pausing and resuming a queued job clears its backoff.
    assert_eq!(
        store.pause_job("job").await.unwrap().status,
        JobStatus::Paused
    );
    assert!(
        store
            .claim_next_job("second", 50, 0)
            .await
            .unwrap()
            .is_none()
    );
    let resumed = store
        .requeue_job("job", &[JobStatus::Paused])
        .await
        .unwrap();
    assert_eq!((resumed.status, resumed.attempts), (JobStatus::Queued, 1));
    let second = store
        .claim_next_job("second", 50, 0)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(second.id, first.id);
    assert_eq!(second.lease_owner.as_deref(), Some("second"));
    assert_eq!(second.attempts, 2);
    assert_eq!(second.next_attempt_at, None);
    assert_eq!(
        store.heartbeat_job("job", "first", 300).await.unwrap(),
        None,
        "the first worker has lost the job"
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    let failed = store
        .end_expired_attempt("job", None, "no attempts left")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("no attempts left"));
    assert!(
        store
            .claim_next_job("third", 50, 0)
            .await
            .unwrap()
            .is_none()
    );
}

on_storage!(an_expired_lease_lets_another_worker_claim_the_job_after_its_backoff: sqlite_local, postgres_local);

async fn a_heartbeat_keeps_the_lease_and_reports_a_cancel(db: Db, _: Objects) {
    let (store, _dir, dataset) = store_with_dataset(db).await;
    queue(&store, &dataset, "job", Priority::Normal).await;
    store.claim_next_job("w", 200, 0).await.unwrap().unwrap();

    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            store.heartbeat_job("job", "w", 200).await.unwrap(),
            Some((false, false))
        );
    }
    assert!(
        store
            .claim_next_job("other", 200, 0)
            .await
            .unwrap()
            .is_none(),
        "300 ms after a 200 ms claim, the heartbeats have kept the lease"
    );
    let cancelling = store.cancel_job("job").await.unwrap();
    assert_eq!(cancelling.status, JobStatus::Running);
    assert!(cancelling.cancel_requested);
    assert_eq!(
        store.heartbeat_job("job", "w", 100).await.unwrap(),
        Some((true, false)),
        "the worker learns of the cancel"
    );
    assert_eq!(
        store
            .heartbeat_job("job", "someone-else", 100)
            .await
            .unwrap(),
        None
    );
}

on_storage!(a_heartbeat_keeps_the_lease_and_reports_a_cancel: sqlite_local, postgres_local);
