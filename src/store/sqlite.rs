//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! All writes go through one writer thread that takes every request waiting in its
//! queue and applies them in one transaction, so a `201` is sent only after the
//! commit (and its fsync) while throughput grows with concurrency: 64 waiting creates
//! cost one fsync, not 64. Reads use a small pool of read-only connections, which WAL
//! lets run beside the writer.
//!
//! New links are appended to `links`, a table in insertion order, and their ids do not
//! go into `link_ids` (the id-to-rowid table) at once: the rows past `merged_rowid`
//! (in `meta`) are the log, whose id-to-rowid map lives in memory (`LogIndex`, rebuilt
//! from the table at start). Ids are keyed hashes, so an id-keyed insert lands on a
//! random page: a commit of 4,000 new links used to dirty about 4,000 pages (16 MB of
//! WAL, written again at the checkpoint), where appending them dirties about 200. When
//! the log is full (`LogLimit`) the writer merges its ids into `link_ids` in id order,
//! which touches each of its pages at most once for the lot, in slices of neighbouring
//! ids with the writes that arrive meanwhile committed between them. The log may hold
//! a quarter as many links as are merged (from 65,536 up to 524,288), so what a merge
//! rewrites per link stays about the same as the store grows.
//! A row is written once: the merge moves ids, not rows (until migration 5 it copied
//! every row from a log table into `links`, which made a merge 2.8 times as long).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use foldhash::{HashMap, HashSet};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::known::{self, Known, KnownIds};
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
/// How many links the log holds before the writer merges their ids into `link_ids`.
///
/// Ids are keyed hashes, so a merge of many ids touches nearly every page of
/// `link_ids` whatever their number: a fixed limit makes each merged link cost more
/// as the store grows (with 65,536, a merge took 86 ms on an empty store and 456 ms
/// past 3.5 million links, and arrays of 1,000 fell from 150k to 100k links/s). A log
/// of a quarter of the merged ids keeps the pages rewritten per link level. The
/// bounds keep small stores' merges short, and the log's memory and its reading at
/// start bounded: a log of 524,288 ids took 18-25 MB more memory than one of 325,000
/// (the map's table doubles past 458,752) and 240-270 ms to read at start, against
/// 120-140 ms.
///
/// A merge moves the ids `slice` at a time, each slice a run of neighbouring ids in a
/// transaction of its own, with the writes that arrive meanwhile committed between
/// them: a slice rewrites only the pages its id range covers, so the whole merge
/// rewrites each page once, as one transaction would, without stopping every create
/// for as long (1.1 s for 524,288 ids on a 4.5-million-link store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimit {
    pub min: usize,
    pub max: usize,
    pub slice: usize,
}

impl LogLimit {
    pub const DEFAULT: LogLimit = LogLimit {
        min: 65_536,
        max: 524_288,
        slice: 65_536,
    };

    /// The same limit at every size, merged in one slice (tests cross it with a few
    /// links).
    pub fn fixed(n: usize) -> Self {
        let n = n.max(1);
        LogLimit {
            min: n,
            max: n,
            slice: usize::MAX,
        }
    }

    /// The limit once `merged` ids are in `link_ids`.
    pub fn at(&self, merged: u64) -> usize {
        usize::try_from(merged / 4)
            .unwrap_or(usize::MAX)
            .clamp(self.min, self.max.max(self.min))
    }
}
const WRITER_CACHE_KIB: i64 = 2 * 1024;

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
    // `links` becomes a table in row order with a separate index on the id, and new
    // links go to `links_log` first (see the module comment). The log has every index
    // of `links` but the id one, which the writer keeps in memory.
    "CREATE TABLE links_v4 (
         id TEXT NOT NULL,
         url TEXT NOT NULL,
         kind TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER,
         convert INTEGER,
         content_type TEXT,
         bytes INTEGER,
         converted_from TEXT,
         blob TEXT
     );
     INSERT INTO links_v4 (id, url, kind, created_at, expires_at, convert, content_type, bytes, converted_from, blob)
         SELECT id, url, kind, created_at, expires_at, convert, content_type, bytes, converted_from, blob
         FROM links ORDER BY id;
     DROP TABLE links;
     ALTER TABLE links_v4 RENAME TO links;
     CREATE UNIQUE INDEX links_id ON links (id);
     CREATE INDEX links_blob ON links (blob) WHERE blob IS NOT NULL;
     CREATE INDEX links_expires ON links (expires_at) WHERE expires_at IS NOT NULL;
     CREATE INDEX links_created ON links (created_at);
     CREATE TABLE links_log (
         id TEXT NOT NULL,
         url TEXT NOT NULL,
         kind TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER,
         convert INTEGER,
         content_type TEXT,
         bytes INTEGER,
         converted_from TEXT,
         blob TEXT
     );
     CREATE INDEX links_log_blob ON links_log (blob) WHERE blob IS NOT NULL;
     CREATE INDEX links_log_expires ON links_log (expires_at) WHERE expires_at IS NOT NULL;
     CREATE INDEX links_log_created ON links_log (created_at);",
    // Rows are written once: new links are appended to `links` itself, and a merge
    // moves only their ids into `link_ids`, the id-to-rowid table that replaces the
    // unique index on `links (id)`. Rows past `merged_rowid` (meta) are the log,
    // whose ids the writer keeps in memory. The old log's rows join `links` past it.
    "DROP INDEX links_id;
     CREATE TABLE link_ids (id TEXT PRIMARY KEY, rid INTEGER NOT NULL) WITHOUT ROWID;
     INSERT INTO link_ids (id, rid) SELECT id, rowid FROM links ORDER BY id;
     INSERT OR REPLACE INTO meta (key, value)
         VALUES ('merged_rowid', (SELECT ifnull(max(rowid), 0) FROM links));
     INSERT INTO links (id, url, kind, created_at, expires_at, convert, content_type, bytes, converted_from, blob)
         SELECT id, url, kind, created_at, expires_at, convert, content_type, bytes, converted_from, blob
         FROM links_log ORDER BY rowid;
     DROP TABLE links_log;",
];

/// The ids of the links in the log (the rows of `links` past `merged_rowid`) and their
/// rowids. Only the writer changes it, and only after a commit, so an id found here
/// names a durable row. Every read by rowid checks the id too, so a stale entry (a
/// store opened for reading keeps the map it loaded) finds nothing rather than another
/// link.
type LogIndex = Arc<RwLock<LogMap>>;

/// The log's map and its generation, which every change moves on: a reader that saw
/// one generation knows the map has not changed while it still reads the same.
#[derive(Default)]
struct LogMap {
    ids: HashMap<Box<str>, i64>,
    generation: u64,
}

impl From<HashMap<Box<str>, i64>> for LogMap {
    fn from(ids: HashMap<Box<str>, i64>) -> Self {
        LogMap { ids, generation: 0 }
    }
}

impl std::ops::Deref for LogMap {
    type Target = HashMap<Box<str>, i64>;
    fn deref(&self) -> &Self::Target {
        &self.ids
    }
}

/// Any mutable access counts as a change, so none can leave the generation behind.
impl std::ops::DerefMut for LogMap {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.generation += 1;
        &mut self.ids
    }
}

/// The log's ids in id order, as of one generation of the map: `list` pages through
/// it with a binary search instead of scanning the whole map per page (with 121,000
/// logged links, an export of 1.4 million took 15 s against 5 s with none). It is
/// sorted only once a page finds the map as the previous page left it, so pages
/// between writes (an export from a quiet store, or from `open_for_reading`) share one
/// sort, and pages among writes scan as before.
#[derive(Default)]
struct SortedLog {
    /// The generation the previous page saw.
    seen: Option<u64>,
    sorted: Option<(u64, Arc<IdRowids>)>,
}

/// (id, rowid) pairs of logged links.
type IdRowids = Vec<(Box<str>, i64)>;

/// The last rowid whose id is in `link_ids`: the log is every row past it.
fn merged_rowid(conn: &Connection) -> Result<i64, StoreError> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'merged_rowid'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(unavailable)?;
    match v {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("merged_rowid is not a number: {v:?}"))),
    }
}

fn load_log(conn: &Connection, merged: i64) -> Result<HashMap<Box<str>, i64>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT id, rowid FROM links WHERE rowid > ?1")
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([merged], |r| {
            Ok((r.get::<_, String>(0)?.into_boxed_str(), r.get(1)?))
        })
        .map_err(unavailable)?;
    rows.collect::<Result<_, _>>().map_err(unavailable)
}

fn log_rowid(log: &LogIndex, id: &str) -> Option<i64> {
    // A poisoned lock still holds a consistent map: the writer only changes it
    // after a commit, with plain inserts and removes.
    log.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(id)
        .copied()
}

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
    // Migration 4 copies every link into a new table and drops the old one, whose
    // pages then sit free in the file: a million-link store went from 165 MB to 293 MB.
    // Give them back once, on the start that upgraded an existing store.
    if (1..4).contains(&applied) {
        conn.execute_batch("VACUUM").map_err(unavailable)?;
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
    log: LogIndex,
    sorted_log: Arc<Mutex<SortedLog>>,
    known_ready: Arc<AtomicBool>,
    /// Held from open to close: see `lock_store`.
    lock: Mutex<Option<std::fs::File>>,
    /// False when opened for reading only.
    writes: bool,
}

/// One process at a time writes a SQLite store: the log's id index and the merged
/// ids' fingerprints live in the writing process's memory, so a second writer (say,
/// `medialink import` beside a running server) would miss the first one's new links
/// and could store a second row under one id. An exclusive advisory lock on
/// `PATH.lock`, released at close or when the process ends, however it ends.
fn lock_store(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Config(format!("cannot open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "{} is in use by another medialink process: stop it first, or go through its API",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Config(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    pub async fn open(path: &Path, id_key: Option<IdKey>) -> Result<Self, StoreError> {
        Self::open_with_log_limit(path, id_key, LogLimit::DEFAULT).await
    }

    /// `open` with other merge thresholds, so tests can cross them with a few links.
    pub async fn open_with_log_limit(
        path: &Path,
        id_key: Option<IdKey>,
        log_limit: LogLimit,
    ) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, id_key, log_limit, true))
            .await
            .map_err(unavailable)?
    }

    /// For reading beside the process that writes the store (`medialink inspect` and
    /// `export` next to a running server): takes no lock, and refuses every write.
    pub async fn open_for_reading(path: &Path, id_key: Option<IdKey>) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            Self::open_blocking(path, id_key, LogLimit::DEFAULT, false)
        })
        .await
        .map_err(unavailable)?
    }

    fn open_blocking(
        path: PathBuf,
        id_key: Option<IdKey>,
        log_limit: LogLimit,
        writes: bool,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock = if writes {
            Some(lock_store(&path)?)
        } else {
            None
        };
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
        // Ids are keyed hashes, so lookups land on random pages: with a million links
        // most of them are not in a page cache. Read the database file through a
        // memory map instead of a pread each (a 64 MiB page cache instead of the map
        // was worse: 10.1k against 12.4k creates/s at 64 clients, before the log).
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
        // The writer's page cache stays small. SQLite walks every cached page at a
        // commit whenever a B-tree balance parked a page under its temporary number
        // (the page past 1 GiB), which inserts into the log do every few commits;
        // with 64 MiB cached that walk was 3% of the server's CPU creating links on a
        // million-link store, against 0.1% at 2 MiB, and arrays of 1,000 ran as fast
        // at 2 MiB (two runs of three rounds each).
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(unavailable)?;
        // A merge sorts the log, and a statement that may need undoing keeps a
        // journal of the pages it changes: both in temporary files by default, a
        // pwrite per page. Both are bounded by one transaction.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(unavailable)?;
        migrate(&mut conn)?;
        let key = load_or_create_key(&mut conn, id_key)?;
        let merged = merged_rowid(&conn)?;
        let log: LogIndex = Arc::new(RwLock::new(load_log(&conn, merged)?.into()));
        // Rowids are given, not left to SQLite, which reuses the largest one once its
        // row is deleted: a new row must never land at or below `merged_rowid`, where
        // it would be neither in the log nor in `link_ids`.
        let last: i64 = conn
            .query_row("SELECT ifnull(max(rowid), 0) FROM links", [], |r| r.get(0))
            .map_err(unavailable)?;

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

        // A store opened for reading commits nothing, so it has nothing to checkpoint.
        let checkpointer = if writes {
            Some(Checkpointer::start(&path)?)
        } else {
            None
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let known_ready = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            log: Arc::clone(&log),
            log_limit,
            merged,
            next_rowid: std::cell::Cell::new(last.max(merged) + 1),
            merging: None,
            merge_stalled: false,
            // A store opened for reading never inserts: no need to read every id.
            known: if writes {
                Known::load(&path)
            } else {
                Known::Unavailable
            },
            known_ready: Arc::clone(&known_ready),
        };
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(conn, rx, checkpointer))
            .map_err(unavailable)?;
        Ok(Self {
            path,
            key,
            writer: tx,
            writer_thread: Mutex::new(Some(thread)),
            lock: Mutex::new(lock),
            writes,
            readers,
            next_reader: AtomicUsize::new(0),
            log,
            sorted_log: Arc::default(),
            known_ready,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the writer has the fingerprints of the stored ids yet (`known`); until
    /// then it looks every new id up in the table.
    pub fn known_ids_ready(&self) -> bool {
        self.known_ready.load(Ordering::Relaxed)
    }

    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        if !self.writes {
            return Err(StoreError::Unavailable(
                "this store was opened for reading only".into(),
            ));
        }
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

/// The writer thread's state beside its connection.
struct Writer {
    log: LogIndex,
    log_limit: LogLimit,
    /// `merged_rowid`: the rows past it are the log.
    merged: i64,
    /// The rowid the next new link gets; only ever grows.
    next_rowid: std::cell::Cell<i64>,
    /// The merge under way, if any.
    merging: Option<Merge>,
    /// The last slice failed: wait for a write before trying again, not spin.
    merge_stalled: bool,
    /// Fingerprints of the ids in `link_ids` (see `known`).
    known: Known,
    known_ready: Arc<AtomicBool>,
}

/// A merge under way: the log's ids when it began, in id order, `done` of them
/// already in `link_ids`.
struct Merge {
    /// The last rowid the merge covers; `merged_rowid` once it ends.
    upto: i64,
    ids: IdRowids,
    done: usize,
    slices: usize,
    longest: std::time::Duration,
    started: std::time::Instant,
}

/// The rowid of a pair whose link was deleted while its merge was under way (SQLite's
/// rowids here start at 1).
const FORGOTTEN: i64 = 0;

impl Merge {
    /// A link deleted before its slice: its id must not reach `link_ids`. (One deleted
    /// after its slice leaves `link_ids` with its row.)
    fn forget(&mut self, id: &str) {
        let rest = &mut self.ids[self.done..];
        if let Ok(i) = rest.binary_search_by(|(x, _)| (**x).cmp(id)) {
            rest[i].1 = FORGOTTEN;
        }
    }
}

/// What a transaction did to the log, applied to the shared `LogIndex` only once it
/// commits.
#[derive(Default)]
struct Staged {
    added: HashMap<Box<str>, i64>,
    removed: HashSet<Box<str>>,
}

impl Staged {
    fn find(&self, log: &LogIndex, id: &str) -> Option<i64> {
        if let Some(&rowid) = self.added.get(id) {
            return Some(rowid);
        }
        if self.removed.contains(id) {
            return None;
        }
        log_rowid(log, id)
    }

    fn add(&mut self, id: &str, rowid: i64) {
        self.removed.remove(id);
        self.added.insert(id.into(), rowid);
    }

    fn remove(&mut self, id: &str) {
        self.added.remove(id);
        self.removed.insert(id.into());
    }

    fn publish(self, log: &LogIndex) {
        if self.added.is_empty() && self.removed.is_empty() {
            return;
        }
        let mut map = log.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for id in self.removed {
            map.remove(&id);
        }
        map.extend(self.added);
    }
}

impl Writer {
    fn run(
        mut self,
        mut conn: Connection,
        mut rx: mpsc::UnboundedReceiver<Op>,
        checkpointer: Option<Checkpointer>,
    ) {
        let mut batch = Vec::new();
        let mut shutdown = None;
        loop {
            // A merge under way goes on whenever no write is waiting.
            let first = if self.merging.is_some() && !self.merge_stalled {
                match rx.try_recv() {
                    Ok(op) => op,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.merge_step(&mut conn, checkpointer.as_ref());
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.blocking_recv() {
                    Some(op) => op,
                    None => break,
                }
            };
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
                if self.known.poll() {
                    self.known_ready.store(true, Ordering::Relaxed);
                }
                let removed = self.apply_batch(&mut conn, &mut batch);
                if let Some(m) = &mut self.merging {
                    removed.iter().for_each(|id| m.forget(id));
                }
                if let Some(c) = &checkpointer {
                    c.commits.fetch_add(1, Ordering::Relaxed);
                }
                // `merged` is a rowid: deleted links count too, which only errs
                // toward a larger log.
                if self.merging.is_none()
                    && self.log_len() >= self.log_limit.at(self.merged.max(0) as u64)
                {
                    self.start_merge();
                }
                // One slice after each batch: a merge moves on under any load.
                self.merge_stalled = false;
                self.merge_step(&mut conn, checkpointer.as_ref());
            }
            if shutdown.is_some() {
                break;
            }
        }
        // Everything queued before the shutdown has been applied; fold the WAL back so
        // the data dir is one self-contained file when we stop.
        // A store opened for reading has no checkpointer: it leaves the WAL to the
        // writing process.
        self.known.cancel();
        if let Some(c) = checkpointer {
            c.stop();
            let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
        }
        drop(conn);
        if let Some(done) = shutdown {
            let _ = done.send(());
        }
    }

    fn log_len(&self) -> usize {
        self.log
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// Takes the log's ids as they are now, in id order, for `merge_step` to move.
    fn start_merge(&mut self) {
        let upto = self.next_rowid.get() - 1;
        let mut ids: IdRowids = self
            .log
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(id, rowid)| (id.clone(), *rowid))
            .collect();
        ids.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.merging = Some(Merge {
            upto,
            ids,
            done: 0,
            slices: 0,
            longest: std::time::Duration::ZERO,
            started: std::time::Instant::now(),
        });
    }

    /// Moves the next slice of the merge under way into `link_ids`; the last slice
    /// also moves `merged_rowid` to the merge's end, in the same transaction. The rows
    /// stay where they are, so a reader that found an id in the log before the map
    /// drops it still finds its row by rowid, and an id in both the log and
    /// `link_ids` (until the merge ends, or after a restart cut one short) is found
    /// either way.
    fn merge_step(&mut self, conn: &mut Connection, checkpointer: Option<&Checkpointer>) {
        let Some(m) = self.merging.as_mut() else {
            return;
        };
        let began = std::time::Instant::now();
        let end = m
            .ids
            .len()
            .min(m.done.saturating_add(self.log_limit.slice.max(1)));
        let last = end == m.ids.len();
        if let Err(e) = move_slice(conn, &m.ids[m.done..end], last.then_some(m.upto)) {
            self.merge_stalled = true;
            tracing::warn!(error = %e, "merging the link log's ids into link_ids failed; they stay in the log and the merge is retried after the next write");
            return;
        }
        if let Some(c) = checkpointer {
            c.commits.fetch_add(1, Ordering::Relaxed);
        }
        self.known.add(
            m.ids[m.done..end]
                .iter()
                .map(|(id, _)| known::fingerprint(id))
                .collect(),
        );
        m.done = end;
        m.slices += 1;
        m.longest = m.longest.max(began.elapsed());
        if !last {
            return;
        }
        let Some(m) = self.merging.take() else {
            return;
        };
        self.merged = m.upto;
        // Only this thread changes the map: copy what stays under the shared lock,
        // hold the exclusive one (which stops every reader of the log) only to swap,
        // and free the old map after.
        let rest: HashMap<Box<str>, i64> = self
            .log
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|(_, rowid)| **rowid > m.upto)
            .map(|(id, rowid)| (id.clone(), *rowid))
            .collect();
        let old = std::mem::replace(
            &mut **self
                .log
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            rest,
        );
        drop(old);
        tracing::debug!(
            moved = m.ids.len(),
            slices = m.slices,
            longest_ms = m.longest.as_millis() as u64,
            ms = m.started.elapsed().as_millis() as u64,
            "link log merged"
        );
    }

    /// Applies every op in one transaction, then answers them all. On a failed commit
    /// every op of the batch gets the error: none was acknowledged, none is durable.
    /// Returns the ids the committed deletes removed.
    fn apply_batch(&self, conn: &mut Connection, batch: &mut Vec<Op>) -> Vec<Box<str>> {
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
                return Vec::new();
            }
        };
        let log = &self.log;
        let known = self.known.ready();
        let mut staged = Staged::default();
        let mut done = Vec::with_capacity(batch.len());
        let mut broken: Option<StoreError> = None;
        for op in batch.drain(..) {
            let d = match op {
                Op::Put(links, reply) => {
                    // An array is all or nothing. Its only writes are rows appended to
                    // `links`, whose rowids `mine` holds, so a failed array deletes them
                    // again; a savepoint per array did the same by copying every page
                    // it touched into a sub-journal first (3-5% of the CPU on arrays).
                    let mut mine = Appends {
                        rows: HashMap::default(),
                        next_rowid: &self.next_rowid,
                    };
                    let puts: Result<Vec<Put>, _> =
                        tx.prepare_cached(INSERT_LOG).and_then(|mut insert| {
                            // Prepared once per array: a cached statement is found by
                            // hashing its SQL text, a few hundred bytes, per link.
                            links
                                .into_iter()
                                .map(|l| {
                                    put_one(&tx, &mut insert, log, known, &staged, &mut mine, l)
                                })
                                .collect()
                        });
                    match puts {
                        Ok(puts) => {
                            for (id, rowid) in mine.rows {
                                staged.add(&id, rowid);
                            }
                            Done::Put(reply, puts)
                        }
                        Err(e) => {
                            if let Err(undo) = mine.rows.values().try_for_each(|rowid| {
                                tx.execute("DELETE FROM links WHERE rowid = ?1", [rowid])
                                    .map(drop)
                            }) {
                                // Cannot take the array back out: commit nothing.
                                broken.get_or_insert(unavailable(undo));
                            }
                            let _ = reply.send(Err(unavailable(e)));
                            continue;
                        }
                    }
                }
                Op::Delete(id, reply) => {
                    let deleted = tx
                        .execute("DELETE FROM link_events WHERE id = ?1", [id.as_str()])
                        .and_then(|_| match staged.find(log, id.as_str()) {
                            // A merge under way may have moved its id already.
                            Some(rowid) => tx
                                .execute(
                                    "DELETE FROM links WHERE rowid = ?1 AND id = ?2",
                                    params![rowid, id.as_str()],
                                )
                                .and_then(|n| {
                                    tx.execute("DELETE FROM link_ids WHERE id = ?1", [id.as_str()])
                                        .map(|_| n)
                                }),
                            None => tx
                                .execute(
                                    "DELETE FROM links WHERE rowid =
                                         (SELECT rid FROM link_ids WHERE id = ?1)",
                                    [id.as_str()],
                                )
                                .and_then(|n| {
                                    tx.execute("DELETE FROM link_ids WHERE id = ?1", [id.as_str()])
                                        .map(|_| n)
                                }),
                        });
                    match deleted {
                        Ok(n) => {
                            staged.remove(id.as_str());
                            Done::Delete(reply, n > 0)
                        }
                        Err(e) => Done::Failed(Box::new(move || {
                            let _ = reply.send(Err(unavailable(e)));
                        })),
                    }
                }
                Op::SetMedia(id, m, reply) => {
                    let (ct, bytes, from) = (&m.content_type, m.bytes as i64, &m.converted_from);
                    let updated = match staged.find(log, id.as_str()) {
                        Some(rowid) => tx.execute(
                            "UPDATE links SET content_type = ?2, bytes = ?3, converted_from = ?4
                             WHERE id = ?1 AND rowid = ?5",
                            params![id.as_str(), ct, bytes, from, rowid],
                        ),
                        None => tx.execute(
                            "UPDATE links SET content_type = ?2, bytes = ?3, converted_from = ?4
                             WHERE rowid = (SELECT rid FROM link_ids WHERE id = ?1)",
                            params![id.as_str(), ct, bytes, from],
                        ),
                    };
                    match updated {
                        Ok(_) => Done::SetMedia(reply),
                        Err(e) => Done::Failed(Box::new(move || {
                            let _ = reply.send(Err(unavailable(e)));
                        })),
                    }
                }
                Op::AppendEvents(traces, reply) => {
                    match traces
                        .into_iter()
                        .try_for_each(|(id, t)| append_trace(&tx, log, &staged, &id, t))
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
        let committed = match broken {
            None => tx.commit().map_err(unavailable),
            Some(e) => {
                let _ = tx.rollback();
                Err(e)
            }
        };
        let mut removed = Vec::new();
        if committed.is_ok() {
            removed.extend(staged.removed.iter().cloned());
            // Before any answer goes out: a link acknowledged is a link readers find.
            staged.publish(log);
        }
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
        removed
    }
}

/// One slice of a merge in one transaction: its pairs into `link_ids` and, for the last
/// slice, `merged_rowid` moved to `end`.
fn move_slice(
    conn: &mut Connection,
    pairs: &[(Box<str>, i64)],
    end: Option<i64>,
) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        // The pairs come from memory: looking each row up in `links` to see that it is
        // still there read the log's pages in id order, from the WAL, and made a slice
        // of 65,536 take 3-4 times as long as the merge in one statement. Deletes mark
        // their pairs instead (`Merge::forget`). REPLACE: a restart during a merge
        // leaves some of the log's ids in `link_ids`, and the next merge moves them
        // again.
        let mut insert =
            tx.prepare_cached("INSERT OR REPLACE INTO link_ids (id, rid) VALUES (?1, ?2)")?;
        for (id, rowid) in pairs {
            if *rowid != FORGOTTEN {
                insert.execute(params![&**id, rowid])?;
            }
        }
    }
    if let Some(end) = end {
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('merged_rowid', ?1)",
            [end.to_string()],
        )?;
    }
    tx.commit()
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
    log: &LogIndex,
    staged: &Staged,
    id: &LinkId,
    newer: Trace,
) -> Result<(), rusqlite::Error> {
    let exists = staged.find(log, id.as_str()).is_some()
        || tx
            .prepare_cached("SELECT 1 FROM link_ids WHERE id = ?1")?
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

/// The columns of `links`, in the order `row_to_record` reads them.
macro_rules! columns {
    () => {
        "id, url, kind, created_at, expires_at, convert, content_type, bytes, converted_from, blob"
    };
}
const SELECT: &str = concat!("SELECT ", columns!(), " FROM links");

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

/// A merged link, found through `link_ids`.
fn get_main(conn: &Connection, id: &str) -> Result<Option<LinkRecord>, rusqlite::Error> {
    static BY_ID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("{SELECT} WHERE rowid = (SELECT rid FROM link_ids WHERE id = ?1)")
    });
    conn.prepare_cached(&BY_ID)?
        .query_row([id], row_to_record)
        .optional()
}

fn get_logged(
    conn: &Connection,
    rowid: i64,
    id: &str,
) -> Result<Option<LinkRecord>, rusqlite::Error> {
    static BY_ROWID: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{SELECT} WHERE rowid = ?1 AND id = ?2"));
    conn.prepare_cached(&BY_ROWID)?
        .query_row(params![rowid, id], row_to_record)
        .optional()
}

/// The first `limit` logged ids past `after`, in id order: from the sorted copy of
/// the map when it is of the map's generation (see `SortedLog`), else by a scan that
/// copies out only those `limit`.
fn logged_page(
    log: &LogIndex,
    sorted_log: &Mutex<SortedLog>,
    after: &str,
    limit: usize,
) -> IdRowids {
    let page = |all: &[(Box<str>, i64)]| {
        let start = all.partition_point(|(id, _)| &**id <= after);
        all[start..].iter().take(limit).cloned().collect()
    };
    let map = log.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    let generation = map.generation;
    let mut cache = sorted_log
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let again = cache.seen.replace(generation) == Some(generation);
    match &cache.sorted {
        Some((g, all)) if *g == generation => return page(all),
        _ => cache.sorted = None,
    }
    if again {
        let mut all: IdRowids = map.iter().map(|(id, rowid)| (id.clone(), *rowid)).collect();
        // Sorted without holding up the writer, whose next commit waits for the map.
        drop(map);
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let out = page(&all);
        cache.sorted = Some((generation, Arc::new(all)));
        return out;
    }
    drop(cache);
    let mut past: Vec<(&str, i64)> = map
        .iter()
        .filter(|(id, _)| &***id > after)
        .map(|(id, rowid)| (&**id, *rowid))
        .collect();
    if past.len() > limit {
        past.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
        past.truncate(limit);
    }
    past.into_iter()
        .map(|(id, rowid)| (id.into(), rowid))
        .collect()
}

/// A reader's lookup: the log first (a logged row stays where it is when its id is
/// merged), then `link_ids`.
fn get_any(
    conn: &Connection,
    log: &LogIndex,
    id: &str,
) -> Result<Option<LinkRecord>, rusqlite::Error> {
    if let Some(rowid) = log_rowid(log, id)
        && let Some(found) = get_logged(conn, rowid, id)?
    {
        return Ok(Some(found));
    }
    get_main(conn, id)
}

const INSERT_LOG: &str = concat!(
    "INSERT INTO links (rowid, ",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
);

/// The rows one array has appended so far, and the rowid the next one gets.
struct Appends<'a> {
    rows: HashMap<Box<str>, i64>,
    next_rowid: &'a std::cell::Cell<i64>,
}

fn put_one(
    conn: &Connection,
    insert: &mut rusqlite::CachedStatement<'_>,
    log: &LogIndex,
    known: Option<&KnownIds>,
    staged: &Staged,
    mine: &mut Appends<'_>,
    link: NewLink,
) -> Result<Put, rusqlite::Error> {
    let mut free = None;
    for id in link.plan.candidates() {
        let logged = match mine.rows.get(id.as_str()) {
            Some(&rowid) => Some(rowid),
            None => staged.find(log, id.as_str()),
        };
        let existing = match logged {
            Some(rowid) => get_logged(conn, rowid, id.as_str())?,
            // Not in the log, and no id of `links` has its fingerprint: free.
            None if known.is_some_and(|k| !k.may_contain(id.as_str())) => None,
            None => get_main(conn, id.as_str())?,
        };
        let Some(existing) = existing else {
            free = Some(id);
            break;
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
    let Some(id) = free else {
        return Err(rusqlite::Error::ToSqlConversionFailure(
            "every id prefix is taken".into(),
        ));
    };
    // Free: a new link (the common case) is appended to the log.
    let m = link.media.as_ref();
    let rowid = mine.next_rowid.get();
    insert.execute(params![
        rowid,
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
    mine.next_rowid.set(rowid + 1);
    mine.rows.insert(id.as_str().into(), rowid);
    Ok(Put::Created(link.into_record(id)))
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
        let log = Arc::clone(&self.log);
        self.read(move |c| get_any(c, &log, &id)).await
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
        let log = Arc::clone(&self.log);
        let sorted_log = Arc::clone(&self.sorted_log);
        self.read(move |c| {
            // The log's ids come from the map, taken before the read transaction
            // starts: an id merged since is then in `link_ids` for that transaction,
            // and its row is where the map says.
            let logged = logged_page(&log, &sorted_log, &after, limit);
            let tx = c.unchecked_transaction()?;
            let mut out: Vec<LinkRecord> = tx
                .prepare_cached(&format!(
                    "{SELECT} WHERE rowid IN
                         (SELECT rid FROM link_ids WHERE id > ?1 ORDER BY id LIMIT ?2)"
                ))?
                .query_map(params![after, limit as i64], row_to_record)?
                .collect::<Result<_, _>>()?;
            // With a full page of merged links, a logged id past the last of them
            // cannot make the page: its row is not read (reading all `limit` logged
            // candidates' rows, most of them thrown away, made an export of 1.4
            // million links with 82,000 logged take twice as long).
            let cutoff = (out.len() >= limit)
                .then(|| out.iter().map(|r| r.id.as_str()).max().map(str::to_owned))
                .flatten();
            for (id, rowid) in logged {
                if cutoff.as_deref().is_none_or(|c| &*id < c) {
                    out.extend(get_logged(&tx, rowid, &id)?);
                }
            }
            out.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
            // An id merged between the map's copy and the read is found both ways.
            out.dedup_by(|a, b| a.id == b.id);
            out.truncate(limit);
            Ok(out)
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
        // The writer has stopped: another process may write the store now.
        drop(self.lock.lock().ok().and_then(|mut l| l.take()));
    }
}

#[cfg(test)]
mod tests {
    use super::LogLimit;

    #[test]
    fn the_log_limit_is_a_quarter_of_the_merged_ids_within_its_bounds() {
        let d = LogLimit::DEFAULT;
        assert_eq!(d.at(0), 65_536);
        assert_eq!(d.at(262_147), 65_536);
        assert_eq!(d.at(1_000_000), 250_000);
        assert_eq!(d.at(2_097_152), 524_288);
        assert_eq!(d.at(u64::MAX), 524_288);
        assert_eq!(LogLimit::fixed(5).at(1_000), 5);
        assert_eq!(
            LogLimit::fixed(0).at(0),
            1,
            "a limit of 0 would merge an empty log"
        );
    }
}
