//! The README's walk-through, run exactly as it is printed (its shell block, taken from README.md) with
//! bash, curl and jq against a fresh kiln, so that the README cannot drift from what works; and the
//! Python example (`examples/python/quickstart.py`).

use std::path::Path;
use std::time::Duration;

use crate::helpers::{Db, Objects, Options, spawn_with};

/// The shell block under the README's "A walk-through" heading.
fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## A walk-through\n")
        .nth(1)
        .expect("the README has a walk-through");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the walk-through is a sh block");
    block.to_string()
}

#[tokio::test]
async fn the_readme_walkthrough_runs_as_printed() {
    if std::process::Command::new("jq")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("KILN_TEST_REQUIRE_TOOLS").is_none(),
            "the walk-through needs jq: run scripts/test"
        );
        eprintln!("skipping the walk-through: jq is missing (scripts/test installs it)");
        return;
    }
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.workers = 1;
    let app = spawn_with(options).await;
    // The commands run from a copy of the repository's folder as far as they read it: the sample data.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("examples")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/prompts.jsonl"),
        dir.path().join("examples/prompts.jsonl"),
    )
    .unwrap();

    let mut bash = tokio::process::Command::new("bash");
    bash.args(["-euo", "pipefail", "-c", &walkthrough()])
        .current_dir(dir.path());
    let stdout = run_against(&app, bash, "the walk-through").await;
    assert!(stdout.contains(": COMPLETED"), "{stdout}");
    // The model tells the two kinds apart, through its version and through the alias.
    assert!(
        stdout.contains(r#"{"label":"injection""#) && stdout.contains(r#"{"label":"benign""#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"[{"alias":"production","version":1}]"#),
        "{stdout}"
    );
    assert!(stdout.contains(r#""version":1}"#), "{stdout}");
    let zip = std::fs::read(dir.path().join("pi-detector-v1.zip")).unwrap();
    assert_eq!(&zip[..4], b"PK\x03\x04");
    assert!(
        stdout.contains("INFO") && stdout.contains("completed"),
        "{stdout}"
    );
}

/// A Python that has `requests` and `websockets` (scripts/test installs them into its virtual
/// environment and sets `KILN_TEST_PYTHON`), or `None` having said why the test skips.
fn python_with_clients() -> Option<std::path::PathBuf> {
    let python = std::env::var_os("KILN_TEST_PYTHON")
        .map_or_else(|| std::path::PathBuf::from("python3"), Into::into);
    let ready = std::process::Command::new(&python)
        .args(["-c", "import requests, websockets"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        return Some(python);
    }
    assert!(
        std::env::var_os("KILN_TEST_REQUIRE_TOOLS").is_none(),
        "{} cannot import requests and websockets: run scripts/test",
        python.display()
    );
    eprintln!("skipping the Python example: no Python with requests and websockets");
    None
}

#[tokio::test]
async fn the_python_example_uploads_trains_follows_and_predicts() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.workers = 1;
    let app = spawn_with(options).await;
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));

    let mut example = tokio::process::Command::new(python);
    example
        .arg(repository.join("examples/python/quickstart.py"))
        .arg(repository.join("examples/prompts.jsonl"));
    let stdout = run_against(&app, example, "the Python example").await;
    assert!(
        stdout.contains("dataset ") && stdout.contains(": 300 rows"),
        "{stdout}"
    );
    assert!(stdout.contains("epoch 3: val loss"), "{stdout}");
    assert!(stdout.contains("status COMPLETED"), "{stdout}");
    assert!(
        stdout.contains("predicted injection") && stdout.contains("predicted benign"),
        "{stdout}"
    );
}

/// Runs `command` with `KILN` and `KILN_TOKEN` set for `app`, within 5 minutes; asserts that it
/// succeeded and returns what it printed.
async fn run_against(
    app: &crate::helpers::TestApp,
    mut command: tokio::process::Command,
    what: &str,
) -> String {
    let run = tokio::time::timeout(
        Duration::from_secs(300),
        command
            .env("KILN", app.url(""))
            .env("KILN_TOKEN", &app.token)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} ends within 5 minutes"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{what} printed:\n{stdout}");
    assert!(run.status.success(), "{stdout}\n{stderr}");
    stdout
}
