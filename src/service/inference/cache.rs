//! The versions loaded for `predict`, at most `KILN_MODEL_CACHE_SIZE` in memory at once.
//!
//! A version takes a place ("room") before it loads and gives it back only when its memory is freed:
//! when it has been dropped from the cache *and* the last request using it has finished. A version
//! that needs room and finds none drops the least recently used loaded version (never one still
//! loading) and waits for its room, at most the predict wait; so versions loading at once count too,
//! and a burst of loads of many versions never holds more than the cache's size.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::domain::ModelVersionRecord;
use crate::service::{ServiceError, ServiceResult};
use crate::train::inference::LoadedModel;

/// A loaded version and how it has been used.
pub struct Served {
    pub version: ModelVersionRecord,
    pub model: LoadedModel,
    pub loaded_at: i64,
    pub(super) last_used: AtomicI64,
    pub(super) requests: AtomicU64,
    /// Its place in the cache, given back when it is freed.
    _room: OwnedSemaphorePermit,
}

impl Served {
    pub(super) fn new(
        version: ModelVersionRecord,
        model: LoadedModel,
        room: OwnedSemaphorePermit,
    ) -> Self {
        let now = crate::domain::now_ms();
        Self {
            version,
            model,
            loaded_at: now,
            last_used: AtomicI64::new(now),
            requests: AtomicU64::new(0),
            _room: room,
        }
    }

    pub fn last_used(&self) -> i64 {
        self.last_used.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

pub(super) type Cell = Arc<OnceCell<Arc<Served>>>;

struct Slot {
    version_id: String,
    cell: Cell,
}

/// The loaded versions, least recently used first. One load per version at a time: concurrent
/// requests for a version that is loading wait for that load.
pub struct ModelCache {
    size: usize,
    room: Arc<Semaphore>,
    /// Told when a load ends or a version leaves, so that those waiting for room look again.
    changed: Notify,
    slots: std::sync::Mutex<Vec<Slot>>,
}

impl ModelCache {
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            size,
            room: Arc::new(Semaphore::new(size)),
            changed: Notify::new(),
            slots: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The cell of a version, made most recently used (created when absent).
    pub(super) fn cell(&self, version_id: &str) -> Cell {
        let mut slots = self.slots.lock().expect("cache lock");
        let slot = match slots.iter().position(|s| s.version_id == version_id) {
            Some(i) => slots.remove(i),
            None => Slot {
                version_id: version_id.to_string(),
                cell: Arc::new(OnceCell::new()),
            },
        };
        let cell = slot.cell.clone();
        slots.push(slot);
        cell
    }

    /// A place for `version_id` to load into: a free one, or one freed by dropping the least recently
    /// used loaded version; waits at most `wait` for it.
    pub(super) async fn make_room(
        &self,
        version_id: &str,
        wait: Duration,
    ) -> ServiceResult<OwnedSemaphorePermit> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Ok(permit) = self.room.clone().try_acquire_owned() {
                return Ok(permit);
            }
            self.evict_least_recently_used(version_id);
            tokio::select! {
                permit = self.room.clone().acquire_owned() => {
                    return Ok(permit.expect("the semaphore is never closed"));
                }
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ServiceError::Busy(format!(
                        "the model cache (KILN_MODEL_CACHE_SIZE = {}) stayed full of versions \
                         loading or in use for {} s; try again",
                        self.size,
                        wait.as_secs()
                    )));
                }
            }
        }
    }

    /// Drops the least recently used loaded version other than `except`, if any. Its memory is freed
    /// when the requests still using it finish.
    fn evict_least_recently_used(&self, except: &str) {
        let mut slots = self.slots.lock().expect("cache lock");
        if let Some(i) = slots
            .iter()
            .position(|s| s.version_id != except && s.cell.get().is_some())
        {
            let evicted = slots.remove(i);
            tracing::info!(version = %evicted.version_id, "model unloaded (least recently used)");
        }
    }

    /// Says that a load has ended (for those waiting for room); a failed one leaves the cache.
    pub(super) fn load_ended(&self, version_id: &str, cell: &Cell) {
        if cell.get().is_none() {
            let mut slots = self.slots.lock().expect("cache lock");
            slots.retain(|s| s.version_id != version_id || !Arc::ptr_eq(&s.cell, cell));
        }
        self.changed.notify_waiters();
    }

    pub(super) fn loaded(&self) -> Vec<Arc<Served>> {
        let slots = self.slots.lock().expect("cache lock");
        slots.iter().filter_map(|s| s.cell.get().cloned()).collect()
    }

    /// Drops a loaded version; whether it was loaded.
    pub(in crate::service) fn remove(&self, version_id: &str) -> bool {
        let mut slots = self.slots.lock().expect("cache lock");
        let before = slots.len();
        slots.retain(|s| s.version_id != version_id || s.cell.get().is_none());
        let removed = slots.len() != before;
        drop(slots);
        self.changed.notify_waiters();
        removed
    }
}
