//! The `kiln` binary: parses the command line, starts logging and hands over to [`kiln::cli`].

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};

use kiln::cli::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The settings file and `KILN_*_FILE` secrets become variables before the command line is read;
    // no other thread exists yet.
    kiln::config::file::apply(&Cli::command(), &args)?;
    let matches = Cli::command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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
    // Logging (and the trace exporter's thread) start before the runtime.
    kiln::telemetry::init(cli.log_format, cli.otlp_endpoint.as_deref())?;
    let ran = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli));
    // The spans still buffered go out before the process ends.
    kiln::telemetry::shutdown();
    match ran? {
        Some(code) => std::process::exit(code),
        None => Ok(()),
    }
}

/// Runs the command; `Some(code)` when the process must exit with that code.
async fn run(cli: Cli) -> Result<Option<i32>> {
    match cli.command {
        Command::Bench(_) | Command::Predict(_) => {
            unreachable!("handled before the runtime starts")
        }
        Command::Schema => {
            print!("{}", kiln::api::sdl());
            Ok(None)
        }
        Command::Serve(config) => kiln::cli::serve(config, true).await.map(|()| None),
        Command::Worker(config) => kiln::cli::serve(config, false).await.map(|()| None),
        Command::Migrate(config) => kiln::cli::migrate(config).await.map(|()| None),
        Command::Train(args) => kiln::cli::train(args).await.map(|()| None),
        Command::RunJob(args) => Ok(Some(kiln::cli::run_job(args).await? as i32)),
    }
}
