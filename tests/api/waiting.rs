//! "Why is my job pending?": each queued job's position, estimated start and reason, pushed live as
//! `QueueChanged`; `queueStats` with every replica's workers; `setJobPriority`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Db, Objects, Options, TestApp, WsMessage, eventually, separable_text_jsonl, spawn_with,
};

const PLACE: &str =
    "query($id: ID!) { job(id: $id) { status queuePosition estimatedStartAt pendingReason } }";
const STATS: &str = "{ queueStats { queued running meanWaitSeconds startedLastHour depth { priority count } \
    workers { busy idle total replicas { host pid busy idle } } } }";
const SET: &str = "mutation($id: ID!, $priority: Priority!) { setJobPriority(id: $id, priority: $priority) { id priority } }";
const PLACE_EVENTS: &str = "subscription($id: ID!) { jobEvents(jobId: $id) { __typename \
    ... on QueueChanged { position estimatedStartAt reason } } }";

fn job_input(dataset: &str, name: &str, priority: &str, epochs: u32) -> Value {
    json!({ "name": name, "modelName": "q", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "priority": priority, "hyperparameters": { "epochs": epochs, "maxSeqLength": 16 } })
}

async fn place(app: &TestApp, id: &str) -> Value {
    app.data(PLACE, json!({ "id": id })).await["job"].clone()
}

/// The next `QueueChanged` on `sub` (other events skipped).
async fn next_place(sub: &mut crate::helpers::Subscription) -> Value {
    loop {
        match sub.next(Duration::from_secs(30)).await {
            WsMessage::Next(payload) => {
                let event = &payload["data"]["jobEvents"];
                if event["__typename"] == "QueueChanged" {
                    return event.clone();
                }
            }
            other => panic!("the subscription ended: {other:?}"),
        }
    }
}

async fn a_queued_job_says_where_it_stands_and_why(db: Db, objects: Objects) {
    let mut options = Options::new(db, objects);
    options.workers = 0;
    options.redis = db == Db::Postgres;
    let app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(40, 3))
        .await;

    // Without a worker, a job says so and has no estimate.
    let lonely = app
        .queued_job(job_input(&dataset, "lonely", "NORMAL", 1))
        .await;
    let alone = place(&app, &lonely).await;
    assert_eq!(alone["queuePosition"], 1, "{alone}");
    assert_eq!(alone["pendingReason"], "no worker is running", "{alone}");
    assert!(alone["estimatedStartAt"].is_null(), "{alone}");
    // It runs by hand: now model `q` has a known run time.
    app.run_next_job().await;

    // A real worker, registered like every replica's, busy with a long job.
    let worker = app.serving_worker();
    let big = app
        .ready_dataset("big.jsonl", separable_text_jsonl(400, 4))
        .await;
    let long = app
        .queued_job(job_input(&big, "long", "NORMAL", 1000))
        .await;
    app.wait_until_training(&long).await;
    let normal = app
        .queued_job(job_input(&dataset, "normal", "NORMAL", 1))
        .await;
    let high = app.queued_job(job_input(&dataset, "high", "HIGH", 1)).await;
    let high2 = app
        .queued_job(job_input(&dataset, "high 2", "HIGH", 1))
        .await;
    let mut follower = app.subscribe(PLACE_EVENTS, json!({ "id": normal })).await;
    let first = next_place(&mut follower).await;
    assert_eq!(first["position"], 3, "{first}");
    assert_eq!(
        first["reason"], "2 jobs ahead of it at HIGH priority",
        "{first}"
    );

    let [high_place, high2_place, normal_place] =
        [&high, &high2, &normal].map(|id| place(&app, id));
    let (high_place, high2_place, normal_place) =
        tokio::join!(high_place, high2_place, normal_place);
    assert_eq!(high_place["queuePosition"], 1);
    assert_eq!(
        high_place["pendingReason"],
        "next in line: waiting for the only worker to finish"
    );
    assert_eq!(high2_place["queuePosition"], 2);
    assert_eq!(
        high2_place["pendingReason"],
        "1 job ahead of it at HIGH priority"
    );
    // Each starts after the one before it: the long job's ETA, then the model's usual run time.
    let at = |v: &Value| {
        let text = v["estimatedStartAt"]
            .as_str()
            .unwrap_or_else(|| panic!("no estimate: {v}"));
        kiln::domain::parse_timestamp("t", text).unwrap()
    };
    assert!(at(&high_place) < at(&high2_place) && at(&high2_place) < at(&normal_place));

    // The figures, this process's worker among them.
    let stats = app.data(STATS, json!({})).await["queueStats"].clone();
    assert_eq!(stats["queued"], 3, "{stats}");
    assert_eq!(stats["running"], 1, "{stats}");
    assert_eq!(
        stats["depth"][1],
        json!({ "priority": "HIGH", "count": 2 }),
        "{stats}"
    );
    assert_eq!(stats["workers"]["busy"], 1, "{stats}");
    assert_eq!(stats["workers"]["total"], 1, "{stats}");
    assert_eq!(
        stats["workers"]["replicas"][0]["pid"],
        i64::from(std::process::id()),
        "{stats}"
    );
    assert!(stats["meanWaitSeconds"].as_f64().is_some(), "{stats}");

    // Moving the normal job ahead of everything: its follower hears at once.
    let moved = app
        .data(SET, json!({ "id": normal, "priority": "URGENT" }))
        .await;
    assert_eq!(moved["setJobPriority"]["priority"], "URGENT");
    let now = next_place(&mut follower).await;
    assert_eq!(now["position"], 1, "{now}");
    assert_eq!(
        now["reason"], "next in line: waiting for the only worker to finish",
        "{now}"
    );
    assert_eq!(
        place(&app, &high2).await["pendingReason"],
        "2 jobs ahead of it (1 at URGENT, 1 at HIGH priority)"
    );
    // Only a queued job's priority changes.
    let refused = app
        .graphql(SET, json!({ "id": long, "priority": "LOW" }))
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "CONFLICT",
        "{refused}"
    );

    // The worker stops: it leaves the registry, and the followers are told.
    app.cancel_jobs(&[&long, &normal, &high, &high2]).await;
    worker.stop().await;
    eventually(
        Duration::from_secs(10),
        "the worker to leave the registry",
        || async { app.data(STATS, json!({})).await["queueStats"]["workers"]["total"] == 0 },
    )
    .await;
}

mod a_queued_job_says_where_it_stands_and_why {
    use super::*;

    #[tokio::test]
    async fn sqlite_and_local_files() {
        a_queued_job_says_where_it_stands_and_why(Db::Sqlite, Objects::Local).await;
    }

    #[tokio::test]
    async fn postgres_s3_and_redis() {
        a_queued_job_says_where_it_stands_and_why(Db::Postgres, Objects::S3).await;
    }
}
