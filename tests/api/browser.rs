//! The web pages in a real browser: Debian's `chromium` driven by npm `playwright-core`, both installed
//! by `scripts/test`. Each page has a script in `tests/browser/` that this file starts against a kiln
//! with what the page needs; the scripts write screenshots (1280×800 and phone width) to a folder they
//! print. Without chromium or playwright-core the tests say so and skip, unless
//! `KILN_TEST_REQUIRE_TOOLS` is set (as `scripts/test` sets it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use kiln::domain::JobStatus;
use kiln::runner::Outcome;

use crate::helpers::{
    Db, Objects, TestApp, separable_tabular_csv, separable_text_jsonl, spawn_app,
};
use crate::processes::processes_with;
use crate::registry::train_one;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The browser and its driver, or `None` (having said why) when the test should skip.
fn browser() -> Option<PathBuf> {
    let chromium = std::env::var_os("KILN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let driver = repository().join("tests/browser/node_modules/playwright-core");
    let missing = if !chromium.exists() {
        Some(format!("{} (Debian package chromium)", chromium.display()))
    } else if !driver.exists() {
        Some("tests/browser/node_modules (npm ci in tests/browser)".to_string())
    } else {
        None
    };
    match missing {
        None => Some(chromium),
        Some(what) if std::env::var_os("KILN_TEST_REQUIRE_TOOLS").is_some() => {
            panic!("the browser tests need {what}: run scripts/test")
        }
        Some(what) => {
            eprintln!("skipping the browser test: {what} is missing (scripts/test installs it)");
            None
        }
    }
}

/// Runs `tests/browser/<script>` with `env`, calling `on_line` with each line it prints; panics with its
/// output when it fails.
async fn run_script(
    script: &str,
    chromium: &Path,
    env: &[(&str, String)],
    mut on_line: impl FnMut(&str),
) {
    use tokio::io::AsyncBufReadExt;

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("screenshots")
        .join(script.trim_end_matches(".mjs"));
    let mut command = tokio::process::Command::new("node");
    command
        .arg(repository().join("tests/browser").join(script))
        .env("KILN_CHROMIUM", chromium)
        .env("KILN_SCREENSHOTS", &shots)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("node runs");
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text)
            .await
            .ok();
        text
    });
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = String::new();
    let ran = tokio::time::timeout(Duration::from_secs(300), async {
        while let Ok(Some(line)) = lines.next_line().await {
            on_line(&line);
            said.push_str(&line);
            said.push('\n');
        }
        child.wait().await
    })
    .await
    .expect("the browser test ends within 5 minutes")
    .expect("node runs");
    said.push_str(&errors.await.unwrap_or_default());
    eprintln!("{script}: {said}");
    assert!(ran.success(), "{script} failed:\n{said}");
}

/// README step 3's subscription, as the README prints it, for `job_id`.
fn readme_subscription(job_id: &str) -> String {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("subscription { jobEvents(jobId: \"JOB_ID\")"))
        .expect("README step 3 holds the jobEvents subscription");
    let start = line.find("subscription").unwrap();
    line[start..].trim().replace("JOB_ID", job_id)
}

/// Runs `prepare` on a fresh kiln, queues a text job named `watched` of `epochs`, runs `script` with
/// `env` (and the kiln's URL and token), runs the job (as a worker would) each time the script prints
/// one of `cues`, and checks that the job completed. The cue `crash` kills the job's process instead
/// (as a machine that dies would) and runs the job again once its worker has put it back in the queue.
async fn watch_a_job_in_the_browser(
    script: &str,
    epochs: u32,
    cues: &[&str],
    prepare: impl AsyncFnOnce(&TestApp),
    env: impl FnOnce(&str) -> Vec<(&'static str, String)>,
) {
    let Some(chromium) = browser() else {
        return;
    };
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    prepare(&app).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(120, 4))
        .await;
    let job = app
        .queued_job(json!({ "name": "watched", "modelName": "guard", "task": "TEXT_CLASSIFICATION",
            "datasetId": dataset, "hyperparameters": { "epochs": epochs, "batchSize": 4, "maxSeqLength": 16 } }))
        .await;
    let mut vars = vec![("KILN_URL", app.url("")), ("KILN_TOKEN", app.token.clone())];
    vars.extend(env(&job));
    let mut workers: Vec<tokio::task::JoinHandle<Outcome>> = Vec::new();
    let mut heard = 0;
    run_script(script, &chromium, &vars, |line| {
        if cues.get(heard) != Some(&line) {
            return;
        }
        heard += 1;
        if line != "crash" {
            workers.push(app.run_next_job_in_background());
            return;
        }
        let running = workers.pop().expect("the job runs when it crashes");
        let processes = processes_with(&["run-job", &job]);
        assert_eq!(processes.len(), 1, "the job's process: {processes:?}");
        // SAFETY: a plain signal to a process this test's kiln started.
        unsafe { libc::kill(processes[0] as i32, libc::SIGKILL) };
        let worker = app.worker();
        workers.push(tokio::spawn(async move {
            let ended = running.await.expect("the worker ends");
            assert!(
                matches!(
                    &ended,
                    Outcome::Ran {
                        status: JobStatus::Queued,
                        ..
                    }
                ),
                "the killed attempt: {ended:?}"
            );
            worker.try_run_next().await.expect("the worker runs")
        }));
    })
    .await;
    assert_eq!(heard, cues.len(), "{script} did not print all of {cues:?}");
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(app.job(&job).await["status"], "COMPLETED");
}

#[tokio::test]
async fn graphiql_follows_a_training_job_with_the_token_from_its_field() {
    watch_a_job_in_the_browser(
        "graphiql.mjs",
        8,
        &["subscribed"],
        async |_| {},
        |job| vec![("KILN_SUBSCRIPTION", readme_subscription(job))],
    )
    .await;
}

#[tokio::test]
async fn the_dashboard_follows_pauses_resumes_and_rewinds_a_job_uploads_a_dataset_and_promotes_the_model()
 {
    // Long enough to be paused from the page while it trains, and to crash after that.
    let epochs = 40;
    let cues = ["watching", "resumed", "crash"];
    // A tabular model with two versions, for comparing versions on its page.
    let two_versions = async |app: &TestApp| {
        let rows = app
            .ready_dataset("rows.csv", separable_tabular_csv(120, 4))
            .await;
        for rate in [0.02, 0.01] {
            let hyperparameters = json!({ "epochs": 5, "learningRate": rate });
            train_one(app, "scorer", &rows, hyperparameters, None).await;
        }
    };
    watch_a_job_in_the_browser("dashboard.mjs", epochs, &cues, two_versions, |job| {
        vec![
            ("KILN_JOB", job.to_string()),
            ("KILN_EPOCHS", epochs.to_string()),
        ]
    })
    .await;
}
