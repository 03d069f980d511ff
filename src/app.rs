//! Builds kiln's shared state (store, objects, events, auth, workers) and runs it: the HTTP API and the
//! in-process worker pool, until the caller's shutdown signal.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::events::EventHub;
use crate::objects::Objects;
use crate::runner::{RunningJobs, StopReason, Worker};
use crate::store::Store;

/// Everything the API and the workers share.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub objects: Objects,
    pub events: EventHub,
    pub auth: Authenticator,
    pub running: RunningJobs,
    /// Notified when a job is queued, so idle workers claim it at once.
    pub wake_workers: Notify,
}

/// What [`AppState::build`] found worth telling the operator.
pub struct Startup {
    pub state: Arc<AppState>,
    /// A newly minted admin token, on a first start without `KILN_ADMIN_TOKEN`.
    pub new_admin_token: Option<String>,
}

impl AppState {
    /// Connects to the database and object store, applies migrations and makes sure an admin token exists.
    pub async fn build(config: Config) -> Result<Startup> {
        std::fs::create_dir_all(&config.work_dir)
            .with_context(|| format!("creating the work folder {}", config.work_dir.display()))?;
        let store = Store::connect(&config.database_url, config.database_max_connections).await?;
        store.migrate().await?;
        let objects = Objects::from_config(&config.storage)?;
        // Fail at start, not at the first upload, when the object store is unreachable or refuses us.
        objects.ping().await.context("checking the object store")?;
        let events = match &config.redis_url {
            Some(url) => EventHub::with_redis(url).await?,
            None => EventHub::new(),
        };
        let auth = Authenticator::new(store.clone());
        let new_admin_token = auth
            .bootstrap_admin(config.admin_token.as_ref().map(|s| s.expose()))
            .await
            .context("creating the admin token")?;
        let state = Arc::new(AppState {
            config,
            store,
            objects,
            events,
            auth,
            running: RunningJobs::default(),
            wake_workers: Notify::new(),
        });
        Ok(Startup {
            state,
            new_admin_token,
        })
    }
}

/// Serves the API on `listener` and runs `config.workers` workers until `shutdown` completes; then stops
/// accepting requests, interrupts running jobs (they go back to the queue) and waits for the workers.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..state.config.workers {
        workers.push(tokio::spawn(
            Worker::new(state.clone()).run_until_stopped(stop.clone()),
        ));
    }
    // At the signal, running jobs are interrupted at once (they go back to the queue) while HTTP drains.
    let interrupt_jobs = {
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            state.running.stop_all(StopReason::Shutdown);
        })
    };
    let stop_http = stop.clone();
    let signal = async move {
        shutdown.await;
        stop_http.cancel();
    };
    let served = crate::http::serve(listener, state.clone(), signal).await;
    stop.cancel();
    let _ = interrupt_jobs.await;
    for worker in workers {
        let _ = worker.await;
    }
    state.store.close().await;
    served.context("serving HTTP")
}
