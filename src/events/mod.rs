//! Job events fan-out (and resumable uploads' progress, under the upload's id).
//!
//! Subscribers always read from one in-process broadcast channel and filter by job. Where events enter it
//! depends on the profile:
//! - embedded default: [`EventHub::publish`] sends straight into the channel;
//! - with Redis (`KILN_REDIS_URL`): `publish` sends to the Redis channel [`REDIS_CHANNEL`], and a bridge
//!   task feeds every message of that channel into the local one, so each replica's subscribers see the
//!   events of every replica's workers, in the order each worker published them.
//!
//! Capacity: [`CHANNEL_CAPACITY`] events. A subscriber that falls further behind is told it lagged
//! (`RecvError::Lagged`); after the Redis bridge reconnects, a [`JobEvent::Resync`] is sent to everyone.
//! Either way subscribers re-read the store, so no stored event (status, epoch) is lost; step progress,
//! which is not stored, may be skipped. Events are published only after the change they describe is
//! written.
//!
//! A job that runs in its own process (`kiln run-job --attached`) writes its events to its parent worker
//! as JSON lines ([`EventHub::to_parent`]), and the worker publishes them ([`EventHub::relay`]).
//!
//! Workers listen here too: a `StatusChanged { status: Queued }` wakes idle workers at once (on every
//! replica, with Redis), and `CancelRequested` / `PauseRequested` reach the worker running the job.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::domain::{EpochMetrics, JobStatus, LogLine};

pub const CHANNEL_CAPACITY: usize = 1024;
/// The Redis pub/sub channel all replicas share.
pub const REDIS_CHANNEL: &str = "kiln:job-events";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    StatusChanged {
        status: JobStatus,
        error: Option<String>,
    },
    EpochCompleted(EpochMetrics),
    StepProgress {
        step: u64,
        /// The steps of the whole run (0 from a process that did not say).
        #[serde(default)]
        total_steps: u64,
        epoch: u32,
        #[serde(default)]
        total_epochs: u32,
        loss: f64,
        learning_rate: f64,
        samples_per_second: f64,
    },
    /// A user asked to cancel the job; the worker running it stops, in this process or on another replica.
    CancelRequested,
    /// A user asked to pause the job; the worker running it checkpoints and stops.
    PauseRequested,
    /// The job goes on from a checkpoint (or from the start: step 0): what was recorded after it is
    /// gone, and the steps after it come again.
    Resumed {
        from_step: u64,
        from_epoch: u32,
    },
    /// Lines of the job's log, as stored (numbered, in order).
    Logs(Vec<LogLine>),
    /// Events may have been dropped (the Redis bridge reconnected): subscribers re-read the store.
    Resync,
    /// Something moved the queue besides a job's status: a queued job's priority changed, a worker
    /// started or stopped. Those following a queued job work out its place again.
    QueueMoved,
    /// A resumable upload moved (bytes arrived, its file was checked, it expired): published under
    /// the upload's id, what `uploadEvents` tells its followers.
    UploadChanged(crate::domain::UploadProgress),
    /// A queued job's place changed: what `jobEvents` tells its followers (worked out by each
    /// follower's stream, never published).
    QueueChanged(crate::domain::QueuePlace),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub job_id: String,
    pub event: JobEvent,
}

/// The event hub handed to the API and the workers.
#[derive(Clone)]
pub struct EventHub {
    local: broadcast::Sender<Arc<Envelope>>,
    /// Set when events leave the process (through Redis, or to a parent process): the queue of the task
    /// that sends them, in order.
    outbound: Option<mpsc::UnboundedSender<Envelope>>,
    /// A connection to Redis, for readiness checks, when events travel through it.
    redis: Option<redis::aio::ConnectionManager>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    /// The in-process hub of the embedded default.
    pub fn new() -> Self {
        let (local, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            local,
            outbound: None,
            redis: None,
        }
    }

    /// A hub for a job's own process (`kiln run-job --attached`): every event is written to `out` as one
    /// JSON line, for the parent worker to publish; nothing is received. The task writing them ends,
    /// having written everything, once every clone of the hub is dropped: await the returned handle
    /// before exiting.
    pub fn to_parent(
        out: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (local, _) = broadcast::channel(1);
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_lines(out, rx));
        (
            Self {
                local,
                outbound: Some(tx),
                redis: None,
            },
            writer,
        )
    }

    /// Publishes an event received from a job's own process, as if it happened here.
    pub fn relay(&self, envelope: Envelope) {
        self.publish(&envelope.job_id, envelope.event);
    }

    /// The hub a kiln process shares with the others: through Redis at `redis_url` when there is
    /// one, in-process otherwise.
    pub async fn shared(redis_url: Option<&str>) -> anyhow::Result<Self> {
        match redis_url {
            Some(url) => Self::with_redis(url).await,
            None => Ok(Self::new()),
        }
    }

    /// A hub whose events travel through Redis at `url`. Fails when Redis cannot be reached now; later
    /// connection losses are retried in the background.
    pub async fn with_redis(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("parsing KILN_REDIS_URL")?;
        let publisher = client
            .get_connection_manager()
            .await
            .context("connecting to Redis")?;
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .context("connecting to Redis")?;
        pubsub
            .subscribe(REDIS_CHANNEL)
            .await
            .context("subscribing to Redis")?;
        let (local, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(publish_to_redis(publisher.clone(), rx));
        tokio::spawn(bridge_from_redis(client, pubsub, local.clone()));
        Ok(Self {
            local,
            outbound: Some(tx),
            redis: Some(publisher),
        })
    }

    /// A `PING` to Redis, when events travel through it (`/readyz`).
    pub fn ping_redis(
        &self,
    ) -> Option<impl std::future::Future<Output = anyhow::Result<()>> + use<>> {
        let mut connection = self.redis.clone()?;
        Some(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .context("Redis did not answer PING")?;
            Ok(())
        })
    }

    /// Sends to every current subscriber; with none, the event is dropped (it is in the store already).
    pub fn publish(&self, job_id: &str, event: JobEvent) {
        let envelope = Envelope {
            job_id: job_id.to_string(),
            event,
        };
        match &self.outbound {
            Some(queue) => {
                let _ = queue.send(envelope);
            }
            None => {
                let _ = self.local.send(Arc::new(envelope));
            }
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.local.subscribe()
    }
}

/// Writes queued events as JSON lines, in order, until every sender is gone.
async fn write_lines(
    mut out: impl tokio::io::AsyncWrite + Unpin,
    mut queue: mpsc::UnboundedReceiver<Envelope>,
) {
    use tokio::io::AsyncWriteExt;
    while let Some(envelope) = queue.recv().await {
        let Ok(mut line) = serde_json::to_vec(&envelope) else {
            continue;
        };
        line.push(b'\n');
        if out.write_all(&line).await.is_err() || out.flush().await.is_err() {
            // The parent is gone; the job's process is being ended with it.
            break;
        }
    }
}

/// Publishes queued events one at a time, so one process's events keep their order.
async fn publish_to_redis(
    mut connection: redis::aio::ConnectionManager,
    mut queue: mpsc::UnboundedReceiver<Envelope>,
) {
    while let Some(envelope) = queue.recv().await {
        let payload = match serde_json::to_string(&envelope) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "an event could not be encoded");
                continue;
            }
        };
        let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
            .arg(REDIS_CHANNEL)
            .arg(payload)
            .query_async(&mut connection)
            .await;
        if let Err(e) = sent {
            // The connection manager reconnects by itself; this event is lost to live subscribers but
            // whatever it describes is in the store.
            tracing::warn!(error = %e, "publishing an event to Redis failed");
        }
    }
}

/// Feeds Redis messages into the local channel, reconnecting with back-off when the connection drops.
async fn bridge_from_redis(
    client: redis::Client,
    mut pubsub: redis::aio::PubSub,
    local: broadcast::Sender<Arc<Envelope>>,
) {
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                match serde_json::from_slice::<Envelope>(message.get_payload_bytes()) {
                    Ok(envelope) => {
                        let _ = local.send(Arc::new(envelope));
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring an unreadable event from Redis"),
                }
            }
        }
        tracing::warn!("the Redis event subscription ended; reconnecting");
        let mut delay = Duration::from_millis(100);
        pubsub = loop {
            tokio::time::sleep(delay).await;
            if let Ok(mut p) = client.get_async_pubsub().await
                && p.subscribe(REDIS_CHANNEL).await.is_ok()
            {
                break p;
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        };
        let _ = local.send(Arc::new(Envelope {
            job_id: String::new(),
            event: JobEvent::Resync,
        }));
    }
}
