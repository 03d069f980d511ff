//! Typed settings. Each has a default, a `KILN_*` environment variable and a command-line flag (the flag
//! wins over the variable, the variable over the default). Secrets are wrapped in [`Secret`], whose
//! `Debug` prints `[redacted]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

pub mod file;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

/// A number of bytes, written plainly (`1073741824`) or with a unit: `K`, `M`, `G`, `T` (powers of
/// 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        let split = raw
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(raw.len());
        let (number, unit) = raw.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{raw:?} is not a size (e.g. 6GiB, 512M, 1073741824)"))?;
        let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            other => return Err(format!("unknown size unit {other:?} in {raw:?}")),
        };
        Ok(Self((number * scale) as u64))
    }
}

/// The memory this machine (or the container's memory limit, if lower) has, when it can be read.
pub fn machine_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|m| m.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// The default `KILN_MAX_TRAIN_MEMORY`: half of the machine's memory (8 GiB when that cannot be read).
pub fn default_train_memory() -> u64 {
    machine_memory().map(|m| m / 2).unwrap_or(8 << 30)
}

/// Where objects live.
#[derive(Debug, Clone, Args)]
pub struct StorageConfig {
    /// Object store: a folder (`./kiln-data/objects`, `file:///srv/kiln`) or `s3://bucket/prefix`.
    #[arg(
        long = "storage-url",
        env = "KILN_STORAGE_URL",
        default_value = "./kiln-data/objects"
    )]
    pub url: String,
    /// S3 endpoint for MinIO and other S3-protocol servers (`http://127.0.0.1:9000`); absent for AWS.
    #[arg(long, env = "KILN_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "KILN_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "KILN_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "KILN_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<Secret>,
    /// Allow a plain-HTTP endpoint (local MinIO).
    #[arg(long, env = "KILN_S3_ALLOW_HTTP", default_value_t = false)]
    pub s3_allow_http: bool,
}

impl StorageConfig {
    /// Local objects in `dir`.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Self {
            url: dir.into().display().to_string(),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: false,
        }
    }
}

/// How a worker runs each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RunnerKind {
    /// A child process on the worker's machine (`kiln run-job --attached`).
    #[default]
    Process,
    /// One `batch/v1` Job per kiln job, in the cluster the worker runs in (or its kubeconfig names).
    Kubernetes,
}

/// Where and how workers run jobs.
#[derive(Debug, Clone, Args)]
pub struct RunnerConfig {
    /// How a worker runs each job: `process` (a child process on its machine) or `kubernetes` (one
    /// batch/v1 Job per kiln job, in the worker's cluster or the one its kubeconfig names).
    #[arg(long, env = "KILN_RUNNER", value_enum, default_value = "process")]
    pub runner: RunnerKind,
    /// GPUs this worker gives one job: a job asking for more waits for another worker. Default: 1
    /// when jobs here train on a GPU (`KILN_DEVICE`), otherwise 0; with the Kubernetes runner, 8.
    #[arg(long, env = "KILN_WORKER_GPUS", value_parser = clap::value_parser!(u32).range(0..=16))]
    pub worker_gpus: Option<u32>,
    /// Kubernetes: the namespace job pods run in; default: the worker's own (in a pod), else `default`.
    #[arg(long, env = "KILN_K8S_NAMESPACE")]
    pub k8s_namespace: Option<String>,
    /// Kubernetes: the image job pods run (the same kiln as the worker's); required with
    /// `KILN_RUNNER=kubernetes`.
    #[arg(long, env = "KILN_K8S_IMAGE")]
    pub k8s_image: Option<String>,
    /// Kubernetes: the node selector of job pods, `key=value,key=value`.
    #[arg(long, env = "KILN_K8S_NODE_SELECTOR", default_value = "")]
    pub k8s_node_selector: String,
    /// Kubernetes: the tolerations of job pods, `key=value:Effect,key:Effect` (as `kubectl taint`
    /// writes taints; no effect tolerates every effect of that taint).
    #[arg(long, env = "KILN_K8S_TOLERATIONS", default_value = "")]
    pub k8s_tolerations: String,
    /// Kubernetes: the Secret job pods read the secret settings from (its keys are variable names:
    /// `KILN_DATABASE_URL`, `KILN_REDIS_URL`, `KILN_S3_SECRET_ACCESS_KEY`, `KILN_HF_TOKEN`); they
    /// never appear in the Job itself.
    #[arg(long, env = "KILN_K8S_SECRET", default_value = "kiln-secrets")]
    pub k8s_secret: String,
    /// Kubernetes: seconds a finished Job (and its pod's log) is kept before the cluster removes it.
    #[arg(long, env = "KILN_K8S_TTL_SECONDS", default_value_t = 3600)]
    pub k8s_ttl_seconds: u32,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            runner: RunnerKind::Process,
            worker_gpus: None,
            k8s_namespace: None,
            k8s_image: None,
            k8s_node_selector: String::new(),
            k8s_tolerations: String::new(),
            k8s_secret: "kiln-secrets".into(),
            k8s_ttl_seconds: 3600,
        }
    }
}

/// Everything `kiln serve` and `kiln worker` need.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "KILN_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    /// A second address serving only `GET /metrics`, with no token (for a Prometheus scraper kept off
    /// the API's network); absent: `/metrics` is on the API's address, behind the admin token.
    #[arg(long, env = "KILN_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
    /// `sqlite://path` (created if missing) or `postgres://user@host/db`.
    #[arg(
        long = "database-url",
        env = "KILN_DATABASE_URL",
        default_value = "sqlite://./kiln-data/kiln.db"
    )]
    pub database_url: String,
    #[arg(long, env = "KILN_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    #[command(flatten)]
    pub storage: StorageConfig,
    #[command(flatten)]
    pub runner: RunnerConfig,
    /// Redis for job events shared by several kiln processes (`redis://host:6379`); absent: in-process.
    #[arg(long = "redis-url", env = "KILN_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Hub that `baseModel: "hf:org/name"` downloads from.
    #[arg(
        long = "hf-endpoint",
        env = "KILN_HF_ENDPOINT",
        default_value = "https://huggingface.co"
    )]
    pub hf_endpoint: String,
    /// Folders (colon-separated) that local base models may come from: `baseModel` must name a folder
    /// under one of them.
    #[arg(
        long,
        env = "KILN_MODEL_ROOTS",
        default_value = "./kiln-data/base-models"
    )]
    pub model_roots: String,
    /// Token for private hub repositories.
    #[arg(long = "hf-token", env = "KILN_HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<Secret>,
    /// Training workers in this process (0 = API only).
    #[arg(long, env = "KILN_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Admin API token; created on start when missing. Without it, the first start prints a new one.
    #[arg(long, env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// Seconds a verified token is trusted without asking the database (while the database is down, it
    /// is trusted until it comes back).
    #[arg(long, env = "KILN_TOKEN_CACHE_SECONDS", default_value_t = 60)]
    pub token_cache_seconds: u64,
    /// Seconds a worker's claim on a job lasts without a heartbeat.
    #[arg(long, env = "KILN_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,
    /// Times a job is started before an infrastructure failure (its worker stopped responding, the
    /// database or object store became unreachable) fails it rather than retrying it.
    #[arg(long, env = "KILN_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: i64,
    /// The first automatic retry waits this many seconds; each further one twice as long as the one
    /// before (up to `KILN_RETRY_MAX_SECONDS`), plus up to a quarter more at random.
    #[arg(long, env = "KILN_RETRY_BASE_SECONDS", default_value_t = 10)]
    pub retry_base_seconds: u64,
    #[arg(long, env = "KILN_RETRY_MAX_SECONDS", default_value_t = 600)]
    pub retry_max_seconds: u64,
    /// A running job whose progress has not moved for this many seconds is logged and marked stalled.
    #[arg(long, env = "KILN_STALL_SECONDS", default_value_t = 600)]
    pub stall_seconds: u64,
    /// The time limit of a job submitted without `maxDurationMinutes`, in minutes (0: none).
    #[arg(long, env = "KILN_MAX_DURATION_MINUTES", default_value_t = 10080)]
    pub max_duration_minutes: u64,
    /// Largest dataset upload, in bytes.
    #[arg(long, env = "KILN_MAX_UPLOAD_BYTES", default_value_t = 1 << 30)]
    pub max_upload_bytes: u64,
    /// Most memory one training job may need (its estimate, checked at submit and before training),
    /// e.g. `6GiB`; default: half of this machine's memory.
    #[arg(long, env = "KILN_MAX_TRAIN_MEMORY")]
    pub max_train_memory: Option<ByteSize>,
    /// Hours a resumable upload (`/uploads`) may stay unfinished after its last bytes arrived; then its
    /// bytes are removed and it answers 410 Gone.
    #[arg(long, env = "KILN_UPLOAD_EXPIRY_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub upload_expiry_hours: u64,
    /// Whether `submitJob` trains on a dataset whose texts hold personal data or secrets when the job
    /// does not say (`allowPii`); by default such a job is refused.
    #[arg(long, env = "KILN_ALLOW_PII", default_value_t = false)]
    pub allow_pii: bool,
    /// Longest line of a dataset file, in bytes; a longer line is an error naming it.
    #[arg(long, env = "KILN_MAX_LINE_BYTES", default_value_t = 1 << 20)]
    pub max_line_bytes: usize,
    /// Folder for temporary files (uploads being checked, models being written).
    #[arg(long, env = "KILN_WORK_DIR", default_value = "./kiln-data/work")]
    pub work_dir: PathBuf,
    /// Most open connections (and, separately, WebSockets); further clients wait.
    #[arg(long, env = "KILN_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a connection may send nothing (request headers, an upload, a WebSocket's
    /// connection_init, an idle keep-alive) before it is closed.
    #[arg(long, env = "KILN_HTTP_TIMEOUT_SECONDS", default_value_t = 30)]
    pub http_timeout_seconds: u64,
    /// The kiln binary a worker starts for each job (`kiln run-job`); default: the running one.
    #[arg(long, env = "KILN_JOB_EXECUTABLE")]
    pub job_executable: Option<PathBuf>,
    /// An address-space limit for each job's process (e.g. `16GiB`): a job that needs more fails alone.
    #[arg(long, env = "KILN_JOB_MEMORY_LIMIT")]
    pub job_memory_limit: Option<ByteSize>,
    /// Seconds a job's process may take to stop when cancelled or at shutdown before it is killed.
    #[arg(long, env = "KILN_JOB_STOP_GRACE_SECONDS", default_value_t = 30)]
    pub job_stop_grace_seconds: u64,
    /// Model versions `predict` keeps loaded in memory (least recently used ones unloaded first), 1–256.
    #[arg(long, env = "KILN_MODEL_CACHE_SIZE", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub model_cache_size: u16,
    /// Memory `predict`'s forward passes may take at once in this process (all requests together),
    /// e.g. `1GiB`; inputs run in micro-batches within it, and a request waits for its turn.
    #[arg(long, env = "KILN_PREDICT_MEMORY", default_value = "1GiB")]
    pub predict_memory: ByteSize,
    /// Seconds a prediction waits for that memory (or for room in the model cache) before it is
    /// refused with `RESOURCE_EXHAUSTED`.
    #[arg(long, env = "KILN_PREDICT_WAIT_SECONDS", default_value_t = 30)]
    pub predict_wait_seconds: u64,
    /// Where jobs train and `predict` runs: `auto` (the first GPU when kiln is built with `cuda` and
    /// one is present, otherwise the CPU), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto")]
    pub device: crate::train::DeviceChoice,
}

impl Config {
    /// The settings as the `KILN_*` variables that reproduce them, for a job's own process (secrets
    /// travel in its environment, never on its command line). `None` means the variable must be unset.
    pub fn to_env(&self) -> Vec<(&'static str, Option<String>)> {
        let s = &self.storage;
        let vars: Vec<(&'static str, Option<String>)> = vec![
            ("KILN_BIND", Some(self.bind.to_string())),
            ("KILN_DATABASE_URL", Some(self.database_url.clone())),
            ("KILN_DATABASE_MAX_CONNECTIONS", Some("2".into())),
            ("KILN_STORAGE_URL", Some(s.url.clone())),
            ("KILN_S3_ENDPOINT", s.s3_endpoint.clone()),
            ("KILN_S3_REGION", Some(s.s3_region.clone())),
            ("KILN_S3_ACCESS_KEY_ID", s.s3_access_key_id.clone()),
            (
                "KILN_S3_SECRET_ACCESS_KEY",
                s.s3_secret_access_key.as_ref().map(|k| k.expose().into()),
            ),
            ("KILN_S3_ALLOW_HTTP", Some(s.s3_allow_http.to_string())),
            ("KILN_REDIS_URL", self.redis_url.clone()),
            ("KILN_HF_ENDPOINT", Some(self.hf_endpoint.clone())),
            ("KILN_MODEL_ROOTS", Some(self.model_roots.clone())),
            (
                "KILN_HF_TOKEN",
                self.hf_token.as_ref().map(|t| t.expose().into()),
            ),
            ("KILN_LEASE_SECONDS", Some(self.lease_seconds.to_string())),
            ("KILN_MAX_ATTEMPTS", Some(self.max_attempts.to_string())),
            (
                "KILN_RETRY_BASE_SECONDS",
                Some(self.retry_base_seconds.to_string()),
            ),
            (
                "KILN_RETRY_MAX_SECONDS",
                Some(self.retry_max_seconds.to_string()),
            ),
            ("KILN_STALL_SECONDS", Some(self.stall_seconds.to_string())),
            (
                "KILN_MAX_DURATION_MINUTES",
                Some(self.max_duration_minutes.to_string()),
            ),
            (
                "KILN_MAX_UPLOAD_BYTES",
                Some(self.max_upload_bytes.to_string()),
            ),
            (
                "KILN_MAX_TRAIN_MEMORY",
                Some(self.train_memory_limit().to_string()),
            ),
            ("KILN_MAX_LINE_BYTES", Some(self.max_line_bytes.to_string())),
            ("KILN_WORK_DIR", Some(self.work_dir.display().to_string())),
            ("KILN_WORKERS", Some("0".into())),
            ("KILN_DEVICE", Some(self.device.to_string())),
            (
                "KILN_LOG_FORMAT",
                Some(crate::telemetry::format().as_str().into()),
            ),
            // Its spans go where the worker's go.
            ("KILN_OTLP_ENDPOINT", crate::telemetry::otlp_endpoint()),
            // A job's process mints no tokens.
            ("KILN_ADMIN_TOKEN", None),
            // Everything a job's process needs is in these variables: it reads no settings file.
            (file::CONFIG_VAR, Some(String::new())),
        ];
        vars
    }

    /// The GPUs a worker gives one job (`KILN_WORKER_GPUS`, or what it has).
    pub fn worker_gpus(&self) -> u32 {
        self.runner.worker_gpus.unwrap_or(match self.runner.runner {
            RunnerKind::Kubernetes => 8,
            RunnerKind::Process => self.device.gpus_visible().min(1),
        })
    }

    /// [`Config::max_train_memory`], or [`default_train_memory`].
    pub fn train_memory_limit(&self) -> u64 {
        self.max_train_memory
            .map(|b| b.0)
            .unwrap_or_else(default_train_memory)
    }

    /// The embedded default with everything under `dir`: what tests and `kiln serve` on a bare machine use.
    pub fn embedded(dir: &std::path::Path) -> Self {
        Self {
            bind: "127.0.0.1:0".parse().expect("valid address"),
            metrics_bind: None,
            database_url: format!("sqlite://{}", dir.join("kiln.db").display()),
            database_max_connections: 10,
            storage: StorageConfig::local(dir.join("objects")),
            runner: RunnerConfig::default(),
            redis_url: None,
            hf_endpoint: "https://huggingface.co".into(),
            model_roots: dir.join("base-models").display().to_string(),
            hf_token: None,
            workers: 1,
            admin_token: None,
            token_cache_seconds: 60,
            lease_seconds: 30,
            max_attempts: 3,
            retry_base_seconds: 10,
            retry_max_seconds: 600,
            stall_seconds: 600,
            max_duration_minutes: 10080,
            max_upload_bytes: 1 << 30,
            max_train_memory: None,
            max_line_bytes: 1 << 20,
            upload_expiry_hours: 24,
            allow_pii: false,
            work_dir: dir.join("work"),
            max_connections: 1024,
            http_timeout_seconds: 30,
            job_executable: None,
            job_memory_limit: None,
            job_stop_grace_seconds: 30,
            model_cache_size: 4,
            predict_memory: ByteSize(1 << 30),
            predict_wait_seconds: 30,
            device: crate::train::DeviceChoice::Auto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_and_without_units() {
        let parse = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(parse("1073741824"), Ok(1 << 30));
        assert_eq!(parse("6GiB"), Ok(6 << 30));
        assert_eq!(parse("512M"), Ok(512_000_000));
        assert_eq!(parse("1.5 gib"), Ok(3 << 29));
        assert!(parse("lots").is_err());
        assert!(parse("5 parsecs").is_err());
    }

    #[test]
    fn secrets_are_not_printed() {
        let mut config = Config::embedded(std::path::Path::new("/tmp/x"));
        config.admin_token = Some(Secret::new("hunter2"));
        config.storage.s3_secret_access_key = Some(Secret::new("s3cr3t"));
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("s3cr3t"),
            "{printed}"
        );
    }
}
