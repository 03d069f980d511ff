//! Each job runs in its own process: one that runs out of memory or crashes ends alone, a stop reaches
//! it (and kills it if it does not stop in time), and it never outlives the worker that started it.

use std::time::{Duration, Instant};

use kiln::domain::JobStatus;
use kiln::runner::Outcome;
use serde_json::json;

use crate::helpers::{
    Db, Objects, Options, ServeProcess, TestApp, separable_text_jsonl, spawn_with,
};

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
async fn a_job_out_of_memory_fails_alone_says_so_and_is_not_run_again() {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    // Enough to start, not enough for a batch of 64 long texts through the MiniLM.
    options.job_memory_limit = Some(JOB_MEMORY_LIMIT);
    let app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", crate::helpers::long_text_jsonl(128))
        .await;
    let job_id = app
        .queued_job(
            json!({ "name": "greedy", "modelName": "m", "task": "TEXT_CLASSIFICATION",
            "datasetId": dataset, "baseModel": crate::helpers::minilm_dir().display().to_string(),
            "hyperparameters": { "epochs": 1, "batchSize": 64, "maxSeqLength": 128 } }),
        )
        .await;

    let outcome = tokio::time::timeout(Duration::from_secs(120), app.run_next_job())
        .await
        .expect("the job ends");

    let error = app.failure_of(outcome, &job_id).await;
    assert!(
        error.starts_with(
            "the job ran out of memory: its process could not allocate more within its memory limit"
        ),
        "{error}"
    );
    assert!(error.contains("try batchSize ≤ 32"), "{error}");
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

/// The address-space limit of the out-of-memory test's job.
const JOB_MEMORY_LIMIT: u64 = 2560 << 20;

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

/// How long tokio keeps an idle thread before it retires it (its `thread_keep_alive` default), and a
/// margin.
const THREAD_RETIREMENT: Duration = Duration::from_secs(13);

#[tokio::test]
async fn a_burst_of_api_requests_does_not_kill_the_running_job() {
    let app = spawn_with(Options::new(Db::Sqlite, Objects::Local)).await;
    let job_id = long_job(&app, "busy").await;
    let server = ServeProcess::start(&app, 1, &[]).await;
    app.wait_until_training(&job_id).await;
    let children = processes_with(&["run-job", &job_id]);
    assert_eq!(children.len(), 1, "{children:?}");

    // Four clients, fifty listings each: the server's runtime starts threads for them, and retires
    // the idle ones once the burst is over.
    let burst = (0..4).map(|_| async {
        for _ in 0..50 {
            let body = server
                .graphql(
                    "{ jobs(first: 20) { nodes { id status progress { step } } } }",
                    json!({}),
                )
                .await;
            assert!(body.get("errors").is_none(), "{body}");
        }
    });
    futures::future::join_all(burst).await;
    tokio::time::sleep(THREAD_RETIREMENT).await;

    assert_eq!(
        processes_with(&["run-job", &job_id]),
        children,
        "the job's process died after the burst"
    );
    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "RUNNING", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
}

#[tokio::test]
async fn a_job_killed_from_outside_says_so_and_goes_back_to_the_queue() {
    let app = spawn_with(Options::new(Db::Sqlite, Objects::Local)).await;
    let job_id = long_job(&app, "preempted").await;
    let worker = app.run_next_job_in_background();
    app.wait_until_training(&job_id).await;
    let children = processes_with(&["run-job", &job_id]);
    assert_eq!(children.len(), 1, "{children:?}");

    // An operator's `kill -9`: no out-of-memory kill is counted by the kernel.
    unsafe { libc::kill(children[0] as i32, libc::SIGKILL) };
    let outcome = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker notices at once")
        .unwrap();

    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Queued
        }
    );
    let job = app.job(&job_id).await;
    let error = job["error"].as_str().unwrap();
    assert!(
        error.starts_with("attempt 1 of 3 failed: the job's process was killed by signal 9 (SIGKILL) from outside kiln"),
        "{error}"
    );
    assert!(!error.contains("ran out of memory"), "{error}");
    // It goes on from its last checkpoint on the next claim.
    let again = app.run_next_job_in_background();
    crate::helpers::eventually(Duration::from_secs(60), "the second attempt", || async {
        let job = app.job(&job_id).await;
        job["status"] == "RUNNING" && job["attempts"] == 2
    })
    .await;
    app.data(
        "mutation($id: ID!) { cancelJob(id: $id) { status } }",
        json!({ "id": job_id }),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), again)
        .await
        .expect("the cancel reaches the job")
        .unwrap();
}
