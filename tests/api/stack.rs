//! scripts/stack: the production topology as local processes (Postgres, Redis, an S3-protocol server,
//! one API process, two worker processes). A job is driven through it; the worker process running it
//! is SIGKILLed mid-job, and the job finishes on the other worker from its checkpoint.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Remote, eventually, separable_text_jsonl};

/// `scripts/stack up|down DIR`, with `env` on top.
fn stack(command: &str, dir: &Path, env: &[(&str, &str)]) {
    let mut run =
        std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/stack"));
    run.arg(command)
        .arg(dir)
        .env("KILN_BIN", env!("CARGO_BIN_EXE_kiln"));
    for (name, value) in env {
        run.env(name, value);
    }
    let output = run.output().expect("scripts/stack runs");
    assert!(
        output.status.success(),
        "scripts/stack {command} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Stops the stack when the test ends, passed or not.
struct Running<'a>(&'a Path);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        stack("down", self.0, &[]);
    }
}

fn stack_env(dir: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(dir.join("stack.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

const STATS: &str = "{ queueStats { workers { busy idle total replicas { pid busy idle } } } }";

#[tokio::test]
async fn a_job_survives_the_kill_of_its_worker_process_in_the_local_stack() {
    if std::env::var_os("KILN_TEST_REQUIRE_TOOLS").is_none()
        && std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("skipping the stack test: redis-server is missing (scripts/test installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    stack(
        "up",
        dir.path(),
        &[
            ("KILN_LEASE_SECONDS", "3"),
            ("KILN_RETRY_BASE_SECONDS", "1"),
            ("KILN_LOG_FORMAT", "text"),
            ("RUST_LOG", "info"),
        ],
    );
    let _running = Running(dir.path());
    let env = stack_env(dir.path());
    let kiln = Remote::new(&env["KILN_URL"], &env["KILN_TOKEN"]);
    let workers: Vec<i64> = env["STACK_WORKER_PIDS"]
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(workers.len(), 2);

    // Both worker processes registered with the queue.
    eventually(
        Duration::from_secs(30),
        "both workers to register",
        || async { kiln.data(STATS, json!({})).await["queueStats"]["workers"]["total"] == 2 },
    )
    .await;

    let dataset = kiln
        .ready_dataset("d.jsonl", separable_text_jsonl(400, 7))
        .await;
    let job = kiln
        .queued_job(
            json!({ "name": "survivor", "modelName": "stack", "task": "TEXT_CLASSIFICATION",
            "datasetId": dataset, "hyperparameters": { "epochs": 30, "batchSize": 8,
            "maxSeqLength": 16, "checkpointEverySteps": 20 } }),
        )
        .await;
    let checkpointed = "query($id: ID!) { job(id: $id) { status attempts progress { step } \
        checkpoints { step } logs(last: 200) { message } } }";
    eventually(
        Duration::from_secs(120),
        "a checkpoint of the running job",
        || async {
            let job = &kiln.data(checkpointed, json!({ "id": job })).await["job"];
            job["status"] == "RUNNING" && !job["checkpoints"].as_array().unwrap().is_empty()
        },
    )
    .await;

    // The worker process that runs it, as the queue's registry says.
    let stats = kiln.data(STATS, json!({})).await;
    let busy: Vec<i64> = stats["queueStats"]["workers"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["busy"] == 1)
        .map(|r| r["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(busy.len(), 1, "{stats}");
    let victim = busy[0];
    assert!(
        workers.contains(&victim),
        "{victim} is not one of {workers:?}"
    );
    // SAFETY: a plain signal to a process this test's stack started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };

    // The other worker takes it over from its checkpoint once the lease lapses, and finishes it.
    eventually(Duration::from_secs(300), "the job to complete", || async {
        let status = &kiln.data(checkpointed, json!({ "id": job })).await["job"]["status"];
        assert_ne!(status, "FAILED");
        status == "COMPLETED"
    })
    .await;
    let done: Value = kiln.data(checkpointed, json!({ "id": job })).await["job"].clone();
    assert_eq!(done["attempts"], 2, "{done}");
    let log: Vec<&str> = done["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        log.iter()
            .any(|m| m.contains("from the checkpoint at step")),
        "the second attempt did not go on from a checkpoint:\n{}",
        log.join("\n")
    );
    // Only the survivor still counts as a worker.
    eventually(
        Duration::from_secs(30),
        "the killed worker to drop out",
        || async {
            let stats = kiln.data(STATS, json!({})).await;
            let replicas = stats["queueStats"]["workers"]["replicas"].clone();
            replicas.as_array().unwrap().len() == 1 && replicas[0]["pid"] != victim
        },
    )
    .await;
}
