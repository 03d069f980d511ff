//! The command line: every command and its settings. It lives in the library so that tests can list
//! every setting the commands read (the settings file, the docs and the job processes' environment are
//! checked against it).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::LogFormat;

/// kiln: a machine-learning training service.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The settings file (TOML; keys are the `KILN_*` variables' names without `KILN_`, in lower
    /// case), or `KILN_CONFIG` (empty: none); default: `kiln.toml` in the working folder when there
    /// is one. A variable wins over the file, a flag over both.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log lines as `text` (for people) or `json` (one object per line, for collectors).
    #[arg(
        long,
        global = true,
        env = "KILN_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// An OTLP/HTTP collector to send traces to (`http://collector:4318`; kiln posts to
    /// `/v1/traces`); absent: no traces. The standard `OTEL_BSP_*` variables tune the batching.
    #[arg(long, global = true, env = "KILN_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API, the playground and the workers.
    Serve(Config),
    /// Run workers only (no API), sharing the database with a `serve`.
    Worker(Config),
    /// Apply database migrations and exit.
    Migrate(Config),
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Train a model from a local file, with no server, printing progress.
    Train(super::TrainArgs),
    /// Run one claimed job to its end: what a worker starts for each job, and what a Kubernetes pod
    /// runs. Exit code: 0 completed, 3 stopped (asked to, or the lease was taken over), 4 failed,
    /// 5 orphaned (its worker is gone), 6 re-queued for an automatic retry.
    RunJob(super::RunJobArgs),
    /// Measure the training engine: `kiln bench train|predict --model minilm|tiny|mlp …`; the last line
    /// printed is `samples_per_s=<median>`.
    Bench(super::BenchArgs),
    /// Answer inputs with a model folder, no server: one JSON line in per input (a text, or an array
    /// of numbers), one JSON line out (`label`, `probabilities`).
    Predict(super::PredictArgs),
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory;

    use super::Cli;
    use crate::config::file::{self, CONFIG_VAR};

    fn repo_file(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every `KILN_*` name in the first column of docs/configuration.md's settings table.
    fn documented() -> BTreeSet<String> {
        let text = repo_file("docs/configuration.md");
        let mut names = BTreeSet::new();
        for line in text.lines().filter(|l| l.starts_with("| `")) {
            let first = line.split('|').nth(1).unwrap_or_default();
            for part in first.split('`').skip(1).step_by(2) {
                if part.starts_with("KILN_") {
                    names.insert(part.to_string());
                }
            }
        }
        names
    }

    /// Every key of kiln.example.toml, commented out or not (`# key = …`).
    fn example_keys() -> BTreeSet<String> {
        repo_file("kiln.example.toml")
            .lines()
            .filter_map(|line| {
                let line = line.trim_start_matches('#').trim_start();
                let (key, _) = line.split_once(" = ")?;
                key.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    .then(|| key.to_string())
            })
            .map(|key| key.strip_suffix("_file").map(str::to_string).unwrap_or(key))
            .collect()
    }

    #[test]
    fn the_docs_the_example_file_and_the_commands_name_the_same_settings() {
        let settings = file::settings(&Cli::command());
        let mut documented = documented();
        assert!(
            documented.remove(CONFIG_VAR),
            "docs/configuration.md must document {CONFIG_VAR}"
        );
        assert_eq!(
            documented, settings,
            "docs/configuration.md's table and the commands' KILN_* variables differ"
        );
        let keys: BTreeSet<String> = settings.iter().map(|v| file::key_of(v)).collect();
        assert_eq!(
            example_keys(),
            keys,
            "kiln.example.toml and the commands' settings differ"
        );
    }

    #[test]
    fn a_job_process_is_handed_every_setting_it_reads() {
        // What `serve` knows and its job processes do not need: where it listens and how it serves,
        // its own workers, the token it mints, how jobs are started and stopped, predictions.
        const SERVER_ONLY: [&str; 20] = [
            "KILN_UPLOAD_EXPIRY_HOURS",
            "KILN_ALLOW_PII",
            "KILN_RUNNER",
            "KILN_WORKER_GPUS",
            "KILN_K8S_IMAGE",
            "KILN_K8S_NAMESPACE",
            "KILN_K8S_NODE_SELECTOR",
            "KILN_K8S_TOLERATIONS",
            "KILN_K8S_SECRET",
            "KILN_K8S_TTL_SECONDS",
            "KILN_METRICS_BIND",
            "KILN_TOKEN_CACHE_SECONDS",
            "KILN_MAX_CONNECTIONS",
            "KILN_HTTP_TIMEOUT_SECONDS",
            "KILN_JOB_EXECUTABLE",
            "KILN_JOB_MEMORY_LIMIT",
            "KILN_JOB_STOP_GRACE_SECONDS",
            "KILN_MODEL_CACHE_SIZE",
            "KILN_PREDICT_MEMORY",
            "KILN_PREDICT_WAIT_SECONDS",
        ];
        let mut cli = Cli::command();
        // Built, each command holds the global settings (the log format) too.
        cli.build();
        let serve = cli.find_subcommand("serve").expect("serve");
        let read = file::settings(serve);
        let config = crate::config::Config::embedded(std::path::Path::new("/tmp/kiln"));
        let handed: BTreeSet<String> = config
            .to_env()
            .into_iter()
            .map(|(name, _)| name.to_string())
            .collect();
        let missing: Vec<&String> = read
            .iter()
            .filter(|v| !handed.contains(*v) && !SERVER_ONLY.contains(&v.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "serve reads {missing:?} but does not hand them to job processes (Config::to_env); \
             add them there, or to SERVER_ONLY here if a job has no use for them"
        );
        assert!(
            handed.contains(CONFIG_VAR),
            "a job process must not read a settings file"
        );
    }
}
