//! The `kiln` binary: parses the command line, starts logging and hands over to [`kiln::cli`].

use anyhow::Result;
use clap::{Parser, Subcommand};

use kiln::config::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kiln: a machine-learning training service.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, the playground and the workers.
    Serve(Config),
    /// Run workers only (no API), sharing the database with a `serve`.
    Worker(Config),
    /// Apply database migrations and exit.
    Migrate(Config),
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Train a model from a local file, with no server, printing progress.
    Train(kiln::cli::TrainArgs),
    /// Run one claimed job to its end: what a worker starts for each job, and what a Kubernetes pod
    /// runs. Exit code: 0 completed, 3 stopped (asked to, or the lease was taken over), 4 failed,
    /// 5 orphaned (its worker is gone), 6 re-queued for an automatic retry.
    RunJob(kiln::cli::RunJobArgs),
    /// Measure the training engine: `kiln bench train|predict --model minilm|tiny|mlp …`; the last line
    /// printed is `samples_per_s=<median>`.
    Bench(kiln::cli::BenchArgs),
    /// Answer inputs with a model folder, no server: one JSON line in per input (a text, or an array
    /// of numbers), one JSON line out (`label`, `probabilities`).
    Predict(kiln::cli::PredictArgs),
}

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, mimalloc 2's `mimalloc.h`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Training allocates and frees the same large buffers every step. By default mimalloc gives freed
/// memory back to the OS after 10 ms, and the next step's buffers are then fresh pages the kernel must
/// zero first (13 % of a MiniLM training step's samples, docs/perf.md). A training process keeps its
/// freed memory instead; the API server keeps the default.
fn keep_freed_memory() {
    // SAFETY: setting a mimalloc option is a plain store that mimalloc allows at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Runs the command; a failure is printed as one line (its causes joined with `: `), never as a
/// backtrace, and the exit code is 1.
fn main() {
    if let Err(e) = start() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn start() -> Result<()> {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Bench(_) | Command::Train(_) | Command::RunJob(_)
    ) {
        keep_freed_memory();
    }
    if let Command::Bench(args) = &cli.command {
        if let Some(threads) = args.threads {
            // SAFETY: no other thread exists yet, so nothing reads the environment concurrently; the
            // thread pools read this variable when they start.
            unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
        }
        return kiln::cli::bench(args);
    }
    if let Command::Predict(args) = &cli.command {
        return kiln::cli::predict(args);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    kiln::telemetry::init();
    match cli.command {
        Command::Bench(_) | Command::Predict(_) => {
            unreachable!("handled before the runtime starts")
        }
        Command::Schema => {
            print!("{}", kiln::api::sdl());
            Ok(())
        }
        Command::Serve(config) => kiln::cli::serve(config, true).await,
        Command::Worker(config) => kiln::cli::serve(config, false).await,
        Command::Migrate(config) => kiln::cli::migrate(config).await,
        Command::Train(args) => kiln::cli::train(args).await,
        Command::RunJob(args) => {
            let exit = kiln::cli::run_job(args).await?;
            std::process::exit(exit as i32)
        }
    }
}
