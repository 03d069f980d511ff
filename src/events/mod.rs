//! Job events fan-out. The embedded default is one in-process broadcast channel that every
//! subscription filters by job.
//!
//! Capacity: [`CHANNEL_CAPACITY`] events. A subscriber that falls further behind is told it lagged
//! (`RecvError::Lagged`) and re-reads what it missed from the store, so a slow client loses no stored
//! event (step progress, which is not stored, may be skipped). Events are published only after the
//! change they describe has been written.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::domain::JobStatus;
use crate::train::EpochMetrics;

pub const CHANNEL_CAPACITY: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    StatusChanged {
        status: JobStatus,
        error: Option<String>,
    },
    EpochCompleted(EpochMetrics),
    StepProgress {
        step: u64,
        epoch: u32,
        loss: f64,
        learning_rate: f64,
        samples_per_second: f64,
    },
}

#[derive(Debug, Clone)]
pub struct Envelope {
    pub job_id: String,
    pub event: JobEvent,
}

/// The event hub handed to the API and the workers.
#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<Envelope>>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self { tx }
    }

    /// Sends to every current subscriber; with none, the event is dropped (it is in the store already).
    pub fn publish(&self, job_id: &str, event: JobEvent) {
        let _ = self.tx.send(Arc::new(Envelope {
            job_id: job_id.to_string(),
            event,
        }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.tx.subscribe()
    }
}
