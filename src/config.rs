//! Typed settings. Each has a default, a `KILN_*` environment variable and a command-line flag (the flag
//! wins over the variable, the variable over the default). Secrets are wrapped in [`Secret`], whose
//! `Debug` prints `[redacted]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

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

/// Everything `kiln serve` and `kiln worker` need.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "KILN_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
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
    /// Token for private hub repositories.
    #[arg(long = "hf-token", env = "KILN_HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<Secret>,
    /// Training workers in this process (0 = API only).
    #[arg(long, env = "KILN_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Admin API token; created on start when missing. Without it, the first start prints a new one.
    #[arg(long, env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// Seconds a worker's claim on a job lasts without a heartbeat.
    #[arg(long, env = "KILN_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,
    /// Times a job is started before a worker that stopped responding fails it.
    #[arg(long, env = "KILN_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: i64,
    /// Largest dataset upload, in bytes.
    #[arg(long, env = "KILN_MAX_UPLOAD_BYTES", default_value_t = 1 << 30)]
    pub max_upload_bytes: u64,
    /// Longest line of a dataset file, in bytes; a longer line is an error naming it.
    #[arg(long, env = "KILN_MAX_LINE_BYTES", default_value_t = 1 << 20)]
    pub max_line_bytes: usize,
    /// Folder for temporary files (uploads being checked, models being written).
    #[arg(long, env = "KILN_WORK_DIR", default_value = "./kiln-data/work")]
    pub work_dir: PathBuf,
}

impl Config {
    /// The embedded default with everything under `dir`: what tests and `kiln serve` on a bare machine use.
    pub fn embedded(dir: &std::path::Path) -> Self {
        Self {
            bind: "127.0.0.1:0".parse().expect("valid address"),
            database_url: format!("sqlite://{}", dir.join("kiln.db").display()),
            database_max_connections: 10,
            storage: StorageConfig::local(dir.join("objects")),
            redis_url: None,
            hf_endpoint: "https://huggingface.co".into(),
            hf_token: None,
            workers: 1,
            admin_token: None,
            lease_seconds: 30,
            max_attempts: 3,
            max_upload_bytes: 1 << 30,
            max_line_bytes: 1 << 20,
            work_dir: dir.join("work"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
