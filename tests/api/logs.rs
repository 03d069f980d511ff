//! Each job's log as a client reads it: `Job.logs`, the `jobLogs` subscription, and the ZIP download.

use std::io::Read;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Db, Objects, TestApp, on_storage, separable_tabular_csv, spawn_app};

async fn logs(app: &TestApp, job: &str, args: &str) -> Value {
    let body = app
        .graphql(
            &format!(
                "query($id: ID!) {{ job(id: $id) {{ logs{args} {{ seq at level message }} }} }}"
            ),
            json!({ "id": job }),
        )
        .await;
    if body.get("errors").is_some() {
        return body;
    }
    body["data"]["job"]["logs"].clone()
}

fn messages(lines: &Value) -> Vec<String> {
    lines
        .as_array()
        .unwrap_or_else(|| panic!("{lines}"))
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect()
}

const JOB_LOGS: &str = "subscription($id: ID!, $level: LogLevel) { jobLogs(jobId: $id, level: $level) { seq level message } }";

async fn a_job_keeps_a_log_of_what_its_runner_did(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let dataset = app
        .ready_dataset("rows.csv", separable_tabular_csv(100, 2))
        .await;
    let job = app
        .queued_job(
            json!({ "name": "logged", "modelName": "logged", "task": "TABULAR_CLASSIFICATION",
            "datasetId": dataset, "hyperparameters": { "epochs": 2 } }),
        )
        .await;
    // Followed from before the job starts: every line once, in order, through the end.
    let mut live = app.subscribe(JOB_LOGS, json!({ "id": job })).await;
    let run = app.run_next_job_in_background();
    let followed = live
        .collect_field_until_complete("jobLogs", Duration::from_secs(120))
        .await;
    run.await.unwrap();

    let stored = logs(&app, &job, "(last: 1000)").await;
    let lines = messages(&stored);
    let expected = [
        "claimed by worker",
        &format!("dataset {dataset} read: 100 examples, labels negative, positive"),
        "model built: ",
        "epoch 1/2: train loss ",
        "checkpoint at step",
        "epoch 2/2: train loss ",
        "completed: registered as version 1 of model logged",
    ];
    let mut at = 0;
    for want in expected {
        let found = lines[at..]
            .iter()
            .position(|l| l.starts_with(want))
            .unwrap_or_else(|| panic!("no line {want:?} after line {at} in {lines:#?}"));
        at += found + 1;
    }
    let seqs: Vec<i64> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "numbered 1, 2, … with no gap"
    );
    let followed_seqs: Vec<i64> = followed
        .iter()
        .map(|l| l["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        followed_seqs, seqs,
        "the subscription saw every stored line once"
    );

    // After the end, the subscription replays the log and completes.
    let mut replay = app
        .subscribe(JOB_LOGS, json!({ "id": job, "level": "INFO" }))
        .await;
    let replayed = replay
        .collect_field_until_complete("jobLogs", Duration::from_secs(30))
        .await;
    assert_eq!(replayed.len(), seqs.len());

    // Reads: the newest lines, a level filter, limits.
    let tail = logs(&app, &job, "(last: 2)").await;
    assert_eq!(messages(&tail), lines[lines.len() - 2..].to_vec());
    assert_eq!(
        logs(&app, &job, "(level: WARN)").await,
        json!([]),
        "a clean run warns of nothing"
    );
    let body = logs(&app, &job, "(last: 0)").await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "last", "{body}");

    // The download: the whole log as `<job>.log` in a ZIP.
    let url = app
        .data(
            "query($id: ID!) { job(id: $id) { logsDownloadUrl } }",
            json!({ "id": job }),
        )
        .await["job"]["logsDownloadUrl"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(url, format!("/jobs/{job}/logs/download"));
    let response = app
        .client
        .get(app.url(&url))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut file = archive.by_name(&format!("{job}.log")).unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    let downloaded: Vec<&str> = text.lines().collect();
    assert_eq!(downloaded.len(), lines.len(), "{text}");
    for (row, message) in downloaded.iter().zip(&lines) {
        assert!(
            row.ends_with(message.as_str()) && row.contains(" INFO "),
            "{row}"
        );
    }
    let status = app.client.get(app.url(&url)).send().await.unwrap().status();
    assert_eq!(status, 401);
    let status = app
        .client
        .get(app.url("/jobs/no-such-job/logs/download"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
}

on_storage!(a_job_keeps_a_log_of_what_its_runner_did: sqlite_local, postgres_local);

async fn a_failed_job_logs_its_error(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let dataset = app
        .ready_dataset("d.jsonl", crate::helpers::separable_text_jsonl(20, 1))
        .await;
    // A base model whose tokenizer kiln cannot read (found when the job loads it): the job fails on
    // its own input.
    let base = app.dir.path().join("models").join("broken");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::copy(
        crate::helpers::minilm_dir().join("config.json"),
        base.join("config.json"),
    )
    .unwrap();
    std::fs::write(base.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(base.join("model.safetensors"), b"").unwrap();
    let job = app
        .queued_job(json!({ "name": "broken", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "baseModel": base.display().to_string(), "hyperparameters": { "epochs": 1 } }))
        .await;
    let error = app.failure_of(app.run_next_job().await, &job).await;
    let errors = logs(&app, &job, "(level: ERROR)").await;
    assert_eq!(messages(&errors), vec![format!("failed: {error}")]);
    assert_eq!(errors[0]["level"], "ERROR");
}

on_storage!(a_failed_job_logs_its_error: sqlite_local, postgres_local);
