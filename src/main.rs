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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Bench(args) = &cli.command {
        if let Some(threads) = args.threads {
            // SAFETY: no other thread exists yet, so nothing reads the environment concurrently; the
            // thread pools read this variable when they start.
            unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
        }
        return kiln::cli::bench(args);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    kiln::telemetry::init();
    match cli.command {
        Command::Bench(_) => unreachable!("handled before the runtime starts"),
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
