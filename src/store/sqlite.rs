//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! All writes go through one writer thread that takes every request waiting in its
//! queue and applies them in one transaction, so a `201` is sent only after the
//! commit (and its fsync) while throughput grows with concurrency: 64 waiting creates
//! cost one fsync, not 64. Reads use a small pool of read-only connections, which WAL
//! lets run beside the writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{IdPlan, LinkRecord, MediaInfo, NewLink, Put, Store, StoreError};
use crate::canon::CanonicalUrl;
use crate::ids::{IdKey, LinkId};
use crate::trace::Trace;

/// Most requests folded into one transaction; bounds the latency of the last one.
const MAX_BATCH: usize = 4096;
const READERS: usize = 4;
/// How much of the database file is read through a memory map (file-backed pages,
/// shared by every connection, reclaimable by the kernel).
const MMAP_BYTES: i64 = 1 << 30;

/// Versioned migrations; `PRAGMA user_version` says how many have been applied.
/// Append only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS links (
         id TEXT PRIMARY KEY,
         url TEXT NOT NULL,
         kind TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER,
         convert INTEGER,
         content_type TEXT,
         bytes INTEGER,
         converted_from TEXT
     ) WITHOUT ROWID;",
    "ALTER TABLE links ADD COLUMN blob TEXT;
     CREATE INDEX links_blob ON links (blob) WHERE blob IS NOT NULL;
     CREATE INDEX links_expires ON links (expires_at) WHERE expires_at IS NOT NULL;",
    // The delivery trace (DESIGN §6): the ring as a JSON array (oldest first), the
    // counters as columns so they can be summed in SQL, the last fetch and send as
    // JSON. `links_created` serves the web page's list of recent links.
    "CREATE TABLE link_events (
         id TEXT PRIMARY KEY,
         ring TEXT NOT NULL,
         fetches INTEGER NOT NULL DEFAULT 0,
         cache_hits INTEGER NOT NULL DEFAULT 0,
         upstream_fetches INTEGER NOT NULL DEFAULT 0,
         fetch_errors INTEGER NOT NULL DEFAULT 0,
         bytes_served INTEGER NOT NULL DEFAULT 0,
         gateway_fetches INTEGER NOT NULL DEFAULT 0,
         preview_fetches INTEGER NOT NULL DEFAULT 0,
         sends INTEGER NOT NULL DEFAULT 0,
         sends_delivered INTEGER NOT NULL DEFAULT 0,
         last_fetch TEXT,
         last_send TEXT,
         updated_at INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX links_created ON links (created_at);",
];

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(unavailable)?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Config(format!(
            "the store is at schema version {applied}, newer than this build knows ({}): upgrade medialink",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction().map_err(unavailable)?;
        tx.execute_batch(sql).map_err(unavailable)?;
        tx.pragma_update(None, "user_version", i + 1)
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
    }
    Ok(())
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Op {
    Put(Vec<NewLink>, Reply<Vec<Put>>),
    Delete(LinkId, Reply<bool>),
    SetMedia(LinkId, MediaInfo, Reply<()>),
    AppendEvents(Vec<(LinkId, Trace)>, Reply<()>),
    /// Applied after everything queued before it; the writer then checkpoints and exits.
    Shutdown(oneshot::Sender<()>),
}

pub struct SqliteStore {
    path: PathBuf,
    key: IdKey,
    writer: mpsc::UnboundedSender<Op>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<[Mutex<Connection>]>,
    next_reader: AtomicUsize,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    pub async fn open(path: &Path, id_key: Option<IdKey>) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, id_key))
            .await
            .map_err(unavailable)?
    }

    fn open_blocking(path: PathBuf, id_key: Option<IdKey>) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(&path)
            .map_err(|e| StoreError::Config(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        // WAL lets readers run beside the writer; FULL makes every commit durable
        // (an acknowledged link survives power loss, not only a killed process).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        // Ids are keyed hashes, so inserts land on random leaf pages: with a million
        // links most of them are not in SQLite's own 2 MiB page cache. Read them
        // through a memory map of the file instead of a pread each. (A 64 MiB page
        // cache instead was worse there: 10.1k against 12.4k creates/s at 64 clients.)
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)
            .map_err(unavailable)?;
        // Checkpoints are the checkpointer thread's (see `Checkpointer`); the
        // writer only steps in if the WAL grows far past what that thread keeps.
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_FRAMES)
            .map_err(unavailable)?;
        // The WAL is reset, not shrunk, below `JOURNAL_SIZE_LIMIT`, the most the
        // writer's own checkpoints let it reach: cutting it to 64 MiB after each reset
        // and growing it again held creates at 64 clients to 13.3k links/s, against
        // 15.2k without (means of two 10 s runs).
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(unavailable)?;
        migrate(&mut conn)?;
        let key = load_or_create_key(&mut conn, id_key)?;

        let readers = (0..READERS)
            .map(|_| {
                let c = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(unavailable)?;
                c.busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(unavailable)?;
                c.pragma_update(None, "mmap_size", MMAP_BYTES)
                    .map_err(unavailable)?;
                Ok(Mutex::new(c))
            })
            .collect::<Result<Vec<_>, StoreError>>()?
            .into();

        let checkpointer = Checkpointer::start(&path)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, checkpointer))
            .map_err(unavailable)?;
        Ok(Self {
            path,
            key,
            writer: tx,
            writer_thread: Mutex::new(Some(thread)),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store writer stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let conn = readers[i]
                .lock()
                .map_err(|_| StoreError::Unavailable("a reader panicked".into()))?;
            f(&conn).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }
}

fn load_or_create_key(conn: &mut Connection, given: Option<IdKey>) -> Result<IdKey, StoreError> {
    let stored: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'id_key'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(unavailable)?;
    match (stored, given) {
        (_, Some(k)) => Ok(k),
        (Some(hex), None) => IdKey::from_hex(&hex)
            .ok_or_else(|| StoreError::Corrupt("the stored id key is not 64 hex digits".into())),
        (None, None) => {
            let k = IdKey::random();
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('id_key', ?1)",
                [k.to_hex()],
            )
            .map_err(unavailable)?;
            Ok(k)
        }
    }
}

/// Checkpoints beside the writer, on a connection of their own. Inside a commit a
/// checkpoint (every page the WAL holds copied into the database, then synced)
/// stalled every create waiting on that commit; here it overlaps the writer's
/// fsyncs. A PASSIVE checkpoint never blocks the writer; when the WAL still grows
/// past `RESTART_FRAMES` (a writer that never pauses keeps a passive checkpoint from
/// ever finishing), a RESTART one waits for the commit in flight and lets the next
/// write start the WAL from its beginning again.
struct Checkpointer {
    commits: Arc<AtomicU64>,
    /// Dropped (or sent to) to stop the thread at once, not at its next tick.
    stop: std::sync::mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
const RESTART_FRAMES: i64 = 32_768;
const WRITER_CHECKPOINT_FRAMES: i64 = 65_536;
/// Bytes the WAL file is cut back to after a reset: the most the writer's own
/// checkpoints let it reach, so only a WAL past that is ever shrunk.
const JOURNAL_SIZE_LIMIT: i64 = WRITER_CHECKPOINT_FRAMES * 4096;

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        let commits = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let c = Arc::clone(&commits);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let mut seen = 0;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    let now = c.load(Ordering::Relaxed);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    let wal_frames = |mode: &str| {
                        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                            r.get::<_, i64>(1)
                        })
                    };
                    let done = match wal_frames("PASSIVE") {
                        Ok(frames) if frames > RESTART_FRAMES => wal_frames("RESTART"),
                        other => other,
                    };
                    if let Err(e) = done {
                        tracing::warn!(error = %e, "background checkpoint failed; the writer will checkpoint");
                    }
                }
            })
            .map_err(unavailable)?;
        Ok(Self {
            commits,
            stop,
            thread,
        })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Op>,
    checkpointer: Checkpointer,
) {
    let mut batch = Vec::new();
    let mut shutdown = None;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Shutdown(done) => shutdown = Some(done),
                op => batch.push(op),
            }
            if shutdown.is_some() || batch.len() >= MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            apply_batch(&mut conn, &mut batch);
            checkpointer.commits.fetch_add(1, Ordering::Relaxed);
        }
        if shutdown.is_some() {
            break;
        }
    }
    // Everything queued before the shutdown has been applied; fold the WAL back so
    // the data dir is one self-contained file when we stop.
    checkpointer.stop();
    let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
    drop(conn);
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

/// Applies every op in one transaction, then answers them all. On a failed commit
/// every op of the batch gets the error: none was acknowledged, none is durable.
fn apply_batch(conn: &mut Connection, batch: &mut Vec<Op>) {
    enum Done {
        Put(Reply<Vec<Put>>, Vec<Put>),
        Delete(Reply<bool>, bool),
        SetMedia(Reply<()>),
        Appended(Reply<()>),
        Failed(Box<dyn FnOnce() + Send>),
    }
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let err = unavailable(e);
            for op in batch.drain(..) {
                fail(op, err.clone());
            }
            return;
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    for op in batch.drain(..) {
        let d = match op {
            Op::Put(links, reply) => match links.into_iter().map(|l| put_one(&tx, l)).collect() {
                Ok(puts) => Done::Put(reply, puts),
                Err(e) => {
                    let _ = reply.send(Err(unavailable(e)));
                    continue;
                }
            },
            Op::Delete(id, reply) => {
                let deleted = tx
                    .execute("DELETE FROM link_events WHERE id = ?1", [id.as_str()])
                    .and_then(|_| tx.execute("DELETE FROM links WHERE id = ?1", [id.as_str()]));
                match deleted {
                    Ok(n) => Done::Delete(reply, n > 0),
                    Err(e) => Done::Failed(Box::new(move || {
                        let _ = reply.send(Err(unavailable(e)));
                    })),
                }
            }
            Op::SetMedia(id, m, reply) => match tx.execute(
                "UPDATE links SET content_type = ?2, bytes = ?3, converted_from = ?4 WHERE id = ?1",
                params![
                    id.as_str(),
                    m.content_type,
                    m.bytes as i64,
                    m.converted_from
                ],
            ) {
                Ok(_) => Done::SetMedia(reply),
                Err(e) => Done::Failed(Box::new(move || {
                    let _ = reply.send(Err(unavailable(e)));
                })),
            },
            Op::AppendEvents(traces, reply) => {
                match traces
                    .into_iter()
                    .try_for_each(|(id, t)| append_trace(&tx, &id, t))
                {
                    Ok(()) => Done::Appended(reply),
                    Err(e) => Done::Failed(Box::new(move || {
                        let _ = reply.send(Err(unavailable(e)));
                    })),
                }
            }
            // The writer loop takes shutdowns out before a batch is applied.
            Op::Shutdown(done) => {
                let _ = done.send(());
                continue;
            }
        };
        done.push(d);
    }
    let committed = tx.commit().map_err(unavailable);
    for d in done {
        match (d, &committed) {
            (Done::Failed(f), _) => f(),
            (Done::Put(r, puts), Ok(())) => drop(r.send(Ok(puts))),
            (Done::Delete(r, v), Ok(())) => drop(r.send(Ok(v))),
            (Done::SetMedia(r) | Done::Appended(r), Ok(())) => drop(r.send(Ok(()))),
            (Done::Put(r, _), Err(e)) => drop(r.send(Err(e.clone()))),
            (Done::Delete(r, _), Err(e)) => drop(r.send(Err(e.clone()))),
            (Done::SetMedia(r) | Done::Appended(r), Err(e)) => drop(r.send(Err(e.clone()))),
        }
    }
}

fn fail(op: Op, err: StoreError) {
    match op {
        Op::Put(_, r) => drop(r.send(Err(err))),
        Op::Delete(_, r) => drop(r.send(Err(err))),
        Op::SetMedia(_, _, r) => drop(r.send(Err(err))),
        Op::AppendEvents(_, r) => drop(r.send(Err(err))),
        Op::Shutdown(done) => drop(done.send(())),
    }
}

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn read_trace(conn: &Connection, id: &str) -> Result<Option<Trace>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT ring, fetches, cache_hits, upstream_fetches, fetch_errors, bytes_served,
                gateway_fetches, preview_fetches, sends, sends_delivered, last_fetch, last_send
         FROM link_events WHERE id = ?1",
    )?
    .query_row([id], |r| {
        let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
        let ring: String = r.get(0)?;
        let last_fetch: Option<String> = r.get(10)?;
        let last_send: Option<String> = r.get(11)?;
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
    })
    .optional()
}

/// Read, merge, write: inside the writer's transaction, so nothing interleaves.
fn append_trace(
    tx: &rusqlite::Transaction<'_>,
    id: &LinkId,
    newer: Trace,
) -> Result<(), rusqlite::Error> {
    let exists = tx
        .prepare_cached("SELECT 1 FROM links WHERE id = ?1")?
        .exists([id.as_str()])?;
    if !exists {
        return Ok(());
    }
    let mut t = read_trace(tx, id.as_str())?.unwrap_or_default();
    t.merge(newer);
    let c = t.counters;
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let last_fetch = t
        .last_fetch
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(json_err)?;
    let last_send = t
        .last_send
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(json_err)?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO link_events (id, ring, fetches, cache_hits, upstream_fetches,
             fetch_errors, bytes_served, gateway_fetches, preview_fetches, sends, sends_delivered,
             last_fetch, last_send, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        id.as_str(),
        serde_json::to_string(&t.events).map_err(json_err)?,
        i(c.fetches),
        i(c.cache_hits),
        i(c.upstream_fetches),
        i(c.fetch_errors),
        i(c.bytes_served),
        i(c.gateway_fetches),
        i(c.preview_fetches),
        i(c.sends),
        i(c.sends_delivered),
        last_fetch,
        last_send,
        super::now_unix(),
    ])?;
    Ok(())
}

const SELECT: &str = "SELECT id, url, kind, created_at, expires_at, convert, content_type, bytes, converted_from, blob FROM links";

fn row_to_record(r: &rusqlite::Row<'_>) -> Result<LinkRecord, rusqlite::Error> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            what.to_owned().into(),
        )
    };
    let id: String = r.get(0)?;
    let url: String = r.get(1)?;
    let kind: String = r.get(2)?;
    let content_type: Option<String> = r.get(6)?;
    let bytes: Option<i64> = r.get(7)?;
    Ok(LinkRecord {
        id: LinkId::parse(&id).ok_or_else(|| bad(0, "stored id is not a link id"))?,
        url: CanonicalUrl::parse(&url).map_err(|_| bad(1, "stored url does not parse"))?,
        kind: kind.parse().map_err(|_| bad(2, "stored kind is unknown"))?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
        convert: r.get(5)?,
        media: content_type.map(|content_type| MediaInfo {
            content_type,
            bytes: bytes.unwrap_or(0) as u64,
            converted_from: r.get(8).ok().flatten(),
        }),
        blob: r.get(9)?,
    })
}

fn get_one(conn: &Connection, id: &str) -> Result<Option<LinkRecord>, rusqlite::Error> {
    static BY_ID: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{SELECT} WHERE id = ?1"));
    conn.prepare_cached(&BY_ID)?
        .query_row([id], row_to_record)
        .optional()
}

fn put_one(tx: &rusqlite::Transaction<'_>, link: NewLink) -> Result<Put, rusqlite::Error> {
    let candidates: Vec<LinkId> = match &link.plan {
        IdPlan::Derived(full) => full.candidates().collect(),
        IdPlan::Exact(id) => vec![id.clone()],
    };
    for id in candidates {
        // Insert first: a new link (the common case) costs one B-tree descent, and
        // only a taken id is read back to tell "same URL" from "another URL".
        let m = link.media.as_ref();
        let inserted = tx
            .prepare_cached(
                "INSERT INTO links (id, url, kind, created_at, expires_at, convert, content_type, bytes, converted_from, blob)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                id.as_str(),
                link.url.as_str(),
                link.kind.as_str(),
                link.created_at,
                link.expires_at,
                link.convert,
                m.map(|m| &m.content_type),
                m.map(|m| m.bytes as i64),
                m.and_then(|m| m.converted_from.as_ref()),
                link.blob,
            ])?;
        if inserted == 1 {
            return Ok(Put::Created(link.into_record(id)));
        }
        let Some(existing) = get_one(tx, id.as_str())? else {
            // Not inserted and not there: cannot happen inside our transaction.
            return Err(rusqlite::Error::QueryReturnedNoRows);
        };
        if existing.url == link.url {
            return Ok(Put::Existing(existing));
        }
        // Taken by another URL: the next, longer prefix (DESIGN §2).
        if matches!(link.plan, IdPlan::Exact(_)) {
            return Ok(Put::Conflict(id));
        }
    }
    // 13 prefixes of a 128-bit keyed hash all taken by other URLs: not a collision
    // that can happen by chance; the store must have been tampered with.
    Err(rusqlite::Error::ToSqlConversionFailure(
        "every id prefix is taken".into(),
    ))
}

#[async_trait]
impl Store for SqliteStore {
    fn id_key(&self) -> &IdKey {
        &self.key
    }

    async fn put_if_absent(&self, links: Vec<NewLink>) -> Result<Vec<Put>, StoreError> {
        self.send(|r| Op::Put(links, r)).await
    }

    async fn get(&self, id: &LinkId) -> Result<Option<LinkRecord>, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |c| get_one(c, &id)).await
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
        let after = after.map(|a| a.as_str().to_owned()).unwrap_or_default();
        self.read(move |c| {
            c.prepare_cached(&format!("{SELECT} WHERE id > ?1 ORDER BY id LIMIT ?2"))?
                .query_map(params![after, limit as i64], row_to_record)?
                .collect()
        })
        .await
    }

    async fn set_media(&self, id: &LinkId, media: &MediaInfo) -> Result<(), StoreError> {
        let (id, media) = (id.clone(), media.clone());
        self.send(|r| Op::SetMedia(id, media, r)).await
    }

    async fn blob_refs(&self, blob: &str) -> Result<u64, StoreError> {
        let blob = blob.to_owned();
        self.read(move |c| {
            c.query_row("SELECT COUNT(*) FROM links WHERE blob = ?1", [blob], |r| {
                r.get::<_, i64>(0)
            })
        })
        .await
        .map(|n| n as u64)
    }

    async fn expired(&self, now: i64, limit: usize) -> Result<Vec<LinkRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "{SELECT} WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2"
            ))?
            .query_map(params![now, limit as i64], row_to_record)?
            .collect()
        })
        .await
    }

    async fn append_events(&self, traces: Vec<(LinkId, Trace)>) -> Result<(), StoreError> {
        if traces.is_empty() {
            return Ok(());
        }
        self.send(|r| Op::AppendEvents(traces, r)).await
    }

    async fn events(&self, id: &LinkId) -> Result<Option<Trace>, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |c| read_trace(c, &id)).await
    }

    async fn recent(&self, limit: usize) -> Result<Vec<LinkRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!("{SELECT} ORDER BY created_at DESC, id LIMIT ?1"))?
                .query_map([limit as i64], row_to_record)?
                .collect()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Op::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}
