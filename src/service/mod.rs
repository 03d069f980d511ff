//! The use cases: one function for each thing a user or a worker does, and the only place where kiln's
//! rules live. The GraphQL resolvers (`api/`), the CLI (`cli`) and the workers (`runner/`) call these and
//! do not re-check what they check.
//!
//! - [`analytics`]: a job's timings and curves, summaries of jobs, jobs compared;
//! - [`jobs`]: submit, cancel, look up, list and follow a job;
//! - [`datasets`]: upload and validate a dataset, look up, list;
//! - [`logs`]: each job's log: batched writes, reading, following, downloading;
//! - [`models`]: the registry (models, versions) and registering a trained version;
//! - [`inference`]: `predict` over an in-memory cache of loaded model versions;
//! - [`downloads`]: a model version's files as one streamed ZIP;
//! - [`registry`]: aliases, their history and rollbacks, promotion policies, comparisons;
//! - [`queue`]: what a worker does with the queue: claim, heartbeat, record progress, finish;
//! - [`training`]: turning a stored job (or a local file) into what the training engine reads;
//! - [`tokens`]: API tokens;
//! - [`waiting`]: the queue as users see it: each queued job's place, the figures, priorities, and
//!   the workers' registry;
//! - [`uploads`]: resumable uploads (the tus protocol's use cases);
//! - [`lifecycle`]: a dataset's life after its upload: used, archived, deleted, cleaned up,
//!   downloaded;
//! - [`debris`]: cleaning up after interrupted uploads and jobs;
//! - [`work`]: the narrow handle workers hold ([`WorkQueue`]).
//!
//! Every state change is written to the store before its event is published. Quotas, audit and webhooks
//! hook in here.

pub mod analytics;
pub mod augment;
pub mod checkpoints;
pub mod datasets;
pub mod debris;
pub mod deletion;
pub mod derive;
pub mod downloads;
pub mod inference;
pub mod jobs;
pub mod lifecycle;
pub mod logs;
pub mod measure;
pub mod models;
pub mod queue;
pub mod registry;
pub mod tokens;
pub mod training;
pub mod uploads;
pub mod waiting;
pub mod work;

use std::path::PathBuf;
use std::sync::Arc;

use crate::domain::FieldError;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::objects::Objects;
use crate::store::{Store, StoreError};

pub use crate::store::TrainingRecord;

pub use datasets::UploadRequest;
pub use jobs::{MAX_METRIC_POINTS, Submission};
pub use queue::{ClusterUnavailable, KilledFromOutside, Lease};
pub use training::{HubSettings, ModelRoots};
pub use waiting::{QueueStats, QueueView, ReplicaWorkers};
pub use work::WorkQueue;

/// The settings the use cases read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest dataset upload, in bytes.
    pub max_upload_bytes: u64,
    /// Claims of a job before an infrastructure failure fails it rather than retrying it.
    pub max_attempts: i64,
    /// Backoff of automatic retries: the first wait, and the longest.
    pub retry_base: std::time::Duration,
    pub retry_max: std::time::Duration,
    /// The time limit of a job submitted without one (`None`: no limit).
    pub default_max_duration_ms: Option<i64>,
    /// Where `hf:` base models come from.
    pub hub: HubSettings,
    /// Folder for downloaded base models (`hub/`) and models being written.
    pub work_dir: PathBuf,
    /// The longest line a dataset may have, in bytes.
    pub max_line_bytes: usize,
    /// How long a resumable upload may stay unfinished after its last bytes arrived.
    pub upload_expiry: std::time::Duration,
    /// Whether a job may train on a dataset with personal data when it does not say.
    pub allow_pii: bool,
    /// The most memory one training job may need, in bytes.
    pub max_train_memory: u64,
    /// Where local base models may come from.
    pub model_roots: ModelRoots,
    /// Model versions `predict` keeps loaded.
    pub model_cache_size: usize,
    /// The memory `predict`'s forward passes may take at once, in bytes.
    pub predict_memory: u64,
    /// How long a prediction waits for that memory, or for room in the model cache.
    pub predict_wait: std::time::Duration,
    /// Where jobs train and models answer `predict` (`KILN_DEVICE`).
    pub device: crate::train::DeviceChoice,
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            max_upload_bytes: config.max_upload_bytes,
            max_attempts: config.max_attempts,
            retry_base: std::time::Duration::from_secs(config.retry_base_seconds),
            retry_max: std::time::Duration::from_secs(config.retry_max_seconds),
            default_max_duration_ms: (config.max_duration_minutes > 0)
                .then(|| config.max_duration_minutes as i64 * 60_000),
            hub: HubSettings {
                endpoint: config.hf_endpoint.clone(),
                token: config.hf_token.clone(),
            },
            work_dir: config.work_dir.clone(),
            max_line_bytes: config.max_line_bytes,
            upload_expiry: std::time::Duration::from_secs(config.upload_expiry_hours * 3600),
            allow_pii: config.allow_pii,
            max_train_memory: config.train_memory_limit(),
            model_roots: ModelRoots::parse(&config.model_roots),
            model_cache_size: config.model_cache_size.into(),
            predict_memory: config.predict_memory.0,
            predict_wait: std::time::Duration::from_secs(config.predict_wait_seconds),
            device: config.device,
        }
    }
}

/// The handle every caller of a use case holds: the store, the object store, the event hub and the
/// settings. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    store: Store,
    objects: Objects,
    events: EventHub,
    settings: Arc<Settings>,
    models: Arc<inference::ModelCache>,
    predictions: Arc<inference::PredictBudget>,
    metrics: Arc<Metrics>,
    queue_views: Arc<waiting::SharedView>,
}

impl Service {
    pub fn new(store: Store, objects: Objects, events: EventHub, settings: Settings) -> Self {
        Self {
            store,
            objects,
            events,
            models: Arc::new(inference::ModelCache::new(settings.model_cache_size)),
            predictions: Arc::new(inference::PredictBudget::new(
                settings.predict_memory,
                settings.predict_wait,
            )),
            settings: Arc::new(settings),
            metrics: Arc::new(Metrics::new()),
            queue_views: Arc::default(),
        }
    }

    /// The use cases over `config`'s database (a pool of `connections`) and object store, publishing
    /// on `events`: how every kiln process (the API, a worker, a job's own process) builds them.
    pub async fn connect(
        config: &crate::config::Config,
        connections: u32,
        events: EventHub,
    ) -> anyhow::Result<Self> {
        let store = Store::connect(&config.database_url, connections).await?;
        let objects = Objects::from_config(&config.storage)?;
        Ok(Self::new(
            store,
            objects,
            events,
            Settings::from_config(config),
        ))
    }

    /// The same use cases (object store, events, settings, caches, metrics) over another database
    /// pool: the workers' own, so that a flood of API requests cannot starve them.
    pub fn on_pool(&self, store: Store) -> Self {
        Self {
            store,
            ..self.clone()
        }
    }

    /// Counts into `metrics` (one registry per server, shared by its API and its workers) rather
    /// than a registry of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// What this process counts.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The metrics in Prometheus's text format, with the figures read at each scrape (jobs by
    /// status, queue depth, the database pool) brought up to date first.
    #[tracing::instrument(skip_all)]
    pub async fn scrape_metrics(&self) -> anyhow::Result<String> {
        let counts = self.store.job_counts().await?;
        let by_status: Vec<(String, i64)> = counts
            .by_status
            .iter()
            .map(|(s, n)| (s.as_str().to_string(), *n))
            .collect();
        let by_priority: Vec<(String, i64)> = counts
            .queued_by_priority
            .iter()
            .map(|(p, n)| (p.as_str().to_string(), *n))
            .collect();
        self.metrics.set_queue(&by_status, &by_priority);
        let (in_use, idle) = self.store.pool_use();
        self.metrics.set_pool_and_workers(in_use, idle);
        Ok(self.metrics.encode())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store, for what reads it directly: round-trip counting in tests, DataLoader batches.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The object store (checked at start).
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// The event hub: workers listen for wake-ups and cancels and publish step progress on it.
    pub fn events(&self) -> &EventHub {
        &self.events
    }

    /// Whether each dependency answers (`/readyz`): the database, the object store and, when
    /// configured, Redis; each checked at once, with its latency and error.
    #[tracing::instrument(skip_all)]
    pub async fn check_ready(&self, timeout: std::time::Duration) -> Vec<DependencyCheck> {
        async fn timed(
            name: &'static str,
            timeout: std::time::Duration,
            check: impl std::future::Future<Output = anyhow::Result<()>>,
        ) -> DependencyCheck {
            let started = std::time::Instant::now();
            let result = match tokio::time::timeout(timeout, check).await {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!(
                    "no answer within {} ms",
                    timeout.as_millis()
                )),
            };
            DependencyCheck {
                name,
                latency: started.elapsed(),
                error: result.err().map(|e| format!("{e:#}")),
            }
        }
        let database = timed("database", timeout, async { Ok(self.store.ping().await?) });
        let objects = timed("objectStore", timeout, self.objects.ping());
        let redis = async {
            match self.events.ping_redis() {
                Some(ping) => Some(timed("redis", timeout, ping).await),
                None => None,
            }
        };
        let (database, objects, redis) = tokio::join!(database, objects, redis);
        [Some(database), Some(objects), redis]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// One dependency's answer to a readiness check.
#[derive(Debug, Clone)]
pub struct DependencyCheck {
    pub name: &'static str,
    pub latency: std::time::Duration,
    /// Why it is not ready; `None` when it answered.
    pub error: Option<String>,
}

impl ServiceError {
    /// A short name for the kind of failure, for metrics' `outcome` labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadInput(_) => "bad_input",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Forbidden(_) => "forbidden",
            Self::FailedPrecondition { .. } => "failed_precondition",
            Self::Lost(_) => "lost",
            Self::TooLarge(_) => "too_large",
            Self::Busy(_) => "busy",
            Self::Unavailable => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// Why a use case refused or failed, in terms the API maps to a code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad input: the field and the problem.
    #[error(transparent)]
    BadInput(#[from] FieldError),
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the thing is not in a state that allows it.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// The request is valid but a rule the user set refuses it (a promotion policy): the failed rules.
    #[error("{message}")]
    FailedPrecondition {
        message: String,
        failed: Vec<String>,
    },
    /// A registered thing whose stored files are gone from the object store: what is missing.
    #[error("{0}")]
    Lost(String),
    /// Larger than a limit allows (an upload past `KILN_MAX_UPLOAD_BYTES`): the field and the limit.
    #[error(transparent)]
    TooLarge(FieldError),
    /// Too much is asked of this server at once (its memory for predictions); trying again later works.
    #[error("{0}")]
    Busy(String),
    /// The database cannot be reached right now; trying again later may work.
    #[error("the database is unreachable")]
    Unavailable,
    /// Anything else: logged with its chain, answered with a reference.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict(message) => Self::Conflict(message),
            StoreError::Unavailable => Self::Unavailable,
            StoreError::Other(e) => Self::Internal(e),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Whether an error chain says the database could not be reached (trying again later may work).
pub fn is_unavailable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ServiceError>(),
            Some(ServiceError::Unavailable)
        ) || matches!(
            cause.downcast_ref::<StoreError>(),
            Some(StoreError::Unavailable)
        )
    })
}
