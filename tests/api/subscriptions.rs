use std::time::Duration;

use serde_json::json;

use crate::helpers::{Db, Objects, WsMessage, epochs, eventually, separable_text_jsonl, spawn_app};

#[tokio::test]
async fn a_subscriber_joining_mid_job_gets_history_then_live_events_without_gap_or_repeat() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(120, 4))
        .await;
    let job_id = app
        .queued_job(json!({ "name": "watched", "modelName": "w", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "hyperparameters": { "epochs": 20, "batchSize": 4, "maxSeqLength": 16 } }))
        .await;
    let worker = app.run_next_job_in_background();
    eventually(Duration::from_secs(60), "two finished epochs", || async {
        app.job(&job_id).await["epochs"]
            .as_array()
            .map(|e| e.len())
            .unwrap_or(0)
            >= 2
    })
    .await;

    let mut sub = app.subscribe_job(&job_id).await;
    let events = sub.collect_until_complete(Duration::from_secs(60)).await;
    worker.await.unwrap();

    assert_eq!(events[0]["__typename"], "JobStatusChanged");
    assert_eq!(
        events[0]["status"], "RUNNING",
        "the first event is the status at joining"
    );
    assert_eq!(
        epochs(&events),
        (1..=20).collect::<Vec<_>>(),
        "every epoch once, in order"
    );
    assert_eq!(events.last().unwrap()["status"], "COMPLETED");
}

#[tokio::test]
async fn subscribing_to_a_finished_job_replays_it_and_completes() {
    let app = spawn_app(Db::Postgres, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(40, 4))
        .await;
    let job_id = app
        .queued_job(json!({ "name": "done", "modelName": "w", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "hyperparameters": { "epochs": 2, "maxSeqLength": 16 } }))
        .await;
    app.run_next_job().await;

    let mut sub = app.subscribe_job(&job_id).await;
    let events = sub.collect_until_complete(Duration::from_secs(10)).await;

    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["__typename"].as_str().unwrap())
        .collect();
    // In the order it happened: the epochs, then how it ended.
    assert_eq!(
        kinds,
        vec!["EpochCompleted", "EpochCompleted", "JobStatusChanged"]
    );
    assert_eq!(events[2]["status"], "COMPLETED");

    let mut unknown = app.subscribe_job("no-such-job").await;
    match unknown.next(Duration::from_secs(10)).await {
        crate::helpers::WsMessage::Next(e) => {
            assert_eq!(e["errors"][0]["extensions"]["code"], "NOT_FOUND", "{e}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_follower_that_falls_behind_the_event_channel_still_gets_every_epoch_exactly_once() {
    use futures::StreamExt;
    use kiln::domain::{EpochMetrics, JobStatus};
    use kiln::events::{CHANNEL_CAPACITY, JobEvent};
    use kiln::service::TrainingRecord;

    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 4))
        .await;
    let job_id = app
        .queued_job(json!({ "name": "flood", "modelName": "w", "task": "TEXT_CLASSIFICATION", "datasetId": dataset }))
        .await;
    let service = &app.kiln.service;
    service
        .claim_next_job("w", 60_000, 0)
        .await
        .unwrap()
        .unwrap();
    // A follower that subscribes now and reads nothing until the job has ended.
    let follower = service.follow_job(&job_id).await.unwrap();
    let steps_per_epoch = CHANNEL_CAPACITY / 2;
    for epoch in 1..=5u32 {
        for step in 0..steps_per_epoch {
            service.events().publish(
                &job_id,
                JobEvent::StepProgress {
                    step: step as u64,
                    total_steps: 5 * steps_per_epoch as u64,
                    epoch,
                    total_epochs: 5,
                    loss: 0.5,
                    learning_rate: 0.001,
                    samples_per_second: 100.0,
                },
            );
        }
        let metrics = EpochMetrics {
            epoch,
            train_loss: 0.5,
            val_loss: 0.5,
            accuracy: 0.5,
            precision: 0.5,
            recall: 0.5,
            f1: 0.5,
            per_label: Vec::new(),
            confusion_matrix: Vec::new(),
        };
        let record = TrainingRecord {
            epoch: Some(&metrics),
            ..Default::default()
        };
        service.record_training(&job_id, "w", record).await.unwrap();
    }
    service
        .release_job(&job_id, "w", JobStatus::Cancelled)
        .await
        .unwrap();

    let events: Vec<JobEvent> = tokio::time::timeout(Duration::from_secs(10), follower.collect())
        .await
        .expect("the follower catches up and ends");

    let steps = events
        .iter()
        .filter(|e| matches!(e, JobEvent::StepProgress { .. }))
        .count();
    assert!(
        steps < 5 * steps_per_epoch,
        "the follower did fall behind ({steps} step events reached it)"
    );
    let epochs: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::EpochCompleted(m) => Some(m.epoch),
            _ => None,
        })
        .collect();
    assert_eq!(epochs, [1, 2, 3, 4, 5], "every epoch once, in order");
    let statuses: Vec<JobStatus> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::StatusChanged { status, .. } => Some(*status),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, [JobStatus::Running, JobStatus::Cancelled]);
}

#[tokio::test]
async fn job_changes_tell_a_list_of_every_jobs_status_and_progress_and_of_gaps() {
    use futures::StreamExt;
    use kiln::events::{CHANNEL_CAPACITY, JobEvent};

    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(40, 2))
        .await;
    let mut sub = app
        .subscribe(
            "subscription { jobChanges { __typename ... on JobStatusChanged { jobId status } \
             ... on StepProgress { jobId step totalSteps } } }",
            json!({}),
        )
        .await;
    // The subscription is in place once it passes on a change published for a probe.
    let service = &app.kiln.service;
    loop {
        service.events().publish(
            "probe",
            JobEvent::StatusChanged {
                status: kiln::domain::JobStatus::Queued,
                error: None,
            },
        );
        if let Ok(WsMessage::Next(payload)) =
            tokio::time::timeout(Duration::from_millis(200), sub.next(Duration::from_secs(1))).await
        {
            assert_eq!(payload["data"]["jobChanges"]["jobId"], "probe");
            break;
        }
    }
    let job = app
        .queued_job(json!({ "name": "listed", "modelName": "w", "task": "TEXT_CLASSIFICATION",
            "datasetId": dataset, "hyperparameters": { "epochs": 2, "batchSize": 4, "maxSeqLength": 16 } }))
        .await;
    app.run_next_job().await;
    let mut statuses = Vec::new();
    let mut steps = 0;
    while statuses.last().map(String::as_str) != Some("COMPLETED") {
        let WsMessage::Next(payload) = sub.next(Duration::from_secs(30)).await else {
            panic!("the subscription ended");
        };
        let change = &payload["data"]["jobChanges"];
        if change["jobId"] == "probe" {
            continue;
        }
        assert_eq!(change["jobId"], json!(job), "{change}");
        match change["__typename"].as_str().unwrap() {
            "JobStatusChanged" => statuses.push(change["status"].as_str().unwrap().to_string()),
            "StepProgress" => steps += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(statuses, ["QUEUED", "RUNNING", "COMPLETED"]);
    assert!(steps > 0, "no step progress");

    // A watcher too slow for the event channel is told it missed changes.
    let mut watcher = Box::pin(service.watch_jobs());
    for step in 0..CHANNEL_CAPACITY as u64 * 2 {
        service.events().publish(
            &job,
            JobEvent::StepProgress {
                step,
                total_steps: 0,
                epoch: 1,
                total_epochs: 1,
                loss: 0.5,
                learning_rate: 0.001,
                samples_per_second: 1.0,
            },
        );
    }
    assert_eq!(watcher.next().await, Some(None), "a gap is reported first");
}
