//! Job control through the API: pause and resume, a worker killed with SIGKILL, time limits, retries,
//! automatic retries of infrastructure failures, stalls. A job that stops and goes on from its checkpoint
//! ends exactly as the same job run without a stop: the same step losses, epochs and model bytes.

use std::time::Duration;

use kiln::domain::JobStatus;
use kiln::runner::Outcome;
use serde_json::{Value, json};

use crate::helpers::{
    Db, Objects, Options, TestApp, WsMessage, eventually, on_storage, separable_tabular_csv,
    separable_text_jsonl, spawn_with,
};

/// A small-BERT job long enough to be stopped while it trains (hundreds of steps).
fn text_job(dataset: &str, name: &str, epochs: u32) -> Value {
    json!({ "name": name, "modelName": "resumable", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
        "hyperparameters": { "epochs": epochs, "batchSize": 4, "seed": 9, "maxSeqLength": 16,
                             "checkpointEverySteps": 25, "keepCheckpoints": 2 } })
}

/// What a job recorded and produced, to compare two runs of the same job.
#[derive(Debug, PartialEq)]
struct Trace {
    losses: Vec<(i64, u64)>,
    epochs: Value,
    model: Vec<u8>,
    manifest: Vec<u8>,
}

async fn trace(app: &TestApp, job_id: &str) -> Trace {
    let data = app
        .data(
            "query($id: ID!) { job(id: $id) { status \
               metrics(name: \"train_loss\", last: 10000) { step value } \
               epochs { epoch trainLoss valLoss accuracy precision recall f1 } } }",
            json!({ "id": job_id }),
        )
        .await;
    assert_eq!(data["job"]["status"], "COMPLETED");
    let losses = data["job"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["step"].as_i64().unwrap(),
                p["value"].as_f64().unwrap().to_bits(),
            )
        })
        .collect();
    let dir = app.model_run_dir("resumable", job_id);
    Trace {
        losses,
        epochs: data["job"]["epochs"].clone(),
        model: std::fs::read(dir.join("model.safetensors")).unwrap(),
        manifest: std::fs::read(dir.join("kiln.json")).unwrap(),
    }
}

/// Two runs of one job recorded the same step losses and epochs and wrote the same model, bit for bit.
fn assert_same_run(run: &Trace, reference: &Trace) {
    assert_eq!(run.losses, reference.losses, "step losses");
    assert_eq!(run.epochs, reference.epochs, "epoch metrics");
    assert!(
        run.model == reference.model,
        "model.safetensors bytes differ"
    );
    assert_eq!(run.manifest, reference.manifest, "kiln.json");
}

/// An MLP job of 4800 quick steps (3000 rows, 4 epochs, batches of 2), with a checkpoint every 50.
fn mlp_job(dataset: &str, name: &str, max_duration_minutes: Option<f64>) -> Value {
    json!({ "name": name, "modelName": "resumable", "task": "TABULAR_CLASSIFICATION", "datasetId": dataset,
        "maxDurationMinutes": max_duration_minutes,
        "hyperparameters": { "epochs": 4, "batchSize": 2, "seed": 3, "checkpointEverySteps": 50 } })
}

/// A tabular dataset and what [`mlp_job`] on it records when run without a stop.
async fn mlp_reference(app: &TestApp) -> (String, Trace) {
    let dataset = app
        .ready_dataset("t.csv", separable_tabular_csv(3000, 2))
        .await;
    let job = app.queued_job(mlp_job(&dataset, "reference", None)).await;
    app.run_next_job().await;
    let reference = trace(app, &job).await;
    (dataset, reference)
}

/// The same job, run without a stop.
async fn reference_run(app: &TestApp, dataset: &str, epochs: u32) -> Trace {
    let job = app.queued_job(text_job(dataset, "reference", epochs)).await;
    assert_eq!(
        app.run_next_job().await,
        Outcome::Ran {
            job_id: job.clone(),
            status: JobStatus::Completed
        }
    );
    trace(app, &job).await
}

async fn checkpoints(app: &TestApp, job_id: &str) -> Vec<Value> {
    app.data(
        "query($id: ID!) { job(id: $id) { checkpoints { step epoch sizeBytes createdAt } } }",
        json!({ "id": job_id }),
    )
    .await["job"]["checkpoints"]
        .as_array()
        .unwrap()
        .clone()
}

async fn mutate(app: &TestApp, mutation: &str, job_id: &str) -> Value {
    let query = format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ status attempts error }} }}");
    app.data(&query, json!({ "id": job_id })).await[mutation].clone()
}

/// Waits for the job's first step event, so it is surely training.
async fn first_step(app: &TestApp, job_id: &str) {
    let mut events = app.subscribe_job(job_id).await;
    loop {
        if let WsMessage::Next(payload) = events.next(Duration::from_secs(60)).await
            && payload["data"]["jobEvents"]["__typename"] == "StepProgress"
        {
            return;
        }
    }
}

async fn pausing_and_resuming_a_job_ends_exactly_as_an_uninterrupted_run(db: Db, objects: Objects) {
    let app = spawn_with(Options::new(db, objects)).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(400, 4))
        .await;
    let reference = reference_run(&app, &dataset, 2).await;

    let job = app.queued_job(text_job(&dataset, "paused", 2)).await;
    let worker = app.run_next_job_in_background();
    first_step(&app, &job).await;
    let pausing = mutate(&app, "pauseJob", &job).await;
    assert!(
        ["RUNNING", "PAUSED"].contains(&pausing["status"].as_str().unwrap()),
        "{pausing}"
    );
    let outcome = tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the worker is freed")
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job.clone(),
            status: JobStatus::Paused
        }
    );
    let paused = app.job(&job).await;
    assert_eq!(paused["status"], "PAUSED");
    assert_eq!(paused["attempts"], 0, "a pause is not a failed attempt");
    let stored = checkpoints(&app, &job).await;
    let last = stored.last().expect("a checkpoint at the pause");
    let at = last["step"].as_i64().unwrap();
    assert_eq!(
        at,
        paused["progress"]["step"].as_i64().unwrap(),
        "the pause's checkpoint is where the job stopped: {stored:?}"
    );
    assert!(
        at < 200,
        "paused mid-run (200 steps in all), not at the end"
    );
    assert!(last["sizeBytes"].as_i64().unwrap() > 0);
    assert!(
        stored.len() <= 2,
        "keepCheckpoints bounds what is stored: {stored:?}"
    );
    assert_eq!(
        app.run_next_job().await,
        Outcome::Empty,
        "a paused job is held"
    );

    // Resumed, it goes on from the checkpoint; a follower hears where it rewinds to.
    let mut follower = app.subscribe_job(&job).await;
    assert_eq!(mutate(&app, "resumeJob", &job).await["status"], "QUEUED");
    assert_eq!(
        app.run_next_job().await,
        Outcome::Ran {
            job_id: job.clone(),
            status: JobStatus::Completed
        }
    );
    let events = follower
        .collect_until_complete(Duration::from_secs(30))
        .await;
    let resumed = events
        .iter()
        .position(|e| e["__typename"] == "JobResumed")
        .expect("a JobResumed event");
    assert_eq!(events[resumed]["fromStep"], at);
    let steps_after: Vec<i64> = events[resumed..]
        .iter()
        .filter(|e| e["__typename"] == "StepProgress")
        .map(|e| e["step"].as_i64().unwrap())
        .collect();
    assert!(
        steps_after.first().is_some_and(|s| *s == at + 1),
        "the re-run starts right after the checkpoint: {steps_after:?}"
    );

    let resumed = trace(&app, &job).await;
    assert_same_run(&resumed, &reference);
    assert!(
        checkpoints(&app, &job).await.is_empty(),
        "a completed job's checkpoints are removed"
    );
    assert_eq!(stored_files(&app, &job), 0, "checkpoint files are left");
}

/// Files stored under a job's checkpoint folder (an S3 server may leave empty folders behind).
fn stored_files(app: &TestApp, job_id: &str) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(&app.object_root().join("checkpoints").join(job_id))
}

on_storage!(pausing_and_resuming_a_job_ends_exactly_as_an_uninterrupted_run: sqlite_local, postgres_s3);

/// A separate `kiln worker` process on the app's database and objects, with a short lease.
fn worker_process(app: &TestApp) -> std::process::Child {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    command.arg("worker");
    for (name, value) in app.config.to_env() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command
        .env("KILN_WORKERS", "1")
        .env("KILN_LEASE_SECONDS", "1")
        .env("KILN_ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .env("KILN_JOB_EXECUTABLE", env!("CARGO_BIN_EXE_kiln"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(app.dir.path().join("worker.log")).unwrap())
        .spawn()
        .unwrap()
}

async fn a_worker_killed_mid_epoch_is_recovered_from_its_last_checkpoint(db: Db, objects: Objects) {
    let app = spawn_with(Options::new(db, objects)).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(600, 4))
        .await;
    // 6 epochs of 120 steps: seconds of training, so the kill lands while it trains.
    let reference = reference_run(&app, &dataset, 6).await;
    let job = app.queued_job(text_job(&dataset, "killed", 6)).await;
    let recovered = kill_and_recover(&app, &job, 720).await;
    assert_same_run(&recovered, &reference);
}

#[tokio::test]
async fn an_mlp_whose_worker_is_killed_is_recovered_exactly() {
    let app = spawn_with(Options::new(Db::Sqlite, Objects::Local)).await;
    let (dataset, reference) = mlp_reference(&app).await;
    let input = |name: &str| mlp_job(&dataset, name, None);
    let job = app.queued_job(input("killed")).await;
    let recovered = kill_and_recover(&app, &job, 4800).await;
    assert_same_run(&recovered, &reference);
}

/// Runs `job` on a separate `kiln worker` process, kills that process with SIGKILL once a checkpoint is
/// stored (training goes on past it meanwhile), then has the app's worker recover the job once the
/// lease expires, and returns what the recovered job recorded.
async fn kill_and_recover(app: &TestApp, job: &str, total_steps: i64) -> Trace {
    let mut worker = crate::processes::KillOnDrop(worker_process(app));
    let log = app.dir.path().join("worker.log");
    let started = std::time::Instant::now();
    loop {
        if !checkpoints(app, job).await.is_empty() {
            break;
        }
        let now = app.job(job).await;
        let waited = started.elapsed() > Duration::from_secs(60);
        if waited || !["QUEUED", "RUNNING"].contains(&now["status"].as_str().unwrap()) {
            panic!(
                "no checkpoint while it ran: {now}\nworker log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.0.kill().unwrap();
    worker.0.wait().unwrap();
    let before = app.job(job).await;
    assert_eq!(before["status"], "RUNNING");
    assert!(
        before["progress"]["step"].as_i64().unwrap() < total_steps,
        "killed mid-run"
    );

    // Once its lease expires, another worker takes the job from its last checkpoint.
    let started = std::time::Instant::now();
    let outcome = loop {
        match app.run_next_job().await {
            Outcome::Empty => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the lease never expired"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ran => break ran,
        }
    };
    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job.to_string(),
            status: JobStatus::Completed
        }
    );
    assert_eq!(app.job(job).await["attempts"], 2, "the crash counts");
    trace(app, job).await
}

on_storage!(a_worker_killed_mid_epoch_is_recovered_from_its_last_checkpoint: sqlite_local, postgres_s3);

#[tokio::test]
async fn a_job_past_its_time_limit_fails_and_a_retry_continues_it_from_its_checkpoint() {
    let app = spawn_with(Options::new(Db::Sqlite, Objects::Local)).await;
    let (dataset, reference) = mlp_reference(&app).await;

    // 0.02 minutes: the job is stopped after 1.2 s, long before its 4800 steps are done.
    let job = app
        .queued_job(mlp_job(&dataset, "limited", Some(0.02)))
        .await;
    let outcome = app.run_next_job().await;
    let error = app.failure_of(outcome, &job).await;
    assert!(
        error.starts_with("the job ran past its time limit (maxDurationMinutes)"),
        "{error}"
    );
    assert!(
        !checkpoints(&app, &job).await.is_empty(),
        "its checkpoint is kept"
    );

    // Each retry goes on from the last checkpoint with its time limit counted afresh, until the job is
    // done: however many times it was stopped, it ends as the uninterrupted run.
    let mut retries = 0;
    loop {
        let retried = mutate(&app, "retryJob", &job).await;
        assert_eq!(retried["status"], "QUEUED");
        assert_eq!(retried["attempts"], 0);
        assert_eq!(retried["error"], Value::Null);
        retries += 1;
        match app.run_next_job().await {
            Outcome::Ran {
                status: JobStatus::Completed,
                ..
            } => break,
            Outcome::Ran {
                status: JobStatus::Failed,
                ..
            } => assert!(retries < 30, "no progress across retries"),
            other => panic!("{other:?}"),
        }
    }
    let continued = trace(&app, &job).await;
    assert_same_run(&continued, &reference);

    // A completed job is not retried.
    let conflict = app
        .graphql(
            "mutation($id: ID!) { retryJob(id: $id) { status } }",
            json!({ "id": job }),
        )
        .await;
    assert_eq!(conflict["errors"][0]["extensions"]["code"], "CONFLICT");
}

#[tokio::test]
async fn pausing_a_queued_job_holds_it_and_ended_jobs_refuse_pause_and_resume() {
    let app = spawn_with(Options::new(Db::Sqlite, Objects::Local)).await;
    let dataset = app
        .ready_dataset("t.csv", separable_tabular_csv(40, 2))
        .await;
    let job = app
        .queued_job(
            json!({ "name": "held", "modelName": "m", "task": "TABULAR_CLASSIFICATION",
            "datasetId": dataset, "hyperparameters": { "epochs": 1 } }),
        )
        .await;
    assert_eq!(mutate(&app, "pauseJob", &job).await["status"], "PAUSED");
    assert_eq!(mutate(&app, "pauseJob", &job).await["status"], "PAUSED");
    assert_eq!(app.run_next_job().await, Outcome::Empty);
    assert_eq!(mutate(&app, "resumeJob", &job).await["status"], "QUEUED");
    assert_eq!(mutate(&app, "resumeJob", &job).await["status"], "QUEUED");
    assert_eq!(
        app.run_next_job().await,
        Outcome::Ran {
            job_id: job.clone(),
            status: JobStatus::Completed
        }
    );
    for mutation in ["pauseJob", "resumeJob", "retryJob"] {
        let answer = app
            .graphql(
                &format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ status }} }}"),
                json!({ "id": job }),
            )
            .await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "CONFLICT",
            "{mutation}: {answer}"
        );
        assert!(
            answer["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("COMPLETED"),
            "{answer}"
        );
    }
    let missing = app
        .graphql("mutation { pauseJob(id: \"nope\") { status } }", json!({}))
        .await;
    assert_eq!(missing["errors"][0]["extensions"]["code"], "NOT_FOUND");
    let bad = app
        .graphql(
            "mutation($d: ID!) { submitJob(input: { name: \"x\", modelName: \"m\", task: TABULAR_CLASSIFICATION, \
               datasetId: $d, maxDurationMinutes: 0 }) { id } }",
            json!({ "d": dataset }),
        )
        .await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(
        bad["errors"][0]["extensions"]["field"], "maxDurationMinutes",
        "{bad}"
    );
}

#[tokio::test]
async fn an_unreachable_hub_is_retried_with_backoff_until_attempts_run_out() {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    // Nothing listens there: the download fails on the network, an infrastructure failure.
    options.hf_endpoint = Some("http://127.0.0.1:9".into());
    let app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 1))
        .await;
    let job = app
        .queued_job(json!({ "name": "offline", "modelName": "m", "task": "TEXT_CLASSIFICATION",
            "datasetId": dataset, "baseModel": "hf:org/model", "hyperparameters": { "epochs": 1 } }))
        .await;
    for attempt in 1..=2 {
        assert_eq!(
            app.run_next_job().await,
            Outcome::Ran {
                job_id: job.clone(),
                status: JobStatus::Queued
            }
        );
        let queued = app.job(&job).await;
        assert_eq!(queued["status"], "QUEUED");
        assert_eq!(queued["attempts"], attempt);
        assert!(queued["nextAttemptAt"].is_string(), "{queued}");
        let error = queued["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("attempt {attempt} of 3 failed: "))
                && error.contains("from the hub failed: could not connect to 127.0.0.1")
                && error.ends_with("it is retried automatically"),
            "{error}"
        );
    }
    let outcome = app.run_next_job().await;
    let error = app.failure_of(outcome, &job).await;
    assert!(error.contains("from the hub failed"), "{error}");
    assert_eq!(app.job(&job).await["attempts"], 3);

    // A job cancelled while it waits for its retry no longer promises one.
    let job = app
        .queued_job(json!({ "name": "offline", "modelName": "m", "task": "TEXT_CLASSIFICATION",
            "datasetId": dataset, "baseModel": "hf:org/model", "hyperparameters": { "epochs": 1 } }))
        .await;
    app.run_next_job().await;
    app.data(
        "mutation($id: ID!) { cancelJob(id: $id) { status } }",
        json!({ "id": job }),
    )
    .await;
    let cancelled = app.job(&job).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(cancelled["nextAttemptAt"].is_null(), "{cancelled}");
    let error = cancelled["error"].as_str().unwrap();
    assert!(
        error.contains("could not connect")
            && error.ends_with("the job was cancelled before its retry"),
        "{error}"
    );
}

#[tokio::test]
async fn a_job_whose_progress_stops_is_marked_stalled_until_it_moves_again() {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.stall_seconds = 1;
    let app = spawn_with(options).await;
    // Long epochs: the job then writes to the database about once a second, so the stop below is
    // unlikely to catch it holding a write lock (which would block the supervisor's mark too).
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(2000, 3))
        .await;
    let job = app
        .queued_job(json!({ "name": "stuck", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "hyperparameters": { "epochs": 500, "batchSize": 4, "maxSeqLength": 16 } }))
        .await;
    let worker = app.run_next_job_in_background();
    app.wait_until_training(&job).await;
    let child = crate::processes::processes_with(&["run-job", &job]);
    assert_eq!(child.len(), 1);
    // The job's process stops making progress; its worker still holds the lease.
    unsafe { libc::kill(child[0] as i32, libc::SIGSTOP) };
    eventually(
        Duration::from_secs(20),
        "the job to be marked stalled",
        || async { app.job(&job).await["progress"]["stalledSince"].is_string() },
    )
    .await;
    assert_eq!(app.job(&job).await["status"], "RUNNING");
    let logs = app
        .data(
            "query($id: ID!) { job(id: $id) { logs(level: WARN) { level message } } }",
            json!({ "id": job }),
        )
        .await;
    let warned = logs["job"]["logs"].as_array().unwrap().iter().any(|l| {
        l["message"]
            .as_str()
            .unwrap()
            .starts_with("no training progress for 1 s")
    });
    assert!(warned, "{logs}");
    unsafe { libc::kill(child[0] as i32, libc::SIGCONT) };
    eventually(
        Duration::from_secs(20),
        "progress to clear the mark",
        || async { app.job(&job).await["progress"]["stalledSince"].is_null() },
    )
    .await;
    mutate(&app, "cancelJob", &job).await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job,
            status: JobStatus::Cancelled
        }
    );
}

#[tokio::test]
async fn a_cancelled_job_is_retried_from_its_checkpoint_or_from_scratch() {
    let app = spawn_with(Options::new(Db::Sqlite, Objects::Local)).await;
    let (dataset, reference) = mlp_reference(&app).await;
    let input = |name: &str| mlp_job(&dataset, name, None);

    let cancel_after_a_checkpoint = |job: String| {
        let app = &app;
        async move {
            let worker = app.run_next_job_in_background();
            eventually(Duration::from_secs(60), "a stored checkpoint", || async {
                !checkpoints(app, &job).await.is_empty()
            })
            .await;
            mutate(app, "cancelJob", &job).await;
            assert_eq!(
                worker.await.unwrap(),
                Outcome::Ran {
                    job_id: job.clone(),
                    status: JobStatus::Cancelled
                }
            );
        }
    };
    let job = app.queued_job(input("cancelled")).await;
    cancel_after_a_checkpoint(job.clone()).await;
    let kept = checkpoints(&app, &job).await;
    assert!(!kept.is_empty(), "a cancelled job keeps its checkpoints");

    // From scratch: the checkpoints go, and the job starts at step 0.
    let retried = app
        .data(
            "mutation($id: ID!) { retryJob(id: $id, fromCheckpoint: false) { status checkpoints { step } } }",
            json!({ "id": job }),
        )
        .await;
    assert_eq!(retried["retryJob"]["status"], "QUEUED");
    assert_eq!(retried["retryJob"]["checkpoints"], json!([]));
    assert_eq!(stored_files(&app, &job), 0);
    let mut follower = app.subscribe_job(&job).await;
    cancel_after_a_checkpoint(job.clone()).await;
    let events = follower
        .collect_until_complete(Duration::from_secs(30))
        .await;
    let rewound: Vec<&Value> = events
        .iter()
        .filter(|e| e["__typename"] == "JobResumed")
        .collect();
    assert_eq!(rewound.len(), 1, "{events:?}");
    assert_eq!(rewound[0]["fromStep"], 0);

    // From its checkpoint (the default): it ends as the uninterrupted run.
    assert_eq!(mutate(&app, "retryJob", &job).await["status"], "QUEUED");
    assert_eq!(
        app.run_next_job().await,
        Outcome::Ran {
            job_id: job.clone(),
            status: JobStatus::Completed
        }
    );
    let continued = trace(&app, &job).await;
    assert_same_run(&continued, &reference);
}

#[tokio::test]
async fn a_damaged_checkpoint_is_skipped_for_the_one_before_it() {
    let app = spawn_with(Options::new(Db::Sqlite, Objects::Local)).await;
    let (dataset, reference) = mlp_reference(&app).await;
    let job = app.queued_job(mlp_job(&dataset, "damaged", None)).await;
    let worker = app.run_next_job_in_background();
    eventually(
        Duration::from_secs(60),
        "two stored checkpoints",
        || async { checkpoints(&app, &job).await.len() >= 2 },
    )
    .await;
    mutate(&app, "pauseJob", &job).await;
    worker.await.unwrap();
    let stored = checkpoints(&app, &job).await;
    let steps: Vec<u64> = stored.iter().map(|c| c["step"].as_u64().unwrap()).collect();
    let (older, newest) = (steps[steps.len() - 2], steps[steps.len() - 1]);

    // The newest checkpoint's weights are damaged in the object store (a disk fault, a bad copy).
    let weights = app
        .object_path(&kiln::objects::keys::checkpoint(&job, newest).unwrap())
        .join("weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&weights, bytes).unwrap();

    let mut follower = app.subscribe_job(&job).await;
    mutate(&app, "resumeJob", &job).await;
    assert_eq!(
        app.run_next_job().await,
        Outcome::Ran {
            job_id: job.clone(),
            status: JobStatus::Completed
        }
    );
    let events = follower
        .collect_until_complete(Duration::from_secs(30))
        .await;
    let resumed = events
        .iter()
        .find(|e| e["__typename"] == "JobResumed")
        .expect("a JobResumed event");
    assert_eq!(resumed["fromStep"], older, "{steps:?}");
    assert_same_run(&trace(&app, &job).await, &reference);
}
