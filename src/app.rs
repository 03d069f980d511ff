//! The composition root: connects the store, object store and event hub, builds the [`Service`], and
//! runs the HTTP API and the in-process workers until the caller's shutdown signal. Nothing else in the
//! library imports this module.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::runner::{Runner, Worker, WorkerSettings};
use crate::service::Service;
use crate::store::Store;

/// Database connections the in-process workers keep for themselves (claims, heartbeats, a job's end).
const WORKER_CONNECTIONS: u32 = 2;

/// A started kiln: its settings, the use cases, and the token check.
pub struct App {
    pub config: Config,
    /// The use cases as the API reaches them.
    pub service: Service,
    /// The same use cases over a database pool of the workers' own, so that a flood of API requests
    /// cannot keep a worker from claiming jobs or renewing its leases.
    pub worker_service: Service,
    pub auth: Arc<Authenticator>,
    /// Where the workers run jobs.
    pub runner: Runner,
}

/// What [`App::build`] found worth telling the operator.
pub struct Startup {
    pub app: App,
    /// A newly minted admin token, on a first start without `KILN_ADMIN_TOKEN`.
    pub new_admin_token: Option<String>,
}

impl App {
    /// Connects to the database and object store, applies migrations and makes sure an admin token exists.
    pub async fn build(config: Config) -> Result<Startup> {
        std::fs::create_dir_all(&config.work_dir)
            .with_context(|| format!("creating the work folder {}", config.work_dir.display()))?;
        let runner = runner(&config).await?;
        let events = EventHub::shared(config.redis_url.as_deref()).await?;
        // One registry for the whole process: what the API and the workers count, scraped together.
        let service = Service::connect(&config, config.database_max_connections, events)
            .await?
            .with_metrics(Arc::new(Metrics::new()));
        service.store().migrate().await?;
        // Fail at start, not at the first upload, when the object store is unreachable or refuses us.
        service
            .objects()
            .ping()
            .await
            .context("checking the object store")?;
        let auth = Authenticator::new(
            service.store().clone(),
            std::time::Duration::from_secs(config.token_cache_seconds),
        );
        let new_admin_token = auth
            .bootstrap_admin(config.admin_token.as_ref().map(|s| s.expose()))
            .await
            .context("creating the admin token")?;
        let worker_service =
            service.on_pool(Store::connect(&config.database_url, WORKER_CONNECTIONS).await?);
        if let Err(e) = service.sweep_debris().await {
            tracing::warn!(
                error = format!("{e:#}"),
                "cleaning up after interrupted work failed"
            );
        }
        Ok(Startup {
            app: App {
                config,
                service,
                worker_service,
                auth: Arc::new(auth),
                runner,
            },
            new_admin_token,
        })
    }

    /// A worker of this app, for running the queue by hand (tests) or in the pool.
    pub fn worker(&self) -> Worker {
        Worker::new(
            self.worker_service.work_queue(),
            WorkerSettings::from_config(&self.config).with_runner(self.runner.clone()),
        )
    }

    /// Serves the API on `listener` and runs `config.workers` workers until `shutdown` completes; then
    /// interrupts running jobs at once (they go back to the queue), lets HTTP drain and waits for the
    /// workers.
    pub async fn run(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let stop = CancellationToken::new();
        let metrics = match self.config.metrics_bind {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding KILN_METRICS_BIND {address}"))?;
                let router = crate::http::metrics_router(self.service.clone());
                let stop = stop.clone();
                Some(tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move { stop.cancelled().await })
                        .await
                }))
            }
            None => None,
        };
        let workers: Vec<_> = (0..self.config.workers)
            .map(|_| {
                tokio::spawn(
                    self.worker()
                        .with_shutdown(stop.clone())
                        .run_until_stopped(),
                )
            })
            .collect();
        let sweeper = {
            let (service, stop) = (self.service.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(crate::service::debris::SWEEP_EVERY) => {}
                    }
                    if let Err(e) = service.sweep_debris().await {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "cleaning up after interrupted work failed"
                        );
                    }
                }
            })
        };
        let stop_http = stop.clone();
        let signal = async move {
            shutdown.await;
            stop_http.cancel();
        };
        let http = crate::http::HttpState::new(
            self.service.clone(),
            self.auth.clone(),
            crate::http::HttpLimits::from_config(&self.config),
        );
        let served = crate::http::serve(listener, http, signal).await;
        stop.cancel();
        let _ = sweeper.await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        for worker in workers {
            let _ = worker.await;
        }
        self.service.store().close().await;
        self.worker_service.store().close().await;
        served.context("serving HTTP")
    }
}

/// Where this process's workers run jobs (`KILN_RUNNER`); the Kubernetes runner connects to its cluster
/// here, so that a missing cluster or image is an error at start.
async fn runner(config: &Config) -> Result<Runner> {
    use crate::config::RunnerKind;
    use crate::runner::kubernetes::{Kube, KubeSettings};
    match config.runner.runner {
        RunnerKind::Process => Ok(Runner::Process),
        RunnerKind::Kubernetes if config.workers == 0 => Ok(Runner::Process),
        RunnerKind::Kubernetes => {
            if config.redis_url.is_none() {
                anyhow::bail!(
                    "KILN_RUNNER=kubernetes needs KILN_REDIS_URL: job pods report their progress \
                     and hear cancels through Redis"
                );
            }
            let settings = KubeSettings::from_config(&config.runner)?;
            Ok(Runner::Kubernetes(Kube::connect(settings).await?))
        }
    }
}
