//! What kiln counts, in a Prometheus registry the app owns ([`Metrics`], passed to the use cases like
//! the event hub; never a global, so several servers in one process keep their own). `GET /metrics`
//! encodes it in Prometheus's text format. Every name starts with `kiln_` and follows Prometheus's
//! rules: `_total` on counters, the unit (`_seconds`, `_bytes`) in the name.
//!
//! Three kinds of figure:
//! - counted where they happen, in the process where they happen: requests, predictions, uploads, a
//!   worker's claims and job ends, the events a worker relays from its jobs' processes;
//! - levels kept as they change: WebSocket subscribers, workers busy or idle;
//! - read at each scrape ([`Metrics::set_queue`], [`Metrics::set_pool`]): jobs by status and queue
//!   depth from the database, the connection pool's use.
//!
//! Labels are bounded: GraphQL operation names beyond [`MAX_OPERATION_NAMES`] distinct ones (or not
//! shaped like a name) count as `other`, and a running job's samples/s is removed when its run ends.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::events::JobEvent;

/// Distinct GraphQL operation names given labels of their own; later ones count as `other`.
pub const MAX_OPERATION_NAMES: usize = 200;

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;
type FloatGauges = Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>;

fn seconds_short() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn seconds_long() -> Histogram {
    // 1 s to about 9 days.
    Histogram::new(exponential_buckets(1.0, 2.0, 20))
}

/// Every figure, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    jobs: Gauges,
    queue_depth: Gauges,
    queue_wait: Histograms,
    job_runs: Histograms,
    step_duration: Histograms,
    samples_per_second: FloatGauges,
    epochs: Counter,
    uploads: Counters,
    upload_bytes: Counter,
    graphql: Counters,
    graphql_latency: Histograms,
    subscribers: Gauges,
    predicts: Counters,
    predict_latency: Histograms,
    cache_hits: Counter,
    cache_misses: Counter,
    pool: Gauges,
    workers: Gauges,
    workers_running: Arc<AtomicI64>,
    workers_busy: AtomicI64,
    operation_names: Mutex<HashSet<String>>,
    /// Each running job's last step and when it was reported, for the step duration.
    last_steps: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let short = || Histograms::new_with_constructor(seconds_short as fn() -> Histogram);
        let long = || Histograms::new_with_constructor(seconds_long as fn() -> Histogram);
        let mut m = Self {
            jobs: Gauges::default(),
            queue_depth: Gauges::default(),
            queue_wait: long(),
            job_runs: long(),
            step_duration: short(),
            samples_per_second: FloatGauges::default(),
            epochs: Counter::default(),
            uploads: Counters::default(),
            upload_bytes: Counter::default(),
            graphql: Counters::default(),
            graphql_latency: short(),
            subscribers: Gauges::default(),
            predicts: Counters::default(),
            predict_latency: short(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            pool: Gauges::default(),
            workers: Gauges::default(),
            workers_running: Arc::new(AtomicI64::new(0)),
            workers_busy: AtomicI64::new(0),
            operation_names: Mutex::new(HashSet::new()),
            last_steps: Mutex::new(HashMap::new()),
            registry: Registry::with_prefix("kiln"),
        };
        let registry = &mut m.registry;
        registry.register(
            "jobs",
            "Jobs by status (read from the database at each scrape)",
            m.jobs.clone(),
        );
        registry.register(
            "queue_depth",
            "Queued jobs by priority (read from the database at each scrape)",
            m.queue_depth.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time from a job's submission to a worker claiming it, per attempt",
            m.queue_wait.clone(),
        );
        registry.register(
            "job_run_seconds",
            "Time one attempt of a job ran, by how it ended",
            m.job_runs.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Time per training step, from the progress of the jobs this process's workers run",
            m.step_duration.clone(),
        );
        registry.register(
            "job_samples_per_second",
            "Training throughput of each job running on this process's workers",
            m.samples_per_second.clone(),
        );
        registry.register(
            "epochs_completed",
            "Epochs finished by jobs on this process's workers",
            m.epochs.clone(),
        );
        registry.register(
            "uploads",
            "Dataset uploads received, by outcome",
            m.uploads.clone(),
        );
        registry.register(
            "upload_bytes",
            "Bytes of dataset uploads stored",
            m.upload_bytes.clone(),
        );
        registry.register(
            "graphql_requests",
            "GraphQL queries and mutations, by operation name and outcome",
            m.graphql.clone(),
        );
        registry.register(
            "graphql_request_duration_seconds",
            "GraphQL query and mutation latency, by operation name and outcome",
            m.graphql_latency.clone(),
        );
        registry.register(
            "websocket_subscribers",
            "Open GraphQL subscriptions, by subscription",
            m.subscribers.clone(),
        );
        registry.register(
            "predict_requests",
            "Predictions asked of a model, by model and outcome",
            m.predicts.clone(),
        );
        registry.register(
            "predict_duration_seconds",
            "Prediction latency, by model",
            m.predict_latency.clone(),
        );
        registry.register(
            "model_cache_hits",
            "Predictions whose model version was already loaded",
            m.cache_hits.clone(),
        );
        registry.register(
            "model_cache_misses",
            "Predictions that had to load their model version",
            m.cache_misses.clone(),
        );
        registry.register(
            "database_connections",
            "Database connections of this process's API pool, by state",
            m.pool.clone(),
        );
        registry.register(
            "workers",
            "Training workers in this process, by state",
            m.workers.clone(),
        );
        m
    }

    /// The registry in Prometheus's text format (OpenMetrics-compatible, ending in `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Jobs by status and queued jobs by priority, as counted in the database now.
    pub fn set_queue(&self, by_status: &[(String, i64)], queued_by_priority: &[(String, i64)]) {
        self.jobs.clear();
        for (status, count) in by_status {
            self.jobs
                .get_or_create(&vec![("status", status.clone())])
                .set(*count);
        }
        self.queue_depth.clear();
        for (priority, count) in queued_by_priority {
            self.queue_depth
                .get_or_create(&vec![("priority", priority.clone())])
                .set(*count);
        }
    }

    /// The API pool's connections in use and idle, and this process's workers busy and idle.
    pub fn set_pool_and_workers(&self, in_use: u32, idle: u32) {
        let busy = self.workers_busy.load(Ordering::Relaxed).max(0);
        let running = self.workers_running.load(Ordering::Relaxed).max(0);
        self.workers
            .get_or_create(&vec![("state", "busy".into())])
            .set(busy);
        self.workers
            .get_or_create(&vec![("state", "idle".into())])
            .set((running - busy).max(0));
        self.pool
            .get_or_create(&vec![("state", "in_use".into())])
            .set(in_use.into());
        self.pool
            .get_or_create(&vec![("state", "idle".into())])
            .set(idle.into());
    }

    /// One GraphQL request over HTTP: its operation name (if any), whether it had errors, its time.
    pub fn graphql_request(&self, operation: Option<&str>, outcome: &str, took: Duration) {
        let operation = self.operation_label(operation);
        let labels = vec![("operation", operation), ("outcome", outcome.to_string())];
        self.graphql.get_or_create(&labels).inc();
        self.graphql_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    fn operation_label(&self, operation: Option<&str>) -> String {
        let Some(name) = operation else {
            return "anonymous".into();
        };
        let shaped = name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !shaped {
            return "other".into();
        }
        let mut names = self.operation_names.lock().expect("names lock");
        if names.contains(name) || names.len() < MAX_OPERATION_NAMES {
            names.insert(name.to_string());
            name.to_string()
        } else {
            "other".into()
        }
    }

    /// A subscription opened; it counts until the guard is dropped (the client unsubscribed or left).
    pub fn subscriber(&self, subscription: &'static str) -> SubscriberGuard {
        let gauge = self
            .subscribers
            .get_or_create(&vec![("subscription", subscription.to_string())])
            .clone();
        gauge.inc();
        SubscriberGuard(gauge)
    }

    /// A dataset upload was received: stored (with its size) or refused.
    pub fn upload(&self, stored_bytes: Option<u64>) {
        let outcome = if stored_bytes.is_some() {
            "stored"
        } else {
            "refused"
        };
        self.uploads
            .get_or_create(&vec![("outcome", outcome.into())])
            .inc();
        if let Some(bytes) = stored_bytes {
            self.upload_bytes.inc_by(bytes);
        }
    }

    /// A prediction of `model` ended with `outcome` (`ok` or an error code) after `took`.
    pub fn predict(&self, model: &str, outcome: &str, took: Duration) {
        self.predicts
            .get_or_create(&vec![("model", model.into()), ("outcome", outcome.into())])
            .inc();
        self.predict_latency
            .get_or_create(&vec![("model", model.into())])
            .observe(took.as_secs_f64());
    }

    /// Whether a prediction found its model version loaded.
    pub fn model_cache(&self, hit: bool) {
        if hit {
            self.cache_hits.inc()
        } else {
            self.cache_misses.inc()
        };
    }

    /// A worker of this process runs until the guard is dropped.
    pub fn worker_running(&self) -> WorkerGuard {
        self.workers_running.fetch_add(1, Ordering::Relaxed);
        WorkerGuard(self.workers_running.clone())
    }

    /// A worker claimed a job; `waited` is its time in the queue on its first claim.
    pub fn run_started(&self, waited: Option<Duration>) {
        self.workers_busy.fetch_add(1, Ordering::Relaxed);
        if let Some(waited) = waited {
            self.queue_wait
                .get_or_create(&Vec::new())
                .observe(waited.as_secs_f64());
        }
    }

    /// A worker's run of `job_id` ended with `status` after `ran`.
    pub fn run_ended(&self, job_id: &str, status: &str, ran: Duration) {
        self.workers_busy.fetch_sub(1, Ordering::Relaxed);
        self.job_runs
            .get_or_create(&vec![("status", status.into())])
            .observe(ran.as_secs_f64());
        self.samples_per_second
            .remove(&vec![("job_id", job_id.to_string())]);
        self.last_steps.lock().expect("steps lock").remove(job_id);
    }

    /// An event from a job running on this process's workers.
    pub fn job_event(&self, job_id: &str, event: &JobEvent) {
        match event {
            JobEvent::StepProgress {
                step,
                samples_per_second,
                ..
            } => self.step(job_id, *step, *samples_per_second),
            JobEvent::EpochCompleted(_) => {
                self.epochs.inc();
            }
            _ => {}
        }
    }

    /// A job on this process's workers reported step `step` at `samples_per_second`.
    fn step(&self, job_id: &str, step: u64, samples_per_second: f64) {
        self.samples_per_second
            .get_or_create(&vec![("job_id", job_id.to_string())])
            .set(samples_per_second);
        let now = Instant::now();
        let mut last = self.last_steps.lock().expect("steps lock");
        if let Some((before, at)) = last.insert(job_id.to_string(), (step, now))
            && step > before
        {
            let per_step = now.duration_since(at).as_secs_f64() / (step - before) as f64;
            self.step_duration
                .get_or_create(&Vec::new())
                .observe(per_step);
        }
    }
}

/// Counts a running worker while it lives.
pub struct WorkerGuard(Arc<AtomicI64>);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one open subscription while it lives.
pub struct SubscriberGuard(Gauge);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
