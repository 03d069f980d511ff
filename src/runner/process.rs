//! Each job runs in its own process, so a job that runs out of memory or crashes ends only itself.
//!
//! The worker (parent) claims the job, starts `kiln run-job <id> --lease-owner <worker> --attached`,
//! keeps the lease, and relays what the job's process writes on its standard output (one JSON event a
//! line) to the event hub. To stop the job it writes `stop <reason>` to the process's standard input,
//! and kills it when it has not exited after the grace period. The process dies with its parent: it
//! asks the kernel for SIGKILL when the parent dies (`PR_SET_PDEATHSIG`), and exits when its standard
//! input closes. An optional address-space limit (`KILN_JOB_MEMORY_LIMIT`) bounds each job.
//!
//! The job's process does the job itself (`super::job`), writing its progress and, when it completes
//! or fails, its final status; the worker writes the end of a job that was stopped, or whose process
//! crashed or was killed (a `FAILED` job with the reason, never re-run as if a worker had died).

use std::io::BufRead;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::control::{self, RunResult, StopFlag, StopReason};
use super::{Worker, WorkerSettings, job};
use crate::domain::{JobRecord, JobStatus};
use crate::events::Envelope;
use crate::service::Service;
use crate::train::memory::human;

/// How a job's own process ends: its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum JobExit {
    /// The job completed and its model is registered.
    Completed = 0,
    /// The job stopped because it was asked to (or found its lease taken over); its end is the
    /// worker's to write.
    Stopped = 3,
    /// The job failed and its process wrote why.
    Failed = 4,
    /// The worker that started the process is gone.
    Orphaned = 5,
    /// The job failed for a reason outside it (the database or object store was unreachable) and its
    /// process put it back in the queue for a later attempt.
    Requeued = 6,
}

/// Runs a job `worker` has claimed in its own process and returns the status it ended in.
#[tracing::instrument(skip_all, fields(job_id = %job.id, worker = %worker.id))]
pub(super) async fn run(worker: &Worker, job: JobRecord) -> JobStatus {
    let service = &worker.service;
    let flag = stop_flag_for(&job);
    let supervisor = tokio::spawn(control::supervise(
        service.clone(),
        control::Watch::of(
            &job,
            worker.settings.lease_ms(),
            worker.settings.stall_after,
        ),
        job.id.clone(),
        worker.id.clone(),
        flag.clone(),
        worker.shutdown.clone(),
    ));
    let result = match spawn(&worker.settings, &job.id, &worker.id) {
        Ok(child) => drive(worker, &job, child, &flag).await,
        Err(e) => RunResult::Failed(
            e,
            Some(
                "the job's process could not be started; ask an operator to look up the reference \
                 in the server log"
                    .into(),
            ),
        ),
    };
    let status = control::conclude(service, &job, &worker.id, result, &flag).await;
    supervisor.abort();
    status
}

/// The stop flag of a claimed job, already set when a cancel or pause was asked for before the claim.
fn stop_flag_for(job: &JobRecord) -> Arc<StopFlag> {
    let flag = Arc::new(StopFlag::default());
    if job.cancel_requested {
        flag.stop(StopReason::Cancel);
    } else if job.pause_requested {
        flag.stop(StopReason::Pause);
    }
    flag
}

fn spawn(settings: &WorkerSettings, job_id: &str, worker: &str) -> Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(&settings.executable);
    command
        .args(["run-job", job_id, "--lease-owner", worker, "--attached"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    for (name, value) in &settings.env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let parent = std::process::id();
    let memory_limit = settings.memory_limit;
    // SAFETY: only async-signal-safe calls (prctl, getppid, setrlimit) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the request above took effect.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("the worker exited"));
            }
            if let Some(bytes) = memory_limit {
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn().with_context(|| {
        format!(
            "starting {} run-job {job_id}",
            settings.executable.display()
        )
    })
}

/// Relays the process's events, passes on a request to stop (killing it after the grace period), and
/// reads how it ended.
async fn drive(
    worker: &Worker,
    job: &JobRecord,
    mut child: tokio::process::Child,
    flag: &StopFlag,
) -> RunResult {
    let mut stdin = child.stdin.take();
    let relay = child.stdout.take().map(|stdout| {
        let events = worker.service.events().clone();
        let job_id = job.id.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Envelope>(&line) {
                    Ok(envelope) if envelope.job_id == job_id => events.relay(envelope),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "an unreadable line from a job's process"),
                }
            }
        })
    });
    let pid = child.id();
    let mut peak_memory = 0u64;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut killed = false;
    let mut sample = tokio::time::interval(Duration::from_millis(500));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = flag.stopped(), if kill_at.is_none() => {
                if let Some(stdin) = &mut stdin {
                    let line = format!("stop {}\n", flag.reason().as_str());
                    let _ = stdin.write_all(line.as_bytes()).await;
                    let _ = stdin.flush().await;
                }
                kill_at = Some(tokio::time::Instant::now() + worker.settings.stop_grace);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)),
                if kill_at.is_some() && !killed => {
                tracing::warn!("the job's process did not stop within the grace period; killing it");
                let _ = child.start_kill();
                killed = true;
            }
            _ = sample.tick() => {
                if let Some(hwm) = pid.and_then(peak_rss) {
                    peak_memory = peak_memory.max(hwm);
                }
            }
        }
    };
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    match status {
        Ok(status) => interpret(status, flag, peak_memory, job),
        Err(e) => RunResult::Failed(
            anyhow::Error::new(e).context("waiting for the job's process"),
            None,
        ),
    }
}

/// The run's result from the process's exit status.
fn interpret(status: ExitStatus, flag: &StopFlag, peak_memory: u64, job: &JobRecord) -> RunResult {
    use std::os::unix::process::ExitStatusExt;
    match status.code() {
        Some(code) if code == JobExit::Completed as i32 => {
            return RunResult::Ended(JobStatus::Completed);
        }
        Some(code) if code == JobExit::Failed as i32 => return RunResult::Ended(JobStatus::Failed),
        Some(code) if code == JobExit::Requeued as i32 => {
            return RunResult::Ended(JobStatus::Queued);
        }
        Some(code) if code == JobExit::Stopped as i32 => return RunResult::Stopped,
        _ => {}
    }
    if flag.reason() != StopReason::None {
        // Asked to stop, it ended some other way (killed after the grace period): the stop stands.
        return RunResult::Stopped;
    }
    let used = if peak_memory > 0 {
        format!(" after using {}", human(peak_memory))
    } else {
        String::new()
    };
    let error = anyhow::anyhow!("the job's process ended with {status}{used}");
    let batch = job.settings.hyperparameters.batch_size;
    let message = match status.signal() {
        Some(signal) if signal == libc::SIGKILL || signal == libc::SIGABRT => format!(
            "the job ran out of memory: its process was killed (signal {signal}){used}; try \
             batchSize ≤ {} or a shorter maxSeqLength",
            (batch / 2).max(1)
        ),
        Some(signal) => format!("the job's process crashed (signal {signal}); retry the job"),
        None => format!("the job's process crashed ({status}); retry the job"),
    };
    RunResult::Failed(error, Some(message))
}

/// The peak resident memory of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The job's own process (`kiln run-job --attached`): follows its parent's `stop` lines, exits at once
/// when the parent is gone, runs the job, and says how it ended by its exit code.
pub async fn run_attached(
    service: Service,
    settings: WorkerSettings,
    job_id: &str,
    worker: &str,
) -> JobExit {
    let job = match claimed_job(&service, job_id, worker).await {
        Some(job) => job,
        None => return JobExit::Stopped,
    };
    let flag = Arc::new(StopFlag::default());
    let listening = flag.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Some(reason) = line.strip_prefix("stop ").and_then(StopReason::parse) {
                listening.stop(reason);
            }
        }
        // The parent is gone: so is its lease, and so is this job.
        std::process::exit(JobExit::Orphaned as i32);
    });
    let run = job::train_and_register(&service, &settings, &job, worker, flag.clone()).await;
    match run {
        Ok(Some(_)) => JobExit::Completed,
        Ok(None) => JobExit::Stopped,
        Err(e) => {
            match control::conclude(&service, &job, worker, RunResult::Failed(e, None), &flag).await
            {
                JobStatus::Queued => JobExit::Requeued,
                _ => JobExit::Failed,
            }
        }
    }
}

/// Runs a claimed job in this process on its own (what a Kubernetes pod runs): keeps its lease, hears
/// cancels through the event hub, stops at `shutdown`, and writes how it ended.
pub async fn run_standalone(
    service: Service,
    settings: WorkerSettings,
    job_id: &str,
    worker: &str,
    shutdown: tokio_util::sync::CancellationToken,
) -> JobExit {
    let Some(job) = claimed_job(&service, job_id, worker).await else {
        return JobExit::Stopped;
    };
    let flag = stop_flag_for(&job);
    let supervisor = tokio::spawn(control::supervise(
        service.clone(),
        control::Watch::of(&job, settings.lease_ms(), settings.stall_after),
        job.id.clone(),
        worker.to_string(),
        flag.clone(),
        shutdown,
    ));
    let run = job::train_and_register(&service, &settings, &job, worker, flag.clone()).await;
    let status = control::conclude(&service, &job, worker, control::result_of(run), &flag).await;
    supervisor.abort();
    match status {
        JobStatus::Completed => JobExit::Completed,
        JobStatus::Failed => JobExit::Failed,
        JobStatus::Queued if flag.reason() == StopReason::None => JobExit::Requeued,
        _ => JobExit::Stopped,
    }
}

/// The job, if `worker` holds it and it is running.
async fn claimed_job(service: &Service, job_id: &str, worker: &str) -> Option<JobRecord> {
    match control::while_unavailable(|| service.job(job_id)).await {
        Ok(Some(job))
            if job.status == JobStatus::Running && job.lease_owner.as_deref() == Some(worker) =>
        {
            Some(job)
        }
        Ok(_) => {
            tracing::warn!(
                job_id,
                worker,
                "the job is not running under this lease; nothing to do"
            );
            None
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "reading the job failed");
            None
        }
    }
}
