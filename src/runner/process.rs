//! Each job runs in its own process, so a job that runs out of memory or crashes ends only itself.
//!
//! The worker (parent) claims the job, starts `kiln run-job <id> --lease-owner <worker> --attached`,
//! keeps the lease, and relays what the job's process writes on its standard output (one JSON event a
//! line) to the event hub. To stop the job it writes `stop <reason>` to the process's standard input,
//! and kills it when it has not exited after the grace period. The process dies with its parent: it
//! asks the kernel for SIGKILL when the parent dies (`PR_SET_PDEATHSIG`; forked from
//! [`super::spawner`]'s lasting thread, since the signal follows the forking thread), and exits when its
//! standard input closes. An optional address-space limit (`KILN_JOB_MEMORY_LIMIT`) bounds each job.
//!
//! A process that dies of a signal is reported for what it was: out of memory only on the kernel's
//! evidence (its out-of-memory kill counter moved while the job ran, or an allocation failed under
//! the address-space limit), never retried; any other kill says which signal, and the job goes back
//! to the queue like one whose worker died.
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
use tracing::Instrument;

use super::control::{self, RunResult, StopFlag, StopReason};
use super::{Worker, WorkerSettings, job};
use crate::domain::{JobRecord, JobStatus};
use crate::events::Envelope;
use crate::service::{KilledFromOutside, WorkQueue};
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
    tracing::info!(
        attempt = job.attempts,
        "claimed; starting the job's process"
    );
    let flag = stop_flag_for(&job);
    let supervisor = worker.supervise(&job, &flag, worker.shutdown.clone());
    let oom_kills = OomKills::read();
    let result = match spawn(&worker.settings, &job, &worker.id).await {
        Ok(child) => drive(worker, &job, child, &flag, oom_kills).await,
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
    tracing::info!(status = status.as_str(), "the job's run ended");
    status
}

/// The stop flag of a claimed job, already set when a cancel or pause was asked for before the claim.
pub(super) fn stop_flag_for(job: &JobRecord) -> Arc<StopFlag> {
    let flag = Arc::new(StopFlag::default());
    if job.cancel_requested {
        flag.stop(StopReason::Cancel);
    } else if job.pause_requested {
        flag.stop(StopReason::Pause);
    }
    flag
}

/// Starts a job's process, bounded by the worker's memory limit and the job's own `resources`: an
/// address-space limit of the lower of the two, and `ceil(cpus)` threads for its matrix products.
async fn spawn(
    settings: &WorkerSettings,
    job: &JobRecord,
    worker: &str,
) -> Result<tokio::process::Child> {
    let job_id = job.id.as_str();
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
    if let Some(threads) = job.resources.threads() {
        command.env("RAYON_NUM_THREADS", threads.to_string());
    }
    // The job's process continues the worker's trace of this run.
    match crate::telemetry::traceparent() {
        Some(parent) => command.env("TRACEPARENT", parent),
        None => command.env_remove("TRACEPARENT"),
    };
    let parent = std::process::id();
    let memory_limit = memory_limit(settings, job);
    // SAFETY: only async-signal-safe calls (setpgid, prctl, getppid, setrlimit) run between fork and
    // exec.
    unsafe {
        command.pre_exec(move || {
            // A process group of its own: a Ctrl-C in the worker's terminal reaches the worker, which
            // stops the job with a checkpoint, not the job's process directly.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
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
    super::spawner::spawn(command).await.with_context(|| {
        format!(
            "starting {} run-job {job_id}",
            settings.executable.display()
        )
    })
}

/// The address-space limit of a job's process: the lower of the worker's (`KILN_JOB_MEMORY_LIMIT`)
/// and the job's own (`resources.memoryGb`).
fn memory_limit(settings: &WorkerSettings, job: &JobRecord) -> Option<u64> {
    match (settings.memory_limit, job.resources.memory_bytes()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Relays the process's events, passes on a request to stop (killing it after the grace period), and
/// reads how it ended.
async fn drive(
    worker: &Worker,
    job: &JobRecord,
    mut child: tokio::process::Child,
    flag: &StopFlag,
    oom_kills: Option<OomKills>,
) -> RunResult {
    let mut stdin = child.stdin.take();
    let relay =
        child.stdout.take().map(|stdout| {
            let events = worker.service.events().clone();
            let metrics = worker.service.metrics().clone();
            let job_id = job.id.clone();
            tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Envelope>(&line) {
                    Ok(envelope) if envelope.job_id == job_id => {
                        metrics.job_event(&envelope.job_id, &envelope.event);
                        events.relay(envelope)
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "an unreadable line from a job's process"),
                }
            }
        }.in_current_span())
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
    let end = ProcessEnd {
        peak_memory,
        out_of_memory_kill: oom_kills.is_some_and(|before| before.moved()),
        memory_limit: memory_limit(&worker.settings, job),
    };
    match status {
        Ok(status) => interpret(
            status,
            flag.reason(),
            &end,
            job.settings.hyperparameters.batch_size,
        ),
        Err(e) => RunResult::Failed(
            anyhow::Error::new(e).context("waiting for the job's process"),
            None,
        ),
    }
}

/// What is known of how a job's process ended besides its exit status.
#[derive(Debug, Clone, Copy, Default)]
struct ProcessEnd {
    /// Its peak resident memory, sampled every half second (0: never read).
    peak_memory: u64,
    /// Whether the kernel's out-of-memory killer struck in its cgroup while it ran.
    out_of_memory_kill: bool,
    /// Its address-space limit (`KILN_JOB_MEMORY_LIMIT`).
    memory_limit: Option<u64>,
}

/// The run's result from the process's exit status.
fn interpret(status: ExitStatus, stop: StopReason, end: &ProcessEnd, batch_size: u32) -> RunResult {
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
    if stop != StopReason::None {
        // Asked to stop, it ended some other way (killed after the grace period): the stop stands.
        return RunResult::Stopped;
    }
    let used = if end.peak_memory > 0 {
        format!(" after using {}", human(end.peak_memory))
    } else {
        String::new()
    };
    let error = anyhow::anyhow!("the job's process ended with {status}{used}");
    let smaller = format!(
        "try batchSize ≤ {} or a shorter maxSeqLength",
        (batch_size / 2).max(1)
    );
    let message = match status.signal() {
        Some(libc::SIGKILL) if end.out_of_memory_kill => format!(
            "the job ran out of memory: the kernel's out-of-memory killer ended its process \
             (signal 9){used}; {smaller}"
        ),
        Some(libc::SIGABRT) if end.memory_limit.is_some() => format!(
            "the job ran out of memory: its process could not allocate more within its memory \
             limit ({}: KILN_JOB_MEMORY_LIMIT, or the job's resources.memoryGb when lower) and \
             aborted{used}; {smaller}",
            human(end.memory_limit.unwrap_or_default())
        ),
        Some(signal)
            if [libc::SIGKILL, libc::SIGTERM, libc::SIGINT, libc::SIGHUP].contains(&signal) =>
        {
            // Not kiln, and not for memory as far as the kernel says: an operator, a supervisor or a
            // preempted machine. The job did nothing wrong, so it goes back to the queue.
            let message = format!(
                "the job's process was killed by signal {signal} ({}) from outside kiln, not for \
                 lack of memory as far as the kernel reports{used}",
                signal_name(signal)
            );
            return RunResult::Failed(
                anyhow::Error::new(KilledFromOutside(signal)).context(error.to_string()),
                Some(message),
            );
        }
        Some(signal) => format!(
            "the job's process crashed (signal {signal}, {}){used}; retry the job",
            signal_name(signal)
        ),
        None => format!("the job's process crashed ({status}); retry the job"),
    };
    RunResult::Failed(error, Some(message))
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// The kernel's count of out-of-memory kills where it can be read: this process's cgroup (v2's
/// `memory.events` or v1's `memory.oom_control`, which count the kills of a container's limit and of
/// the machine running out alike) or else the whole machine's (`/proc/vmstat`). A job's process shares
/// the worker's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OomKills(u64);

impl OomKills {
    fn read() -> Option<Self> {
        Self::in_cgroup().or_else(Self::on_machine).map(Self)
    }

    /// Whether the count has grown since `self` was read.
    fn moved(self) -> bool {
        Self::read().is_some_and(|now| now.0 > self.0)
    }

    /// cgroup v2 (`0::/path` → `memory.events`), or v1's memory controller (`N:memory:/path` →
    /// `memory.oom_control`).
    fn in_cgroup() -> Option<u64> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        cgroups.lines().find_map(|line| {
            let file = match line.strip_prefix("0::") {
                Some(path) => format!("/sys/fs/cgroup{}/memory.events", path.trim_end_matches('/')),
                None => format!(
                    "/sys/fs/cgroup/memory{}/memory.oom_control",
                    line.split_once(":memory:")?.1.trim_end_matches('/')
                ),
            };
            counter(&std::fs::read_to_string(file).ok()?, "oom_kill")
        })
    }

    fn on_machine() -> Option<u64> {
        counter(&std::fs::read_to_string("/proc/vmstat").ok()?, "oom_kill")
    }
}

/// The number after `name` on its own line of a `name value` file.
fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
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
    service: WorkQueue,
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
    service: WorkQueue,
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
async fn claimed_job(service: &WorkQueue, job_id: &str, worker: &str) -> Option<JobRecord> {
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

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn killed_by(signal: i32) -> ExitStatus {
        ExitStatus::from_raw(signal)
    }

    fn message(result: RunResult) -> (String, bool) {
        match result {
            RunResult::Failed(error, Some(message)) => {
                (message, crate::service::queue::is_infrastructure(&error))
            }
            _ => panic!("a failure with a message"),
        }
    }

    #[test]
    fn a_kill_is_out_of_memory_only_on_the_kernels_evidence() {
        let end = ProcessEnd {
            peak_memory: 64 << 20,
            ..Default::default()
        };
        let (said, retried) = message(interpret(killed_by(9), StopReason::None, &end, 8));
        assert!(
            said.starts_with("the job's process was killed by signal 9 (SIGKILL) from outside"),
            "{said}"
        );
        assert!(!said.contains("out of memory"), "{said}");
        assert!(retried, "a kill from outside is retried");

        let oom = ProcessEnd {
            out_of_memory_kill: true,
            ..end
        };
        let (said, retried) = message(interpret(killed_by(9), StopReason::None, &oom, 8));
        assert!(
            said.starts_with("the job ran out of memory: the kernel's out-of-memory killer"),
            "{said}"
        );
        assert!(
            said.contains("after using 64 MiB") && said.contains("batchSize ≤ 4"),
            "{said}"
        );
        assert!(!retried);

        let limited = ProcessEnd {
            memory_limit: Some(1 << 30),
            ..end
        };
        let (said, retried) = message(interpret(killed_by(6), StopReason::None, &limited, 8));
        assert!(
            said.contains("within its memory limit (1.0 GiB: KILN_JOB_MEMORY_LIMIT"),
            "{said}"
        );
        assert!(!retried);

        let (said, retried) = message(interpret(killed_by(11), StopReason::None, &end, 8));
        assert!(
            said.starts_with("the job's process crashed (signal 11, SIGSEGV)"),
            "{said}"
        );
        assert!(!retried);
    }

    #[test]
    fn a_stopped_job_killed_after_its_grace_period_stays_stopped() {
        let result = interpret(killed_by(9), StopReason::Cancel, &ProcessEnd::default(), 8);
        assert!(matches!(result, RunResult::Stopped));
    }

    #[test]
    fn kernel_counters_are_read_by_name() {
        let events = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(events, "oom_kill"), Some(1));
        assert_eq!(counter(events, "oom"), Some(2));
        assert_eq!(counter(events, "missing"), None);
    }
}
