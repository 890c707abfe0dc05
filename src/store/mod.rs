//! Link storage (DESIGN §6): the `Store` trait, the records it keeps, and the hot-link
//! map that sits in front of every implementation.
//!
//! A store acknowledges a write only once it is durable. It knows nothing of HTTP or
//! of media: it keeps links, the id key and each link's delivery trace (as JSON it
//! does not interpret beyond merging rings), nothing else.

mod hot;
mod known;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

pub use hot::{HotStore, timed};

use crate::canon::CanonicalUrl;
use crate::ids::{FullId, IdKey, LinkId};
use crate::policy::Kind;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store holds data it cannot read: {0}")]
    Corrupt(String),
    #[error("bad store location: {0}")]
    Config(String),
}

/// What is known of a link's media once it has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    pub content_type: String,
    pub bytes: u64,
    pub converted_from: Option<String>,
}

/// A stored link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    pub id: LinkId,
    pub url: CanonicalUrl,
    pub kind: Kind,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// Whether conversion was asked for (None: the profile's default).
    pub convert: Option<bool>,
    pub media: Option<MediaInfo>,
    /// The pinned bytes' SHA-256 (hex), when the link is pinned.
    pub blob: Option<String>,
}

impl LinkRecord {
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// How a new link's id is chosen.
#[derive(Debug, Clone)]
pub enum IdPlan {
    /// The shortest free prefix of the keyed hash (DESIGN §2).
    Derived(FullId),
    /// Exactly this id (import keeps ids).
    Exact(LinkId),
}

impl IdPlan {
    /// The ids to try, in order: a derived id's prefixes from the shortest, or the
    /// one exact id. Lazy: nearly every link takes the first.
    pub fn candidates(&self) -> impl Iterator<Item = LinkId> + '_ {
        let (full, exact) = match self {
            IdPlan::Derived(full) => (Some(full), None),
            IdPlan::Exact(id) => (None, Some(id)),
        };
        full.into_iter()
            .flat_map(FullId::candidates)
            .chain(exact.cloned())
    }
}

/// A link to insert if its URL is not stored yet.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub plan: IdPlan,
    pub url: CanonicalUrl,
    pub kind: Kind,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub convert: Option<bool>,
    pub media: Option<MediaInfo>,
    pub blob: Option<String>,
}

impl NewLink {
    pub fn into_record(self, id: LinkId) -> LinkRecord {
        LinkRecord {
            id,
            url: self.url,
            kind: self.kind,
            created_at: self.created_at,
            expires_at: self.expires_at,
            convert: self.convert,
            media: self.media,
            blob: self.blob,
        }
    }
}

/// The outcome of one insert-if-absent.
#[derive(Debug, Clone)]
pub enum Put {
    Created(LinkRecord),
    Existing(LinkRecord),
    /// Only for `IdPlan::Exact`: the id is taken by another URL.
    Conflict(LinkId),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key ids are derived with; made at the store's first start and kept in it.
    fn id_key(&self) -> &IdKey;
    /// Inserts each link unless its URL is already stored; all links of one call are
    /// durable before this returns. Concurrent calls may share one transaction.
    async fn put_if_absent(&self, links: Vec<NewLink>) -> Result<Vec<Put>, StoreError>;
    async fn get(&self, id: &LinkId) -> Result<Option<LinkRecord>, StoreError>;
    /// True when something was deleted.
    async fn delete(&self, id: &LinkId) -> Result<bool, StoreError>;
    /// Links in id order after `after`, at most `limit`.
    async fn list(
        &self,
        after: Option<&LinkId>,
        limit: usize,
    ) -> Result<Vec<LinkRecord>, StoreError>;
    async fn set_media(&self, id: &LinkId, media: &MediaInfo) -> Result<(), StoreError>;
    /// How many links pin this blob (the blob may be deleted at zero).
    async fn blob_refs(&self, blob: &str) -> Result<u64, StoreError>;
    /// Links whose `expires_at` is at or before `now`, at most `limit`.
    async fn expired(&self, now: i64, limit: usize) -> Result<Vec<LinkRecord>, StoreError>;
    /// Appends each link's newly recorded events to its stored trace: the ring keeps
    /// the last [`crate::trace::RING`], counters add up. Links deleted meanwhile are
    /// skipped (no trace outlives its link).
    async fn append_events(
        &self,
        traces: Vec<(LinkId, crate::trace::Trace)>,
    ) -> Result<(), StoreError>;
    /// The stored trace of a link, if anything was recorded.
    async fn events(&self, id: &LinkId) -> Result<Option<crate::trace::Trace>, StoreError>;
    /// The most recently created links, newest first.
    async fn recent(&self, limit: usize) -> Result<Vec<LinkRecord>, StoreError>;
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Flushes pending writes and stops background work.
    async fn close(&self);
    /// Deletions made by other replicas sharing this store, as they happen. `None`
    /// for a store only this process uses.
    fn invalidations(&self) -> Option<tokio::sync::broadcast::Receiver<Invalidation>> {
        None
    }
    /// Where this store keeps pinned bytes, when it keeps them itself (PostgreSQL);
    /// `None` means files under the data dir.
    fn blobs(&self) -> Option<Arc<dyn crate::blobs::BlobStore>> {
        None
    }
}

/// What another replica changed, so caches in this one drop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// This id was deleted.
    Id(LinkId),
    /// Notifications may have been missed (the listener reconnected): drop everything.
    All,
}

/// Opens the store a `--store` location names: `sqlite://PATH` or `postgres://...`.
pub async fn open(location: &str, id_key: Option<IdKey>) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = location.strip_prefix("sqlite://") {
        let store = sqlite::SqliteStore::open(path.as_ref(), id_key).await?;
        return Ok(Arc::new(store));
    }
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            let store = postgres::PgStore::open(location, id_key).await?;
            return Ok(Arc::new(store));
        }
        #[cfg(not(feature = "postgres"))]
        return Err(StoreError::Config(
            "this build has no PostgreSQL support (cargo feature `postgres`)".into(),
        ));
    }
    Err(StoreError::Config(format!(
        "`{location}` is not a store location: use sqlite://PATH or postgres://..."
    )))
}

/// Opens a store only to read it, beside a process that may be writing it (`inspect`,
/// `export`). SQLite: no lock is taken and writes are refused; PostgreSQL: as `open`.
pub async fn open_for_reading(
    location: &str,
    id_key: Option<IdKey>,
) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = location.strip_prefix("sqlite://") {
        let store = sqlite::SqliteStore::open_for_reading(path.as_ref(), id_key).await?;
        return Ok(Arc::new(store));
    }
    open(location, id_key).await
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}
