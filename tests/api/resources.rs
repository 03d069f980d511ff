//! What a job asks of the machine it runs on (`submitJob`'s `resources`): checked at submit, bounding
//! a local job process, and choosing which worker may take the job.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Db, Objects, Options, eventually, separable_text_jsonl, spawn_with};
use crate::processes::processes_with;

#[tokio::test]
async fn resources_are_checked_at_submit_and_bound_a_local_job_process() {
    let app = spawn_with(Options::new(Db::Sqlite, Objects::Local)).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(60, 2))
        .await;
    let submit = |resources: serde_json::Value, epochs: u32| {
        json!({ "name": "r", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
                "hyperparameters": { "epochs": epochs, "batchSize": 4, "maxSeqLength": 16 },
                "resources": resources })
    };
    let refused = |answer: serde_json::Value| {
        let error = answer["errors"][0].clone();
        (
            error["extensions"]["field"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            error["message"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (field, message) = refused(app.submit_job(submit(json!({ "gpus": 17 }), 1)).await);
    assert_eq!(field, "resources.gpus");
    assert!(
        message.contains("must be between 0 and 16 (got 17)"),
        "{message}"
    );
    let (field, _) = refused(app.submit_job(submit(json!({ "cpus": 0 }), 1)).await);
    assert_eq!(field, "resources.cpus");
    // Less memory than training is estimated to need.
    let (field, message) = refused(
        app.submit_job(submit(json!({ "memoryGb": 0.001 }), 1))
            .await,
    );
    assert_eq!(field, "resources.memoryGb");
    assert!(
        message.contains("more than the 1 MiB asked for; raise memoryGb"),
        "{message}"
    );
    assert_eq!(app.job_count().await, 0, "nothing refused was stored");

    // A job process gets ceil(cpus) threads for its matrix products and an address-space limit of
    // memoryGb.
    let job_id = app
        .queued_job(submit(json!({ "cpus": 1.5, "memoryGb": 3 }), 500))
        .await;
    let run = app.run_next_job_in_background();
    app.wait_until_training(&job_id).await;
    let pid = processes_with(&["run-job", &job_id])
        .into_iter()
        .next()
        .expect("the job's process");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.split('\0').any(|v| v == "RAYON_NUM_THREADS=2"),
        "{environ}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let address_space = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))
        .unwrap();
    assert!(
        address_space.contains(&(3u64 << 30).to_string()),
        "{address_space}"
    );
    app.cancel_jobs(&[&job_id]).await;
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the job stops")
        .unwrap();
}

#[tokio::test]
async fn a_job_asking_for_a_gpu_no_worker_has_waits_saying_so_and_blocks_no_one() {
    let app = spawn_with(Options::new(Db::Postgres, Objects::Local)).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(40, 4))
        .await;
    let job = |name: &str, priority: &str, gpus: u32| {
        json!({ "name": name, "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
                "priority": priority, "resources": { "gpus": gpus },
                "hyperparameters": { "epochs": 1, "batchSize": 8, "maxSeqLength": 16 } })
    };
    let gpu_job = app.queued_job(job("needs a GPU", "URGENT", 1)).await;
    let cpu_job = app.queued_job(job("CPU is fine", "LOW", 0)).await;
    // This machine's worker has no GPU (a CPU build, or KILN_DEVICE=cpu).
    let worker = app.serving_worker();
    eventually(
        Duration::from_secs(120),
        "the CPU job to complete",
        || async { app.job(&cpu_job).await["status"] == "COMPLETED" },
    )
    .await;
    let waiting = app
        .data(
            "query($id: ID!) { job(id: $id) { status queuePosition pendingReason estimatedStartAt resources { gpus } } }",
            json!({ "id": gpu_job }),
        )
        .await;
    let waiting = &waiting["job"];
    assert_eq!(waiting["status"], "QUEUED");
    assert_eq!(waiting["resources"]["gpus"], 1);
    assert_eq!(
        waiting["pendingReason"],
        "no worker has the 1 GPU it asks for (the most any live worker has is 0)"
    );
    assert_eq!(waiting["estimatedStartAt"], serde_json::Value::Null);
    worker.stop().await;
}
