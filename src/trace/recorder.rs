//! The in-memory side of the trace: `/m/` and sends record here (a map insert, no
//! I/O), and [`Recorder::flush`] folds what was recorded into the store, about once
//! a second from a task the server owns, and once more at shutdown.
//!
//! A flush and a read of a trace exclude each other, so a reader sees every event
//! exactly once: either still pending here, or already in the store, never both and
//! never neither. Memory is bounded by one flush interval of traffic, at most
//! [`RING`](super::RING) events per link.

use dashmap::DashMap;

use super::{Event, Trace};
use crate::ids::LinkId;
use crate::store::{Store, StoreError};

/// Links with unflushed events past which new links' events are dropped (counted in
/// the log) rather than growing memory while the store is down.
const MAX_PENDING_LINKS: usize = 100_000;

#[derive(Default)]
pub struct Recorder {
    pending: DashMap<LinkId, Trace>,
    flush_lock: tokio::sync::Mutex<()>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, id: &LinkId, event: Event) {
        if let Some(mut t) = self.pending.get_mut(id) {
            t.push(event);
            return;
        }
        if self.pending.len() >= MAX_PENDING_LINKS {
            tracing::warn!(%id, "trace buffer full (is the store down?); event dropped");
            return;
        }
        self.pending.entry(id.clone()).or_default().push(event);
    }

    /// Drops what is pending for a deleted link.
    pub fn forget(&self, id: &LinkId) {
        self.pending.remove(id);
    }

    /// Writes every pending trace to the store. On failure they are kept (merged
    /// before anything recorded meanwhile) for the next flush.
    pub async fn flush(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let _excl = self.flush_lock.lock().await;
        let ids: Vec<LinkId> = self.pending.iter().map(|e| e.key().clone()).collect();
        let batch: Vec<(LinkId, Trace)> = ids
            .into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        match crate::store::timed("append_events", store.append_events(batch.clone())).await {
            Ok(()) => Ok(n),
            Err(e) => {
                for (id, mut older) in batch {
                    let mut entry = self.pending.entry(id).or_default();
                    older.merge(std::mem::take(entry.value_mut()));
                    *entry.value_mut() = older;
                }
                Err(e)
            }
        }
    }

    /// The link's trace: what the store holds, then what is still pending here.
    pub async fn trace(&self, store: &dyn Store, id: &LinkId) -> Result<Trace, StoreError> {
        let _excl = self.flush_lock.lock().await;
        let mut t = crate::store::timed("events", store.events(id))
            .await?
            .unwrap_or_default();
        if let Some(p) = self.pending.get(id) {
            t.merge(p.clone());
        }
        Ok(t)
    }
}
