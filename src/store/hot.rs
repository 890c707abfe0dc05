//! The map of hot links in front of any store (DESIGN §6): a served id is looked up
//! in memory, not in SQLite or PostgreSQL.
//!
//! It is a cache of immutable-but-deletable records, so the only invalidation is
//! `forget`, called on every delete (local, or announced by another replica).
//!
//! Every call that reaches the store is timed here (`medialink_store_seconds{op}`),
//! the one place all request-path store calls pass through.

use std::sync::Arc;

use dashmap::DashMap;

use super::{LinkRecord, MediaInfo, NewLink, Put, Store, StoreError};
use crate::ids::LinkId;

/// Entries kept before the map is thinned; a record is a few hundred bytes.
const MAX_ENTRIES: usize = 200_000;

pub struct HotStore {
    inner: Arc<dyn Store>,
    map: DashMap<LinkId, Arc<LinkRecord>>,
}

impl HotStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            map: DashMap::new(),
        }
    }

    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    pub async fn get(&self, id: &LinkId) -> Result<Option<Arc<LinkRecord>>, StoreError> {
        if let Some(hit) = self.map.get(id) {
            return Ok(Some(Arc::clone(hit.value())));
        }
        let Some(record) = timed("get", self.inner.get(id)).await? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        self.remember(&record);
        Ok(Some(record))
    }

    pub async fn put_if_absent(&self, links: Vec<NewLink>) -> Result<Vec<Put>, StoreError> {
        let puts = timed("put", self.inner.put_if_absent(links)).await?;
        for p in &puts {
            if let Put::Created(r) | Put::Existing(r) = p {
                self.remember(&Arc::new(r.clone()));
            }
        }
        Ok(puts)
    }

    pub async fn delete(&self, id: &LinkId) -> Result<bool, StoreError> {
        let deleted = timed("delete", self.inner.delete(id)).await;
        // Forget even on error: a stale entry must never outlive a delete attempt.
        self.forget(id);
        deleted
    }

    pub async fn set_media(&self, id: &LinkId, media: &MediaInfo) -> Result<(), StoreError> {
        timed("set_media", self.inner.set_media(id, media)).await?;
        if let Some(mut entry) = self.map.get_mut(id) {
            let mut r = (**entry.value()).clone();
            r.media = Some(media.clone());
            *entry.value_mut() = Arc::new(r);
        }
        Ok(())
    }

    pub async fn recent(&self, limit: usize) -> Result<Vec<LinkRecord>, StoreError> {
        timed("recent", self.inner.recent(limit)).await
    }

    pub fn forget(&self, id: &LinkId) {
        self.map.remove(id);
    }

    pub fn forget_all(&self) {
        self.map.clear();
    }

    fn remember(&self, record: &Arc<LinkRecord>) {
        if self.map.len() >= MAX_ENTRIES {
            // Crude but bounded: drop about half. Hot ids come back on their next
            // request at the cost of one store read each.
            let mut keep = false;
            self.map.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        self.map.insert(record.id.clone(), Arc::clone(record));
    }
}

/// Runs one store call and records how long it took, whatever its result.
pub async fn timed<T>(op: &'static str, f: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = f.await;
    metrics::histogram!("medialink_store_seconds", "op" => op).record(started.elapsed());
    out
}
