//! Why a queued job waits and when it should start, worked out from one snapshot of the queue: the
//! queued jobs in claim order, the running jobs with their progress, the live workers and the recent
//! run times of each model's jobs. Pure: the store reads the snapshot, the caller gives the time.
//!
//! The estimate plays the queue forward: every live worker is free when its job's progress-based ETA
//! says (or, before a job reports progress, after its model's usual run time), and takes the next job
//! in order, which then runs for its model's usual run time (the mean over its recent completed jobs,
//! or over all recent jobs for a model that has none). With no worker, or no run time known at all,
//! there is no estimate.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use super::Priority;
use super::time::timestamp;

/// A queued job as the queue sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    pub id: String,
    pub model_name: String,
    pub priority: Priority,
    pub created_at: i64,
    /// Not claimable before this time (an automatic retry's wait), epoch ms.
    pub next_attempt_at: Option<i64>,
    /// The GPUs it asks for: only a worker with as many takes it.
    pub gpus: u32,
}

/// A running job as the queue sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningJob {
    pub id: String,
    pub model_name: String,
    pub lease_owner: Option<String>,
    /// When its current attempt started, epoch ms.
    pub attempt_started_at: Option<i64>,
    /// Its progress's estimate of the time left, in seconds.
    pub eta_seconds: Option<f64>,
}

/// A worker that renewed its heartbeat recently.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveWorker {
    pub id: String,
    /// The machine (host name) and process it runs in: one replica.
    pub host: String,
    pub pid: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// The GPUs it gives a job.
    pub gpus: u32,
}

/// Everything a queued job's place is worked out from.
#[derive(Debug, Clone, Default)]
pub struct QueueSnapshot {
    /// In claim order: priority, then age.
    pub queued: Vec<QueuedJob>,
    pub running: Vec<RunningJob>,
    pub workers: Vec<LiveWorker>,
    /// Mean run time of each model's recent completed jobs, in ms.
    pub mean_run_ms: HashMap<String, f64>,
    /// Mean run time of all recent completed jobs, in ms.
    pub overall_run_ms: Option<f64>,
}

/// Where a queued job stands.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueuePlace {
    /// 1 for the next job a worker takes.
    pub position: i64,
    /// Epoch ms; `None` without a worker or a known run time.
    pub estimated_start_at: Option<i64>,
    /// Why it waits, in words.
    pub reason: String,
}

/// How many workers, and which are busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerCounts {
    pub busy: i64,
    pub idle: i64,
}

impl QueueSnapshot {
    /// The ids of the live workers running a job.
    pub fn busy_workers(&self) -> HashSet<&str> {
        let live: HashSet<&str> = self.workers.iter().map(|w| w.id.as_str()).collect();
        self.running
            .iter()
            .filter_map(|r| r.lease_owner.as_deref())
            .filter(|owner| live.contains(owner))
            .collect()
    }

    pub fn worker_counts(&self) -> WorkerCounts {
        let busy = self.busy_workers().len() as i64;
        WorkerCounts {
            busy,
            idle: self.workers.len() as i64 - busy,
        }
    }

    fn run_ms(&self, model: &str) -> Option<f64> {
        self.mean_run_ms.get(model).copied().or(self.overall_run_ms)
    }

    /// The place of every queued job, by id, at `now` (epoch ms).
    pub fn places(&self, now: i64) -> HashMap<String, QueuePlace> {
        let busy = self.busy_workers();
        // When each live worker is free, as far as can be told.
        let mut free_at: BinaryHeap<Reverse<i64>> = BinaryHeap::new();
        let mut known = !self.workers.is_empty();
        for worker in &self.workers {
            if !busy.contains(worker.id.as_str()) {
                free_at.push(Reverse(now));
                continue;
            }
            let job = self
                .running
                .iter()
                .find(|r| r.lease_owner.as_deref() == Some(worker.id.as_str()));
            let left_ms = job.and_then(|r| match r.eta_seconds {
                Some(eta) => Some(eta * 1000.0),
                None => {
                    let ran = now - r.attempt_started_at.unwrap_or(now);
                    self.run_ms(&r.model_name)
                        .map(|m| (m - ran as f64).max(0.0))
                }
            });
            match left_ms {
                Some(ms) => free_at.push(Reverse(now + ms as i64)),
                None => known = false,
            }
        }
        let idle = self.workers.len() - busy.len();
        let mut places = HashMap::with_capacity(self.queued.len());
        let mut ahead: Vec<(Priority, i64)> = Vec::new();
        let mut ready_before = 0i64;
        for job in &self.queued {
            // No live worker has the GPUs it asks for: it waits for one, and blocks no one.
            if job.gpus > 0
                && !self.workers.is_empty()
                && self.workers.iter().all(|w| w.gpus < job.gpus)
            {
                let most = self.workers.iter().map(|w| w.gpus).max().unwrap_or(0);
                places.insert(
                    job.id.clone(),
                    QueuePlace {
                        position: ready_before + 1,
                        estimated_start_at: None,
                        reason: format!(
                            "no worker has the {} it asks for (the most any live worker has is {most})",
                            super::gpus_phrase(job.gpus)
                        ),
                    },
                );
                continue;
            }
            let waiting_until = job.next_attempt_at.filter(|t| *t > now);
            if let Some(until) = waiting_until {
                places.insert(
                    job.id.clone(),
                    QueuePlace {
                        position: ready_before + 1,
                        estimated_start_at: Some(until),
                        reason: format!("waiting for its retry at {}", timestamp(until)),
                    },
                );
                continue;
            }
            let start = known
                .then(|| free_at.peek().map(|Reverse(t)| (*t).max(now)))
                .flatten();
            let reason = if self.workers.is_empty() {
                "no worker is running".to_string()
            } else if ready_before > 0 {
                jobs_ahead(&ahead, ready_before)
            } else if idle > 0 {
                "next in line: an idle worker takes it within seconds".to_string()
            } else {
                let n = self.workers.len();
                format!(
                    "next in line: waiting for {} to finish",
                    if n == 1 {
                        "the only worker".to_string()
                    } else {
                        format!("one of the {n} busy workers")
                    }
                )
            };
            places.insert(
                job.id.clone(),
                QueuePlace {
                    position: ready_before + 1,
                    estimated_start_at: start,
                    reason,
                },
            );
            // The job takes the first free worker for its model's usual run time.
            if known {
                match (free_at.pop(), self.run_ms(&job.model_name)) {
                    (Some(Reverse(t)), Some(ms)) => free_at.push(Reverse(t.max(now) + ms as i64)),
                    _ => known = false,
                }
            }
            ready_before += 1;
            match ahead.iter_mut().find(|(p, _)| *p == job.priority) {
                Some((_, n)) => *n += 1,
                None => ahead.push((job.priority, 1)),
            }
        }
        places
    }
}

/// "2 jobs ahead of it at HIGH priority", or with several priorities "3 jobs ahead of it (1 at URGENT,
/// 2 at HIGH priority)".
fn jobs_ahead(ahead: &[(Priority, i64)], total: i64) -> String {
    let jobs = if total == 1 { "job" } else { "jobs" };
    if let [(priority, _)] = ahead {
        return format!(
            "{total} {jobs} ahead of it at {} priority",
            priority.as_str()
        );
    }
    let mut by_priority: Vec<&(Priority, i64)> = ahead.iter().collect();
    by_priority.sort_by_key(|(p, _)| Reverse(p.rank()));
    let parts: Vec<String> = by_priority
        .iter()
        .map(|(p, n)| format!("{n} at {}", p.as_str()))
        .collect();
    format!("{total} {jobs} ahead of it ({} priority)", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000;

    fn queued(id: &str, priority: Priority) -> QueuedJob {
        QueuedJob {
            id: id.into(),
            model_name: "m".into(),
            priority,
            created_at: 0,
            next_attempt_at: None,
            gpus: 0,
        }
    }

    fn worker(id: &str) -> LiveWorker {
        LiveWorker {
            id: id.into(),
            host: "h".into(),
            pid: 1,
            started_at: 0,
            heartbeat_at: NOW,
            gpus: 0,
        }
    }

    fn running(id: &str, owner: &str, eta_seconds: Option<f64>) -> RunningJob {
        RunningJob {
            id: id.into(),
            model_name: "m".into(),
            lease_owner: Some(owner.into()),
            attempt_started_at: Some(NOW - 60_000),
            eta_seconds,
        }
    }

    #[test]
    fn without_workers_nothing_starts() {
        let snapshot = QueueSnapshot {
            queued: vec![queued("a", Priority::Normal)],
            overall_run_ms: Some(1000.0),
            ..Default::default()
        };
        let place = &snapshot.places(NOW)["a"];
        assert_eq!(place.position, 1);
        assert_eq!(place.estimated_start_at, None);
        assert_eq!(place.reason, "no worker is running");
    }

    #[test]
    fn the_queue_is_played_forward_over_the_workers() {
        // Two workers: one busy for 30 s more, one idle. Jobs take 100 s each.
        let snapshot = QueueSnapshot {
            queued: vec![
                queued("u", Priority::Urgent),
                queued("h1", Priority::High),
                queued("h2", Priority::High),
                queued("n", Priority::Normal),
            ],
            running: vec![running("r", "w1", Some(30.0))],
            workers: vec![worker("w1"), worker("w2")],
            mean_run_ms: [("m".to_string(), 100_000.0)].into(),
            overall_run_ms: Some(100_000.0),
        };
        let places = snapshot.places(NOW);
        let start = |id: &str| places[id].estimated_start_at.map(|t| (t - NOW) / 1000);
        // u takes the idle worker now; h1 the busy one when it frees at 30 s; h2 when u ends at
        // 100 s; n when h1 ends at 130 s.
        assert_eq!(
            [start("u"), start("h1"), start("h2"), start("n")],
            [Some(0), Some(30), Some(100), Some(130)]
        );
        assert_eq!(
            places["u"].reason,
            "next in line: an idle worker takes it within seconds"
        );
        assert_eq!(places["h1"].reason, "1 job ahead of it at URGENT priority");
        assert_eq!(places["h2"].position, 3);
        assert_eq!(
            places["n"].reason,
            "3 jobs ahead of it (1 at URGENT, 2 at HIGH priority)"
        );
    }

    #[test]
    fn a_job_waiting_for_its_retry_says_until_when_and_others_pass_it() {
        let mut retrying = queued("r", Priority::Urgent);
        retrying.next_attempt_at = Some(NOW + 90_000);
        let snapshot = QueueSnapshot {
            queued: vec![retrying, queued("a", Priority::Normal)],
            running: vec![running("x", "w1", None)],
            workers: vec![worker("w1")],
            mean_run_ms: HashMap::new(),
            overall_run_ms: Some(120_000.0),
        };
        let places = snapshot.places(NOW);
        assert!(
            places["r"].reason.starts_with("waiting for its retry at "),
            "{}",
            places["r"].reason
        );
        assert_eq!(places["r"].estimated_start_at, Some(NOW + 90_000));
        // `a` is first among the jobs that can run; the only worker frees when its job (started a
        // minute ago, no ETA yet) reaches the usual two minutes.
        assert_eq!(places["a"].position, 1);
        assert_eq!(
            places["a"].reason,
            "next in line: waiting for the only worker to finish"
        );
        assert_eq!(places["a"].estimated_start_at, Some(NOW + 60_000));
    }

    #[test]
    fn no_known_run_time_means_no_estimate_after_the_first() {
        let snapshot = QueueSnapshot {
            queued: vec![queued("a", Priority::Low), queued("b", Priority::Low)],
            workers: vec![worker("w1")],
            ..Default::default()
        };
        let places = snapshot.places(NOW);
        assert_eq!(places["a"].estimated_start_at, Some(NOW));
        assert_eq!(places["b"].estimated_start_at, None);
        assert_eq!(places["b"].reason, "1 job ahead of it at LOW priority");
    }

    #[test]
    fn a_job_no_worker_has_the_gpus_for_says_so_and_blocks_no_one() {
        let mut gpu = queued("g", Priority::Urgent);
        gpu.gpus = 1;
        let snapshot = QueueSnapshot {
            queued: vec![gpu, queued("a", Priority::Normal)],
            workers: vec![worker("w1")],
            overall_run_ms: Some(1000.0),
            ..Default::default()
        };
        let places = snapshot.places(NOW);
        assert_eq!(
            places["g"].reason,
            "no worker has the 1 GPU it asks for (the most any live worker has is 0)"
        );
        assert_eq!(places["g"].estimated_start_at, None);
        assert_eq!(places["a"].position, 1);
        assert_eq!(
            places["a"].reason,
            "next in line: an idle worker takes it within seconds"
        );
        // A worker with two GPUs takes it.
        let mut big = worker("w2");
        big.gpus = 2;
        let snapshot = QueueSnapshot {
            workers: vec![worker("w1"), big],
            ..snapshot
        };
        assert_eq!(
            snapshot.places(NOW)["g"].reason,
            "next in line: an idle worker takes it within seconds"
        );
    }
}
