//! The database going away for a while: requests fail fast, cached tokens keep working, /readyz says so
//! at once, and a training job keeps its progress and finishes.

use std::time::{Duration, Instant};

use kiln::domain::JobStatus;
use kiln::runner::Outcome;
use serde_json::json;

use crate::helpers::{Db, Objects, Options, eventually, long_text_jsonl, spawn_with};

#[tokio::test]
async fn a_database_outage_fails_requests_fast_keeps_cached_tokens_and_loses_no_training() {
    let mut options = Options::new(Db::Postgres, Objects::Local);
    options.db_proxy = true;
    options.token_cache_seconds = 1;
    let app = spawn_with(options).await;
    let proxy = app.db_proxy.clone().unwrap();
    let dataset = app.ready_dataset("d.jsonl", long_text_jsonl(160)).await;
    let job_id = app
        .queued_job(json!({ "name": "through", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "modelConfig": { "hiddenSize": 128, "numLayers": 2, "numHeads": 2, "intermediateSize": 256 },
            "hyperparameters": { "epochs": 8, "batchSize": 16, "maxSeqLength": 64 } }))
        .await;
    let worker = app.run_next_job_in_background();
    eventually(Duration::from_secs(60), "two finished epochs", || async {
        app.job(&job_id).await["epochs"]
            .as_array()
            .is_some_and(|e| e.len() >= 2)
    })
    .await;
    assert!(app.data("{ me { name } }", json!({})).await["me"].is_object());
    // The cached token is no longer fresh: it would be checked against the database.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    proxy.cut();
    let cut_at = Instant::now();

    let me = app.graphql("{ me { name } }", json!({})).await;
    assert!(
        me.get("errors").is_none(),
        "a known token still works: {me}"
    );
    let started = Instant::now();
    let listing = app.graphql("{ jobs { totalCount } }", json!({})).await;
    assert_eq!(
        listing["errors"][0]["extensions"]["code"], "UNAVAILABLE",
        "{listing}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a request while the database is known down fails at once ({:?})",
        started.elapsed()
    );
    let started = Instant::now();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(3));
    // It says which dependency is down, and that the others answer.
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "not ready", "{body}");
    assert_eq!(body["checks"][0]["name"], "database", "{body}");
    assert_eq!(body["checks"][0]["ok"], false, "{body}");
    assert!(
        body["checks"][0]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(body["checks"][1]["name"], "objectStore", "{body}");
    assert_eq!(body["checks"][1]["ok"], true, "{body}");
    let remaining = Duration::from_secs(5).saturating_sub(cut_at.elapsed());
    tokio::time::sleep(remaining).await;
    proxy.restore();

    let outcome = tokio::time::timeout(Duration::from_secs(120), worker)
        .await
        .expect("the job finishes")
        .unwrap();

    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Completed
        }
    );
    let job = app.job(&job_id).await;
    assert_eq!(job["attempts"], 1, "the job was not started again");
    let epochs: Vec<i64> = job["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs, (1..=8).collect::<Vec<_>>(), "no epoch was lost");
    assert_eq!(job["modelVersion"]["version"], 1);
}

/// A Postgres server of the test's own (initdb in a temporary folder, run as the `postgres` user), so
/// that the test may restart it without touching the server other tests share.
struct PrivatePostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// `None` where it cannot run here (not root, or no Postgres installed) and tools are optional.
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| versions.flatten().map(|v| v.path().join("bin")).max());
        let root = unsafe { libc::geteuid() } == 0;
        let Some(bin) = bin.filter(|b| b.join("initdb").exists() && root) else {
            assert!(
                std::env::var_os("KILN_TEST_REQUIRE_TOOLS").is_none(),
                "this test runs its own Postgres: it needs root and Debian's postgresql"
            );
            eprintln!("SKIPPED: this test needs root and Debian's postgresql");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Self { bin, dir, port };
        server.as_postgres(&["initdb", "-A", "trust", "-U", "postgres", "-D", "data"]);
        server.control("start");
        Some(server)
    }

    fn as_postgres(&self, args: &[&str]) {
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(args[0]))
            .args(&args[1..])
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start` or `stop` (fast: every session is ended, as a restart does).
    fn control(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let log = log.to_str().unwrap();
        match action {
            "start" => self.as_postgres(&[
                "pg_ctl", "-D", "data", "-l", log, "-o", &options, "-w", "start",
            ]),
            _ => self.as_postgres(&["pg_ctl", "-D", "data", "-m", "fast", "-w", "stop"]),
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", "data", "-m", "immediate", "-w", "stop"])
            .current_dir(self.dir.path())
            .output();
    }
}

/// Postgres restarted under a running kiln: requests fail with UNAVAILABLE while it is down, kiln
/// answers again without being restarted, and a training job keeps its progress and completes (a
/// restart ends every session with SQLSTATE 57P01, which is the database being away, not the job's
/// failure).
#[tokio::test]
async fn a_postgres_restart_fails_requests_meanwhile_and_loses_no_training() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let mut options = Options::new(Db::Postgres, Objects::Local);
    options.database_url = Some(postgres.url());
    let app = spawn_with(options).await;
    let dataset = app.ready_dataset("d.jsonl", long_text_jsonl(160)).await;
    let job_id = app
        .queued_job(json!({ "name": "through", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "hyperparameters": { "epochs": 40, "batchSize": 16, "maxSeqLength": 32 } }))
        .await;
    let worker = app.run_next_job_in_background();
    app.wait_until_training(&job_id).await;
    let before = app.job(&job_id).await["progress"]["step"].as_i64().unwrap();

    postgres.control("stop");
    let answer = app
        .graphql("{ jobs(first: 5) { totalCount } }", json!({}))
        .await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "UNAVAILABLE",
        "{answer}"
    );
    // Long enough for the job to record and checkpoint while it is away.
    tokio::time::sleep(Duration::from_secs(8)).await;
    postgres.control("start");

    eventually(Duration::from_secs(30), "kiln to answer again", || async {
        app.graphql("{ jobs(first: 5) { totalCount } }", json!({}))
            .await["errors"]
            .is_null()
    })
    .await;
    let outcome = tokio::time::timeout(Duration::from_secs(240), worker)
        .await
        .expect("the job ends")
        .unwrap();
    let job = app.job(&job_id).await;
    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Completed
        },
        "{job}"
    );
    assert_eq!(job["attempts"], 1, "{job}");
    assert!(job["progress"]["step"].as_i64().unwrap() > before);
}
