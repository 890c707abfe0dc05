//! The map of hot links in front of any store (DESIGN §6): a served id is looked up
//! in memory, not in SQLite or PostgreSQL.
//!
//! It is a cache of immutable-but-deletable records, so the only invalidation is
//! `forget`, called on every delete (local, or announced by another replica).
//!
//! Every call that reaches the store is timed here (`medialink_store_seconds{op}`),
//! the one place all request-path store calls pass through.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use super::{LinkRecord, MediaInfo, NewLink, Put, Store, StoreError};
use crate::ids::LinkId;

/// Entries kept before the map is thinned; a record is a few hundred bytes.
const MAX_ENTRIES: usize = 200_000;

pub struct HotStore {
    inner: Arc<dyn Store>,
    /// foldhash, not SipHash: ids are keyed hashes nobody can aim at one bucket.
    map: DashMap<LinkId, Arc<LinkRecord>, foldhash::fast::RandomState>,
    /// About how many entries `map` holds. `DashMap::len` locks every shard, which an
    /// array of 1,000 creates paid 1,000 times; this count only has to be close
    /// enough to bound the map.
    entries: AtomicUsize,
}

impl HotStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            entries: AtomicUsize::new(0),
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

    /// A single create is remembered: the gateway fetches its short URL within
    /// seconds. An array is not: a bulk import of many thousands of links would thin
    /// out the links actually being served, and cost every item a copy of its record
    /// (5% of the server's CPU on arrays of 1,000); its links are remembered when first
    /// served instead.
    pub async fn put_if_absent(&self, links: Vec<NewLink>) -> Result<Vec<Put>, StoreError> {
        let single = links.len() == 1;
        let puts = timed("put", self.inner.put_if_absent(links)).await?;
        if single && let Some(Put::Created(r) | Put::Existing(r)) = puts.first() {
            self.remember(&Arc::new(r.clone()));
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
        if self.map.remove(id).is_some() {
            self.entries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn forget_all(&self) {
        self.map.clear();
        self.entries.store(self.map.len(), Ordering::Relaxed);
    }

    /// How many links are held in memory.
    pub fn hot_len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    fn remember(&self, record: &Arc<LinkRecord>) {
        if self.entries.load(Ordering::Relaxed) >= MAX_ENTRIES {
            // Crude but bounded: drop about half. Hot ids come back on their next
            // request at the cost of one store read each.
            let mut keep = false;
            self.map.retain(|_, _| {
                keep = !keep;
                keep
            });
            // The one place the count is made exact again.
            self.entries.store(self.map.len(), Ordering::Relaxed);
        }
        if self
            .map
            .insert(record.id.clone(), Arc::clone(record))
            .is_none()
        {
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs one store call and records how long it took, whatever its result.
pub async fn timed<T>(op: &'static str, f: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = f.await;
    metrics::histogram!("medialink_store_seconds", "op" => op).record(started.elapsed());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canon::CanonicalUrl;
    use crate::policy::Kind;

    fn record(i: usize) -> Arc<LinkRecord> {
        Arc::new(LinkRecord {
            id: LinkId::parse(&format!("{i:010}")).unwrap(),
            url: CanonicalUrl::parse(&format!("http://127.0.0.1/{i}.jpg")).unwrap(),
            kind: Kind::Any,
            created_at: 0,
            expires_at: None,
            convert: None,
            media: None,
            blob: None,
        })
    }

    #[tokio::test]
    async fn the_count_follows_the_map_and_bounds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::sqlite::SqliteStore::open(&dir.path().join("s.db"), None)
            .await
            .unwrap();
        let hot = HotStore::new(Arc::new(store));
        for i in 0..10 {
            hot.remember(&record(i));
        }
        // The same id again is no new entry.
        hot.remember(&record(3));
        assert_eq!((hot.hot_len(), hot.map.len()), (10, 10));
        hot.forget(&record(3).id);
        hot.forget(&record(3).id);
        hot.forget(&record(99).id);
        assert_eq!((hot.hot_len(), hot.map.len()), (9, 9));

        for i in 100..100 + MAX_ENTRIES + 5 {
            hot.remember(&record(i));
        }
        assert!(hot.map.len() <= MAX_ENTRIES, "{} entries", hot.map.len());
        assert_eq!(hot.hot_len(), hot.map.len());
        hot.forget_all();
        assert_eq!((hot.hot_len(), hot.map.len()), (0, 0));
    }
}
