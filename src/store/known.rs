//! Fingerprints of the merged ids (SQLite's `link_ids`), so the writer can tell that a
//! new link's id is free without a B-tree descent: that descent was 17% of the
//! server's CPU on arrays of 1,000 new links.
//!
//! A fingerprint is 32 bits of the id's XXH3 hash, kept in a hash set. Absent
//! means absent for sure; present may be another id with the same fingerprint (about 1
//! in 4,300 at a million links) or a deleted link, and then the writer looks in the
//! table as before. So the set must hold every id of `link_ids` and may hold more.
//!
//! The set is built from the table on a thread of its own at start, so a large store
//! starts as fast as before; until it is ready the writer does the table lookups, and
//! it keeps the ids it merges meanwhile to add them to the set when it arrives.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};

use foldhash::HashSet;
use rusqlite::{Connection, OpenFlags};

pub fn fingerprint(id: &str) -> u32 {
    // The low 32 bits of a 64-bit hash: any 32 bits of it are as good.
    twox_hash::XxHash3_64::oneshot(id.as_bytes()) as u32
}

/// A set of fingerprints.
///
/// A hash set, not a sorted `Vec`: the binary search over a million fingerprints
/// missed the CPU cache at nearly every step, and those waits were 89% of the
/// writer's own code (`apply_batch`) when creating on a million-link store, about
/// 2 µs per link (0.7 µs on a small store). A lookup here is one or two cache misses,
/// and a merge adds its ids without re-sorting the millions already in.
#[derive(Debug, Default)]
pub struct KnownIds {
    set: HashSet<u32>,
}

impl KnownIds {
    /// False only when no id with this fingerprint was ever added.
    pub fn may_contain(&self, id: &str) -> bool {
        self.set.contains(&fingerprint(id))
    }

    pub fn extend(&mut self, more: Vec<u32>) {
        self.set.extend(more);
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }
}

impl FromIterator<u32> for KnownIds {
    fn from_iter<I: IntoIterator<Item = u32>>(fps: I) -> Self {
        Self {
            set: fps.into_iter().collect(),
        }
    }
}

/// The writer's view of the set: still being read from the table, ready, or given up
/// on (a failed read leaves the writer on table lookups, which are always right).
pub enum Known {
    Loading {
        from: Receiver<Result<KnownIds, String>>,
        /// Fingerprints of ids merged into `link_ids` since the read began; the read may
        /// not see them.
        merged: Vec<u32>,
        cancel: Arc<AtomicBool>,
    },
    Ready(KnownIds),
    Unavailable,
}

impl Known {
    /// Starts reading the ids of `link_ids` at `path` on a thread of its own. `ready` is
    /// set once the writer has the set (tests wait for it).
    pub fn load(path: &Path) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&cancel);
        let path = path.to_owned();
        let spawned = std::thread::Builder::new()
            .name("sqlite-ids".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let read = read_ids(&path, &stop).map_err(|e| e.to_string());
                if let Ok(set) = &read {
                    let ms = started.elapsed().as_millis() as u64;
                    tracing::debug!(ids = set.len(), ms, "stored ids read");
                }
                let _ = tx.send(read);
            });
        match spawned {
            Ok(_) => Known::Loading {
                from: rx,
                merged: Vec::new(),
                cancel,
            },
            Err(e) => {
                tracing::warn!(error = %e, "could not start reading the stored ids; new ids are checked in the table");
                Known::Unavailable
            }
        }
    }

    /// Takes the set if the read has finished. True when it is ready.
    pub fn poll(&mut self) -> bool {
        if let Known::Loading { from, merged, .. } = self {
            match from.try_recv() {
                Ok(Ok(mut set)) => {
                    set.extend(std::mem::take(merged));
                    tracing::debug!(ids = set.len(), "stored id fingerprints loaded");
                    *self = Known::Ready(set);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not read the stored ids; new ids are checked in the table");
                    *self = Known::Unavailable;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => *self = Known::Unavailable,
            }
        }
        matches!(self, Known::Ready(_))
    }

    /// Records ids just merged into `link_ids`.
    pub fn add(&mut self, fps: Vec<u32>) {
        match self {
            Known::Loading { merged, .. } => merged.extend(fps),
            Known::Ready(set) => set.extend(fps),
            Known::Unavailable => {}
        }
    }

    /// The set, when it can answer.
    pub fn ready(&self) -> Option<&KnownIds> {
        match self {
            Known::Ready(set) => Some(set),
            _ => None,
        }
    }

    /// Stops a read still running (the store is closing).
    pub fn cancel(&self) {
        if let Known::Loading { cancel, .. } = self {
            cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// Builds the set here, on the reading thread: the writer only takes it whole.
fn read_ids(path: &Path, stop: &AtomicBool) -> Result<KnownIds, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // One statement is one read transaction: one snapshot of the table.
    let mut stmt = conn.prepare("SELECT id FROM link_ids")?;
    let mut rows = stmt.query([])?;
    let mut known = KnownIds::default();
    let mut read = 0u64;
    while let Some(row) = rows.next()? {
        read += 1;
        if read.is_multiple_of(4096) && stop.load(Ordering::Relaxed) {
            return Err(rusqlite::Error::ToSqlConversionFailure(
                "the store is closing".into(),
            ));
        }
        known.set.insert(fingerprint(row.get_ref(0)?.as_str()?));
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_low_bits_of_xxh3_64() {
        // 3107078199198696151 from the C library (Python's `xxhash.xxh3_64_intdigest`).
        assert_eq!(fingerprint("k3J9aQ2mZx"), 3107078199198696151u64 as u32);
    }

    #[test]
    fn membership_and_extend() {
        let ids: Vec<String> = (0..1000).map(|i| format!("id{i:08}")).collect();
        let mut set: KnownIds = ids[..500].iter().map(|i| fingerprint(i)).collect();
        assert!(ids[..500].iter().all(|i| set.may_contain(i)));
        let false_hits = ids[500..].iter().filter(|i| set.may_contain(i)).count();
        assert!(false_hits <= 1, "{false_hits} false hits in 500");
        // Overlapping additions: every id is in, nothing is twice.
        set.extend(ids[400..].iter().map(|i| fingerprint(i)).collect());
        assert!(ids.iter().all(|i| set.may_contain(i)));
        assert_eq!(
            set.len(),
            ids.iter()
                .map(|i| fingerprint(i))
                .collect::<KnownIds>()
                .len()
        );
    }

    /// A set still being read, fed by the test through `rx`'s sender.
    fn loading(rx: Receiver<Result<KnownIds, String>>) -> Known {
        Known::Loading {
            from: rx,
            merged: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Ids merged while the read runs may be missing from what it returns: they are
    /// added when it arrives.
    #[test]
    fn ids_merged_while_loading_are_kept() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut known = loading(rx);
        assert!(!known.poll());
        assert!(known.ready().is_none());
        known.add(vec![fingerprint("mergedWhileReading")]);
        tx.send(Ok([fingerprint("readFromTable")].into_iter().collect()))
            .unwrap();
        assert!(known.poll());
        let set = known.ready().unwrap();
        assert!(set.may_contain("mergedWhileReading"));
        assert!(set.may_contain("readFromTable"));
        known.add(vec![fingerprint("mergedAfter")]);
        assert!(known.ready().unwrap().may_contain("mergedAfter"));
    }

    #[test]
    fn a_failed_read_leaves_the_table_lookups() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut known = loading(rx);
        tx.send(Err("disk on fire".into())).unwrap();
        assert!(!known.poll());
        assert!(known.ready().is_none());
        let (_, rx) = std::sync::mpsc::channel::<Result<KnownIds, String>>();
        let mut gone = loading(rx);
        assert!(!gone.poll(), "a reader that died without an answer");
        assert!(matches!(gone, Known::Unavailable));
    }
}
