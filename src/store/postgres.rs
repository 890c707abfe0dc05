//! The shared store (DESIGN §6): PostgreSQL through sqlx, so several replicas behind a
//! load balancer share one link table and one id key.
//!
//! This file owns the pool, the migrations, the shared id key and the reads. Writes go
//! through `writer`, one task per process that applies every waiting request in one
//! transaction and answers each only after COMMIT (the group commit of the SQLite
//! store); ids are claimed with `INSERT ... ON CONFLICT DO NOTHING`, so replicas racing
//! for one URL agree on one id. A delete notifies `medialink_invalidate` inside its
//! transaction; `listen` turns those notifications into [`Invalidation`]s so other
//! replicas stop serving within a second.
//!
//! Every call is bounded in time: a pool that cannot connect gives up after 2 s, a
//! statement after 2 s, so an outage answers `StoreError::Unavailable` instead of
//! hanging, and the pool reconnects on its own when the server is back.

mod blobs;
mod listen;
mod writer;

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Invalidation, LinkRecord, MediaInfo, NewLink, Put, Store, StoreError};
use crate::canon::CanonicalUrl;
use crate::ids::{IdKey, LinkId};
use crate::trace::Trace;
use writer::{Op, Reply, writer_loop};

const MAX_CONNECTIONS: u32 = 16;
/// Also bounds a (re)connect: while the server is down, a call fails after this long.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// A whole read: acquire plus one query.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Last resort for a queued write. The writer fails fast on an outage by itself; this
/// only keeps a caller from waiting forever behind a server that is alive but crawling,
/// so it is long enough not to fire on a merely busy queue.
const WRITE_DEADLINE: Duration = Duration::from_secs(15);

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub struct PgStore {
    pool: PgPool,
    key: IdKey,
    writer: mpsc::UnboundedSender<Op>,
    writer_task: Mutex<Option<JoinHandle<()>>>,
    listener: listen::Listener,
}

impl PgStore {
    /// Connects, runs the pending migrations (so `medialink migrate` is open + close),
    /// loads or makes the shared id key, and starts the writer and the listener.
    pub async fn open(location: &str, id_key: Option<IdKey>) -> Result<Self, StoreError> {
        let options: PgConnectOptions = location
            .parse()
            .map_err(|e| StoreError::Config(format!("bad PostgreSQL location: {e}")))?;
        let options = options.application_name("medialink");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection the server dropped (restart, terminated backend) is found
            // here and replaced, instead of failing the caller's statement.
            .test_before_acquire(true)
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;

        let mut migrator = sqlx::migrate!("./migrations/postgres");
        // During a rolling upgrade a newer replica may already have applied a later
        // migration; older replicas keep running against the (additive) schema.
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => unavailable(e),
            e => StoreError::Corrupt(format!("migrations: {e}")),
        })?;

        let key = load_or_create_key(&pool, id_key).await?;
        let listener = listen::Listener::start(options).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(writer_loop(pool.clone(), rx));
        Ok(Self {
            pool,
            key,
            writer: tx,
            writer_task: Mutex::new(Some(writer_task)),
            listener,
        })
    }

    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        match tokio::time::timeout(WRITE_DEADLINE, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Unavailable("the store writer stopped".into())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "PostgreSQL did not confirm the write within {} s",
                WRITE_DEADLINE.as_secs()
            ))),
        }
    }

    async fn read<T>(
        &self,
        query: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(READ_TIMEOUT, query).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {} s",
                READ_TIMEOUT.as_secs()
            ))),
        }
    }
}

async fn load_or_create_key(pool: &PgPool, given: Option<IdKey>) -> Result<IdKey, StoreError> {
    // A given key overrides the stored one and is not stored, as in the SQLite store.
    if let Some(k) = given {
        return Ok(k);
    }
    // Insert-if-absent then read: replicas starting together all end up with the key
    // of whichever insert won.
    sqlx::query("INSERT INTO meta (key, value) VALUES ('id_key', $1) ON CONFLICT (key) DO NOTHING")
        .bind(IdKey::random().to_hex())
        .execute(pool)
        .await
        .map_err(unavailable)?;
    let hex: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'id_key'")
        .fetch_one(pool)
        .await
        .map_err(unavailable)?;
    IdKey::from_hex(&hex)
        .ok_or_else(|| StoreError::Corrupt("the stored id key is not 64 hex digits".into()))
}

const COLUMNS: &str =
    "id, url, kind, created_at, expires_at, convert, content_type, bytes, converted_from, blob";

static SELECT_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {COLUMNS} FROM links WHERE id = $1"));
static SELECT_PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM links WHERE id > $1 ORDER BY id LIMIT $2")
});
static SELECT_RECENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM links ORDER BY created_at DESC, id LIMIT $1")
});

/// One link's newly recorded events, merged in one statement so that replicas
/// appending to the same link at once both land: the ring is the old one plus the new
/// events, trimmed to the last 50 by position; counters add up.
const APPEND_EVENTS: &str = "
INSERT INTO link_events AS le (id, ring, fetches, cache_hits, upstream_fetches, fetch_errors,
    bytes_served, gateway_fetches, preview_fetches, sends, sends_delivered, last_fetch, last_send)
SELECT $1, ($2::text)::jsonb, $3, $4, $5, $6, $7, $8, $9, $10, $11, ($12::text)::jsonb, ($13::text)::jsonb
WHERE EXISTS (SELECT 1 FROM links WHERE id = $1)
ON CONFLICT (id) DO UPDATE SET
    ring = (SELECT COALESCE(jsonb_agg(e ORDER BY n), '[]'::jsonb) FROM (
        SELECT e, n FROM jsonb_array_elements(le.ring || EXCLUDED.ring) WITH ORDINALITY AS t(e, n)
        ORDER BY n DESC LIMIT 50) s),
    fetches = le.fetches + EXCLUDED.fetches,
    cache_hits = le.cache_hits + EXCLUDED.cache_hits,
    upstream_fetches = le.upstream_fetches + EXCLUDED.upstream_fetches,
    fetch_errors = le.fetch_errors + EXCLUDED.fetch_errors,
    bytes_served = le.bytes_served + EXCLUDED.bytes_served,
    gateway_fetches = le.gateway_fetches + EXCLUDED.gateway_fetches,
    preview_fetches = le.preview_fetches + EXCLUDED.preview_fetches,
    sends = le.sends + EXCLUDED.sends,
    sends_delivered = le.sends_delivered + EXCLUDED.sends_delivered,
    last_fetch = COALESCE(EXCLUDED.last_fetch, le.last_fetch),
    last_send = COALESCE(EXCLUDED.last_send, le.last_send),
    updated_at = now()";

const SELECT_EVENTS: &str = "
SELECT ring::text, fetches, cache_hits, upstream_fetches, fetch_errors, bytes_served,
       gateway_fetches, preview_fetches, sends, sends_delivered, last_fetch::text, last_send::text
FROM link_events WHERE id = $1";

fn row_to_trace(r: &PgRow) -> Result<Trace, StoreError> {
    let col = |e: sqlx::Error| StoreError::Corrupt(format!("a stored trace does not decode: {e}"));
    let n = |i: usize| -> Result<u64, StoreError> {
        r.try_get::<i64, _>(i).map(|v| v.max(0) as u64).map_err(col)
    };
    let ring: String = r.try_get(0).map_err(col)?;
    let last_fetch: Option<String> = r.try_get(10).map_err(col)?;
    let last_send: Option<String> = r.try_get(11).map_err(col)?;
    let mut counters = [0u64; 9];
    for (k, c) in counters.iter_mut().enumerate() {
        *c = n(k + 1)?;
    }
    Ok(Trace::from_columns(
        &ring,
        counters,
        last_fetch.as_deref(),
        last_send.as_deref(),
    ))
}

async fn append_all(pool: &PgPool, traces: &[(LinkId, Trace)]) -> Result<(), sqlx::Error> {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut tx = pool.begin().await?;
    // Rows in id order, the same in every replica, so two flushes do not deadlock.
    let mut sorted: Vec<&(LinkId, Trace)> = traces.iter().collect();
    sorted.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    for (id, t) in sorted {
        let c = &t.counters;
        sqlx::query(APPEND_EVENTS)
            .bind(id.as_str())
            .bind(json(&t.events))
            .bind(i(c.fetches))
            .bind(i(c.cache_hits))
            .bind(i(c.upstream_fetches))
            .bind(i(c.fetch_errors))
            .bind(i(c.bytes_served))
            .bind(i(c.gateway_fetches))
            .bind(i(c.preview_fetches))
            .bind(i(c.sends))
            .bind(i(c.sends_delivered))
            .bind(t.last_fetch.as_ref().map(json))
            .bind(t.last_send.as_ref().map(json))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// The trace's types are strings and integers only: serializing them cannot fail.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

static SELECT_EXPIRED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM links WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2")
});

fn row_to_record(r: &PgRow) -> Result<LinkRecord, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("a stored link {what}"));
    let col = |e: sqlx::Error| StoreError::Corrupt(format!("a stored link does not decode: {e}"));
    let id: String = r.try_get(0).map_err(col)?;
    let url: String = r.try_get(1).map_err(col)?;
    let kind: String = r.try_get(2).map_err(col)?;
    let content_type: Option<String> = r.try_get(6).map_err(col)?;
    let bytes: Option<i64> = r.try_get(7).map_err(col)?;
    let converted_from: Option<String> = r.try_get(8).map_err(col)?;
    let blob: Option<String> = r.try_get(9).map_err(col)?;
    Ok(LinkRecord {
        id: LinkId::parse(&id).ok_or_else(|| bad("has an id that is not a link id"))?,
        url: CanonicalUrl::parse(&url).map_err(|_| bad("has a url that does not parse"))?,
        kind: kind.parse().map_err(|_| bad("has an unknown kind"))?,
        created_at: r.try_get(3).map_err(col)?,
        expires_at: r.try_get(4).map_err(col)?,
        convert: r.try_get(5).map_err(col)?,
        media: content_type.map(|content_type| MediaInfo {
            content_type,
            bytes: bytes.and_then(|b| u64::try_from(b).ok()).unwrap_or(0),
            converted_from,
        }),
        blob,
    })
}

#[async_trait]
impl Store for PgStore {
    fn id_key(&self) -> &IdKey {
        &self.key
    }

    async fn put_if_absent(&self, links: Vec<NewLink>) -> Result<Vec<Put>, StoreError> {
        self.send(|r| Op::Put(links, r)).await
    }

    async fn get(&self, id: &LinkId) -> Result<Option<LinkRecord>, StoreError> {
        let q = sqlx::query(&SELECT_BY_ID).bind(id.as_str());
        let row = self.read(q.fetch_optional(&self.pool)).await?;
        row.as_ref().map(row_to_record).transpose()
    }

    async fn delete(&self, id: &LinkId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.send(|r| Op::Delete(id, r)).await
    }

    async fn list(
        &self,
        after: Option<&LinkId>,
        limit: usize,
    ) -> Result<Vec<LinkRecord>, StoreError> {
        // "" sorts before every id under the column's "C" collation.
        let q = sqlx::query(&SELECT_PAGE)
            .bind(after.map_or("", |a| a.as_str()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.read(q.fetch_all(&self.pool)).await?;
        rows.iter().map(row_to_record).collect()
    }

    async fn set_media(&self, id: &LinkId, media: &MediaInfo) -> Result<(), StoreError> {
        let (id, media) = (id.clone(), media.clone());
        self.send(|r| Op::SetMedia(id, media, r)).await
    }

    async fn blob_refs(&self, blob: &str) -> Result<u64, StoreError> {
        let q =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM links WHERE blob = $1").bind(blob);
        let n = self.read(q.fetch_one(&self.pool)).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn expired(&self, now: i64, limit: usize) -> Result<Vec<LinkRecord>, StoreError> {
        let q = sqlx::query(&SELECT_EXPIRED)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.read(q.fetch_all(&self.pool)).await?;
        rows.iter().map(row_to_record).collect()
    }

    async fn append_events(&self, traces: Vec<(LinkId, Trace)>) -> Result<(), StoreError> {
        if traces.is_empty() {
            return Ok(());
        }
        // Straight through the pool, not the writer: nobody waits on this write, and
        // the statement merges atomically, so it needs no group commit.
        match tokio::time::timeout(WRITE_DEADLINE, append_all(&self.pool, &traces)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable(
                "PostgreSQL did not take the trace in time".into(),
            )),
        }
    }

    async fn events(&self, id: &LinkId) -> Result<Option<Trace>, StoreError> {
        let q = sqlx::query(SELECT_EVENTS).bind(id.as_str());
        let row = self.read(q.fetch_optional(&self.pool)).await?;
        row.as_ref().map(row_to_trace).transpose()
    }

    async fn recent(&self, limit: usize) -> Result<Vec<LinkRecord>, StoreError> {
        let q = sqlx::query(&SELECT_RECENT).bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.read(q.fetch_all(&self.pool)).await?;
        rows.iter().map(row_to_record).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let q = sqlx::query("SELECT 1");
        self.read(q.execute(&self.pool)).await.map(drop)
    }

    async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Op::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer_task.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        self.listener.stop().await;
        // Bounded: a server that vanished without closing its sockets must not hold
        // up a shutdown.
        let _ = tokio::time::timeout(READ_TIMEOUT, self.pool.close()).await;
    }

    fn invalidations(&self) -> Option<broadcast::Receiver<Invalidation>> {
        Some(self.listener.subscribe())
    }

    fn blobs(&self) -> Option<std::sync::Arc<dyn crate::blobs::BlobStore>> {
        Some(std::sync::Arc::new(blobs::PgBlobs::new(self.pool.clone())))
    }
}
