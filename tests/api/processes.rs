//! Each job runs in its own process: one that runs out of memory or crashes ends alone, a stop reaches
//! it (and kills it if it does not stop in time), and it never outlives the worker that started it.

use std::time::{Duration, Instant};

use kiln::domain::JobStatus;
use kiln::runner::Outcome;
use serde_json::json;

use crate::helpers::{Db, Objects, Options, TestApp, separable_text_jsonl, spawn_with};

/// A process killed however the test ends.
pub(crate) struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ids of live processes whose command line holds every one of `words`.
pub(crate) fn processes_with(words: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if !zombie && words.iter().all(|w| cmdline.contains(w)) {
            found.push(pid);
        }
    }
    found
}

async fn long_job(app: &TestApp, name: &str) -> String {
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(100, 3))
        .await;
    app.queued_job(
        json!({ "name": name, "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
        "hyperparameters": { "epochs": 500, "batchSize": 4, "maxSeqLength": 16 } }),
    )
    .await
}

#[tokio::test]
async fn a_job_killed_for_memory_fails_alone_and_is_not_run_again() {
    let app = spawn_with(Options::new(Db::Sqlite, Objects::Local)).await;
    let job_id = long_job(&app, "greedy").await;
    let worker = app.run_next_job_in_background();
    app.wait_until_training(&job_id).await;
    let children = processes_with(&["run-job", &job_id]);
    assert_eq!(children.len(), 1, "{children:?}");

    // What the kernel's out-of-memory killer does.
    unsafe { libc::kill(children[0] as i32, libc::SIGKILL) };
    let outcome = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker notices at once")
        .unwrap();

    let error = app.failure_of(outcome, &job_id).await;
    assert!(
        error.starts_with("the job ran out of memory: its process was killed (signal 9)"),
        "{error}"
    );
    assert!(error.contains("try batchSize ≤ 2"), "{error}");
    assert_eq!(app.job(&job_id).await["attempts"], 1);
    assert_eq!(
        app.run_next_job().await,
        Outcome::Empty,
        "a job that failed on its own is not run again"
    );
    // The worker and the API carry on: the next job trains.
    let small = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 1))
        .await;
    let next = app
        .queued_job(json!({ "name": "next", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": small,
            "hyperparameters": { "epochs": 1, "maxSeqLength": 16 } }))
        .await;
    assert_eq!(
        app.run_next_job().await,
        Outcome::Ran {
            job_id: next,
            status: JobStatus::Completed
        }
    );
}

#[tokio::test]
async fn a_job_that_does_not_stop_within_the_grace_period_is_killed() {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.job_stop_grace_seconds = 0;
    let app = spawn_with(options).await;
    let job_id = long_job(&app, "stubborn").await;
    let worker = app.run_next_job_in_background();
    app.wait_until_training(&job_id).await;
    assert_eq!(processes_with(&["run-job", &job_id]).len(), 1);

    app.data(
        "mutation($id: ID!) { cancelJob(id: $id) { status } }",
        json!({ "id": job_id }),
    )
    .await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the job ends promptly")
        .unwrap();

    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Cancelled
        }
    );
    assert!(processes_with(&["run-job", &job_id]).is_empty());
}

#[tokio::test]
async fn a_jobs_process_never_outlives_the_worker_that_started_it() {
    let app = spawn_with(Options::new(Db::Sqlite, Objects::Local)).await;
    let job_id = long_job(&app, "orphan").await;
    // A separate `kiln worker` process on the same database and objects claims the job.
    let config = &app.config;
    let worker = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("worker")
        .env("KILN_DATABASE_URL", &config.database_url)
        .env("KILN_STORAGE_URL", &config.storage.url)
        .env("KILN_WORK_DIR", &config.work_dir)
        .env("KILN_WORKERS", "1")
        .env("KILN_ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut worker = KillOnDrop(worker);
    app.wait_until_training(&job_id).await;
    let children = processes_with(&["run-job", &job_id]);
    assert_eq!(children.len(), 1, "{children:?}");

    // The worker is killed outright: no handler of its runs.
    worker.0.kill().unwrap();
    worker.0.wait().unwrap();
    let started = Instant::now();
    while !processes_with(&["run-job", &job_id]).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the job's process outlived its worker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
