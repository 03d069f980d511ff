//! The only place with SQL. One code path for SQLite and Postgres through sqlx's `Any` driver, with a
//! portable schema (ids and JSON as TEXT, times as BIGINT epoch ms, flags as BIGINT 0/1) and two
//! migration folders holding the same tables. Dialect-specific SQL appears only where it must differ
//! (claiming a job uses `FOR UPDATE SKIP LOCKED` on Postgres).
//!
//! Every statement sent is counted ([`Store::query_count`]), so tests can hold the API to a constant
//! number of round trips per request.
//!
//! When the database cannot be reached, a statement waits at most [`ACQUIRE_TIMEOUT`] for a
//! connection, and for [`UNAVAILABLE_FOR`] after such a failure statements fail at once with
//! [`StoreError::Unavailable`] rather than queueing for connections that will not come.
//!
//! It depends on `domain/` alone: rows are decoded into the domain's records (`JobRecord`,
//! `DatasetRecord`, …), and stored JSON is read back into typed values or refused as corrupt.

mod analytics;
mod checkpoints;
mod datasets;
mod deletion;
mod history;
mod jobs;
mod logs;
mod models;
mod queue;
mod registry;
mod tokens;
mod uploads;
mod waiting;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use analytics::JobCounts;
pub use datasets::NewDataset;
pub use jobs::{NewJob, Page};
pub use queue::{AttemptEnd, TrainingRecord};
pub use tokens::TokenRecord;
pub use uploads::LockRefused;
pub use waiting::SNAPSHOT_QUEUED;

/// How long statements are refused at once after one found the database unreachable.
pub const UNAVAILABLE_FOR: Duration = Duration::from_secs(2);
/// How long a statement waits for a connection.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The database cannot be reached right now.
    #[error("the database is unreachable")]
    Unavailable,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(anyhow::Error::new(e))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    queries: Arc<AtomicU64>,
    /// Epoch ms until which statements are refused at once (0: not known to be down).
    down_until: Arc<AtomicI64>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Whether a database error means the server cannot be reached (or just dropped the connection):
/// no connection in time, a socket or TLS failure, or the server ending the session — it is shutting
/// down or restarting (SQLSTATE 57P01, 57P02), not accepting connections yet (57P03), or a connection
/// failure of class 08. Trying again later may work.
fn disconnected(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            matches!(&*code, "57P01" | "57P02" | "57P03") || code.starts_with("08")
        }),
        _ => false,
    }
}

impl Store {
    /// Connects to `sqlite://path` (the file and its folder are created) or `postgres://…`.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            anyhow::bail!(
                "KILN_DATABASE_URL must start with sqlite:// or postgres:// (got {url:?})"
            );
        };
        let url = match dialect {
            Dialect::Sqlite => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(parent) = std::path::Path::new(path).parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).with_context(|| {
                        format!("creating the database folder {}", parent.display())
                    })?;
                }
                format!("sqlite://{path}?mode=rwc")
            }
            Dialect::Postgres => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url).context("parsing the database URL")?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        conn.execute("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .context("connecting to the database")?;
        if dialect == Dialect::Sqlite {
            // WAL lets readers run while a worker writes; it is a property of the file, set once.
            pool.execute("PRAGMA journal_mode = WAL;")
                .await
                .context("enabling WAL")?;
        }
        Ok(Self {
            pool,
            dialect,
            queries: Arc::new(AtomicU64::new(0)),
            down_until: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Applies the embedded migrations of this dialect.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .context("applying database migrations")?;
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Statements sent since start.
    pub fn query_count(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Counts one round trip (every statement calls it once), or refuses it at once while the database
    /// is known to be unreachable.
    fn tick(&self) -> StoreResult<()> {
        let down_until = self.down_until.load(Ordering::Relaxed);
        if down_until > 0 && crate::domain::now_ms() < down_until {
            return Err(StoreError::Unavailable);
        }
        self.queries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Converts a failure, noting when it says the database cannot be reached: for the next
    /// [`UNAVAILABLE_FOR`] statements fail at once instead of each waiting for a connection.
    fn note(&self, error: impl Into<StoreError>) -> StoreError {
        let error = error.into();
        let unreachable = match &error {
            StoreError::Other(e) => e.downcast_ref::<sqlx::Error>().is_some_and(disconnected),
            StoreError::Unavailable => true,
            _ => false,
        };
        if unreachable {
            let until = crate::domain::now_ms() + UNAVAILABLE_FOR.as_millis() as i64;
            self.down_until.store(until, Ordering::Relaxed);
            return StoreError::Unavailable;
        }
        error
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> StoreResult<()> {
        self.tick()?;
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        Ok(())
    }

    /// The rows of `select` for a list of keys, in one round trip: `select` holds `{in}` where the
    /// placeholder list goes. No keys, no query.
    async fn fetch_in(&self, select: &str, keys: &[String]) -> StoreResult<Vec<sqlx::any::AnyRow>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.tick()?;
        let sql = select.replace("{in}", &placeholders(1, keys.len()));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in keys {
            query = query.bind(key);
        }
        query.fetch_all(&self.pool).await.map_err(|e| self.note(e))
    }

    /// The pool's open connections: `(in use, idle)`.
    pub fn pool_use(&self) -> (u32, u32) {
        let idle = self.pool.num_idle() as u32;
        (self.pool.size().saturating_sub(idle), idle)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `$1, $2, …, $n` starting at `first`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(anyhow::anyhow!("stored {what} is unreadable: {e}"))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::disconnected;

    /// A server's error with a SQLSTATE, as the Postgres driver reports one.
    #[derive(Debug)]
    struct ServerError(&'static str);

    impl std::fmt::Display for ServerError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "server error {}", self.0)
        }
    }

    impl std::error::Error for ServerError {}

    impl sqlx::error::DatabaseError for ServerError {
        fn message(&self) -> &str {
            "terminating connection due to administrator command"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    #[test]
    fn a_server_ending_the_session_is_the_database_being_away() {
        let code = |c: &'static str| sqlx::Error::Database(Box::new(ServerError(c)));
        // A restart or shutdown ends every session (57P01, 57P02), a server starting up refuses
        // connections (57P03), and class 08 is a lost connection.
        for away in ["57P01", "57P02", "57P03", "08006", "08003"] {
            assert!(disconnected(&code(away)), "{away}");
        }
        assert!(disconnected(&sqlx::Error::PoolTimedOut));
        // A constraint or a syntax error is the statement's own fault.
        for own in ["23505", "42601", "40001"] {
            assert!(!disconnected(&code(own)), "{own}");
        }
        assert!(!disconnected(&sqlx::Error::RowNotFound));
    }
}
