//! The SQLite store's link log: logged links (rows of `links` whose ids are not yet in
//! `link_ids`) and merged ones read, list, change and delete alike, across merges (in
//! slices, with writes between them, or cut short by a restart), restarts and the
//! migrations from the schemas that had no log and a log table; the log's limit
//! grows with the store; and an export reads on past a short page.

use std::path::{Path, PathBuf};

use medialink::canon::CanonicalUrl;
use medialink::ids::{IdKey, LinkId};
use medialink::policy::Kind;
use medialink::store::sqlite::{LogLimit, SqliteStore};
use medialink::store::{IdPlan, LinkRecord, MediaInfo, NewLink, Put, Store};

fn link(key: &IdKey, i: usize) -> NewLink {
    let url = CanonicalUrl::parse(&format!("https://127.0.0.1/media/{i}.jpg?sig={i}")).unwrap();
    NewLink {
        plan: IdPlan::Derived(key.derive(&url)),
        url,
        kind: Kind::Image,
        created_at: 1_700_000_000 + i as i64,
        expires_at: i.is_multiple_of(4).then_some(1_700_000_100 + i as i64),
        convert: None,
        media: None,
        blob: i.is_multiple_of(5).then(|| "ab".repeat(32)),
    }
}

fn created(puts: Vec<Put>) -> Vec<LinkRecord> {
    puts.into_iter()
        .map(|p| match p {
            Put::Created(r) => r,
            other => panic!("expected a new link, got {other:?}"),
        })
        .collect()
}

async fn all(store: &dyn Store, page: usize) -> Vec<LinkRecord> {
    all_after(store, None, page).await
}

/// Every link past `after`, read `page` at a time.
async fn all_after(store: &dyn Store, after: Option<&LinkId>, page: usize) -> Vec<LinkRecord> {
    let mut out: Vec<LinkRecord> = Vec::new();
    loop {
        let cursor = out.last().map(|r| &r.id).or(after);
        let next = store.list(cursor, page).await.unwrap();
        if next.is_empty() {
            return out;
        }
        out.extend(next);
    }
}

/// A new store in a folder of its own (removed when the returned guard drops), its
/// file and its key.
async fn fresh(limit: LogLimit) -> (tempfile::TempDir, PathBuf, SqliteStore, IdKey) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let store = SqliteStore::open_with_log_limit(&db, None, limit)
        .await
        .unwrap();
    let key = store.id_key().clone();
    (dir, db, store, key)
}

/// Waits until the writer is idle: a merge runs after the answers of the commit that
/// filled the log, so one more write (of a stored link: it changes nothing) queues
/// behind it.
async fn settle(store: &SqliteStore, key: &IdKey) {
    settle_on(store, key, 0).await
}

/// (links in the log, merged links), read beside the store.
fn rows(db: &Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    let n = |t: &str| -> i64 {
        c.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    };
    let merged = n("link_ids");
    (n("links") - merged, merged)
}

/// A store file as an older schema left it: `meta` with the id key and `link_events`
/// (the same in every version so far), then that version's link tables from `schema`.
fn old_store(db: &Path, key: &IdKey, schema: &str) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE link_events (
                 id TEXT PRIMARY KEY, ring TEXT NOT NULL,
                 fetches INTEGER NOT NULL DEFAULT 0, cache_hits INTEGER NOT NULL DEFAULT 0,
                 upstream_fetches INTEGER NOT NULL DEFAULT 0, fetch_errors INTEGER NOT NULL DEFAULT 0,
                 bytes_served INTEGER NOT NULL DEFAULT 0, gateway_fetches INTEGER NOT NULL DEFAULT 0,
                 preview_fetches INTEGER NOT NULL DEFAULT 0, sends INTEGER NOT NULL DEFAULT 0,
                 sends_delivered INTEGER NOT NULL DEFAULT 0, last_fetch TEXT, last_send TEXT,
                 updated_at INTEGER NOT NULL
             ) WITHOUT ROWID;",
    )
    .unwrap();
    c.execute_batch(schema).unwrap();
    c.execute(
        "INSERT INTO meta (key, value) VALUES ('id_key', ?1)",
        [key.to_hex()],
    )
    .unwrap();
    c
}

fn sorted(mut v: Vec<LinkRecord>) -> Vec<LinkRecord> {
    v.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    v
}

#[tokio::test]
async fn logged_and_merged_links_behave_alike() {
    let (_dir, db, store, key) = fresh(LogLimit::fixed(5)).await;

    // Seven single creates (the fifth write merges five links), then an array of four.
    let mut made = Vec::new();
    for i in 0..7 {
        made.extend(created(
            store.put_if_absent(vec![link(&key, i)]).await.unwrap(),
        ));
    }
    settle(&store, &key).await;
    assert_eq!(
        rows(&db),
        (2, 5),
        "the fifth create moved the log into links"
    );
    made.extend(created(
        store
            .put_if_absent((7..11).map(|i| link(&key, i)).collect())
            .await
            .unwrap(),
    ));
    settle(&store, &key).await;
    assert_eq!(
        rows(&db),
        (0, 11),
        "the array filled the log past its limit"
    );
    made.extend(created(
        store
            .put_if_absent((11..13).map(|i| link(&key, i)).collect())
            .await
            .unwrap(),
    ));
    assert_eq!(rows(&db), (2, 11));

    // Every link reads back whole, from either table; the same URL again is the same link.
    for r in &made {
        assert_eq!(store.get(&r.id).await.unwrap().as_ref(), Some(r));
    }
    for (i, r) in [(3, &made[3]), (12, &made[12])] {
        match &store.put_if_absent(vec![link(&key, i)]).await.unwrap()[0] {
            Put::Existing(e) => assert_eq!(e, r),
            other => panic!("expected the stored link, got {other:?}"),
        }
    }
    assert_eq!(rows(&db), (2, 11), "a repeated URL adds nothing");

    // An exact id taken in the log or in links is a conflict for another URL.
    for taken in [&made[12].id, &made[0].id] {
        let mut other = link(&key, 99);
        other.plan = IdPlan::Exact(taken.clone());
        match &store.put_if_absent(vec![other]).await.unwrap()[0] {
            Put::Conflict(id) => assert_eq!(id, taken),
            p => panic!("expected a conflict, got {p:?}"),
        }
    }

    // Listing merges both tables in id order, whatever the page size.
    for page in [1, 3, 100] {
        assert_eq!(all(&store, page).await, sorted(made.clone()), "page {page}");
    }
    let recent = store.recent(3).await.unwrap();
    assert_eq!(
        recent.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![
            made[12].id.clone(),
            made[11].id.clone(),
            made[10].id.clone()
        ]
    );

    // Expiry and blob references count both tables.
    let expired = store.expired(1_700_000_200, 100).await.unwrap();
    let want: Vec<&LinkId> = made
        .iter()
        .filter(|r| r.expires_at.is_some())
        .map(|r| &r.id)
        .collect();
    assert_eq!(expired.iter().map(|r| &r.id).collect::<Vec<_>>(), want);
    assert!(
        expired
            .windows(2)
            .all(|w| w[0].expires_at <= w[1].expires_at),
        "expired links come oldest first"
    );
    assert_eq!(store.blob_refs(&"ab".repeat(32)).await.unwrap(), 3);

    // Media is recorded on a logged link and on a merged one.
    let media = MediaInfo {
        content_type: "image/jpeg".into(),
        bytes: 1234,
        converted_from: Some("image/webp".into()),
    };
    for r in [&made[12], &made[2]] {
        store.set_media(&r.id, &media).await.unwrap();
        assert_eq!(
            store.get(&r.id).await.unwrap().unwrap().media.as_ref(),
            Some(&media)
        );
    }

    // Deleting from either table; a deleted link's URL can be stored again.
    for r in [&made[11], &made[1]] {
        assert!(store.delete(&r.id).await.unwrap());
        assert!(!store.delete(&r.id).await.unwrap(), "deleted twice");
        assert_eq!(store.get(&r.id).await.unwrap(), None);
    }
    assert_eq!(rows(&db), (1, 10));
    let left: Vec<LinkRecord> = made
        .iter()
        .enumerate()
        .filter(|(i, _)| ![1, 11].contains(i))
        .map(|(i, r)| match i {
            2 | 12 => LinkRecord {
                media: Some(media.clone()),
                ..r.clone()
            },
            _ => r.clone(),
        })
        .collect();
    assert_eq!(all(&store, 4).await, sorted(left.clone()));
    store.close().await;

    // A restart rebuilds the log's map from the table: nothing is lost or doubled.
    let store = SqliteStore::open_with_log_limit(&db, None, LogLimit::fixed(100))
        .await
        .unwrap();
    assert_eq!(all(&store, 3).await, sorted(left.clone()));
    for r in &left {
        assert_eq!(store.get(&r.id).await.unwrap().as_ref(), Some(r));
    }
    let again = created(store.put_if_absent(vec![link(&key, 1)]).await.unwrap());
    assert_eq!(again[0].id, made[1].id, "the id comes back with its URL");
    assert_eq!(rows(&db), (2, 10));
    store.close().await;

    // A smaller limit merges at the next write.
    let store = SqliteStore::open_with_log_limit(&db, None, LogLimit::fixed(1))
        .await
        .unwrap();
    created(store.put_if_absent(vec![link(&key, 11)]).await.unwrap());
    settle(&store, &key).await;
    assert_eq!(rows(&db), (0, 13));
    assert_eq!(all(&store, 5).await.len(), 13);
    store.close().await;
}

#[tokio::test]
async fn a_store_from_before_the_log_is_migrated_with_its_links() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    let key = IdKey::from_bytes([9; 32]);
    // Enough links for the old table to span pages that the copy leaves free.
    let old: Vec<NewLink> = (0..300).map(|i| link(&key, i)).collect();
    {
        // The schema as the third migration left it, with links in it.
        let c = old_store(
            &db,
            &key,
            "CREATE TABLE links (
                 id TEXT PRIMARY KEY, url TEXT NOT NULL, kind TEXT NOT NULL,
                 created_at INTEGER NOT NULL, expires_at INTEGER, convert INTEGER,
                 content_type TEXT, bytes INTEGER, converted_from TEXT
             ) WITHOUT ROWID;
             ALTER TABLE links ADD COLUMN blob TEXT;
             CREATE INDEX links_blob ON links (blob) WHERE blob IS NOT NULL;
             CREATE INDEX links_expires ON links (expires_at) WHERE expires_at IS NOT NULL;
             CREATE INDEX links_created ON links (created_at);
             PRAGMA user_version = 3;",
        );
        for l in &old {
            let IdPlan::Derived(full) = &l.plan else {
                unreachable!()
            };
            let id = full.candidates().next().unwrap();
            c.execute(
                "INSERT INTO links (id, url, kind, created_at, expires_at, blob)
                 VALUES (?1, ?2, 'image', ?3, ?4, ?5)",
                rusqlite::params![
                    id.as_str(),
                    l.url.as_str(),
                    l.created_at,
                    l.expires_at,
                    l.blob
                ],
            )
            .unwrap();
        }
    }

    let store = SqliteStore::open(&db, None).await.unwrap();
    assert!(store.id_key() == &key, "the stored key is kept");
    let free: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .unwrap();
    assert_eq!(free, 0, "the old table's pages were given back");
    let listed = all(&store, 7).await;
    assert_eq!(listed.len(), 300);
    for l in &old {
        match &store.put_if_absent(vec![l.clone()]).await.unwrap()[0] {
            Put::Existing(r) => assert_eq!(&r.url, &l.url),
            other => panic!("a migrated link should be found, got {other:?}"),
        }
    }
    created(store.put_if_absent(vec![link(&key, 300)]).await.unwrap());
    assert_eq!(rows(&db), (1, 300));
    assert_eq!(all(&store, 100).await.len(), 301);
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5);
    store.close().await;
}

/// After a restart the writer learns the ids of `links` from a read of its own and then
/// skips the table for ids it knows are free: every stored link must still be found
/// (a miss would store a second row for the same URL), before and after new merges.
#[tokio::test]
async fn stored_ids_are_known_after_a_restart_and_after_merges() {
    let (_dir, db, store, key) = fresh(LogLimit::fixed(5)).await;
    for chunk in (0..20).collect::<Vec<_>>().chunks(4) {
        created(
            store
                .put_if_absent(chunk.iter().map(|&i| link(&key, i)).collect())
                .await
                .unwrap(),
        );
    }
    settle(&store, &key).await;
    store.close().await;
    // Merged at 8 and at 16 links: the last four are still in the log.
    assert_eq!(rows(&db), (4, 16));

    let store = SqliteStore::open_with_log_limit(&db, None, LogLimit::fixed(5))
        .await
        .unwrap();
    // The writer takes the fingerprints between two writes.
    for _ in 0..200 {
        if store.known_ids_ready() {
            break;
        }
        settle(&store, &key).await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(store.known_ids_ready(), "the stored ids were never loaded");
    let mut ids = Vec::new();
    for i in 0..20 {
        match &store.put_if_absent(vec![link(&key, i)]).await.unwrap()[0] {
            Put::Existing(r) => {
                assert_eq!(r.url, link(&key, i).url);
                ids.push(r.id.clone());
            }
            other => panic!("link {i} is stored, got {other:?}"),
        }
    }
    // An exact id already in `links` under another URL is still a conflict.
    let taken = ids[3].clone();
    let mut other = link(&key, 99);
    other.plan = IdPlan::Exact(taken.clone());
    assert!(matches!(
        &store.put_if_absent(vec![other]).await.unwrap()[0],
        Put::Conflict(id) if *id == taken
    ));

    // New links, merged while the fingerprints are in use, are known after it too.
    created(
        store
            .put_if_absent((20..32).map(|i| link(&key, i)).collect())
            .await
            .unwrap(),
    );
    settle(&store, &key).await;
    assert_eq!(rows(&db).0, 0, "the new links were merged");
    for i in 0..32 {
        assert!(
            matches!(
                &store.put_if_absent(vec![link(&key, i)]).await.unwrap()[0],
                Put::Existing(_)
            ),
            "link {i} stored twice"
        );
    }
    assert_eq!(all(&store, 100).await.len(), 32);
    store.close().await;
    assert_eq!(rows(&db), (0, 32));
}

/// The store is locked from open to close: a second open of the same file fails until
/// the first is closed.
#[tokio::test]
async fn one_store_handle_writes_a_file_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let first = SqliteStore::open(&db, None).await.unwrap();
    let err = SqliteStore::open(&db, None)
        .await
        .err()
        .expect("a second writer");
    assert!(
        err.to_string()
            .contains("in use by another medialink process"),
        "{err}"
    );
    first.close().await;
    let second = SqliteStore::open(&db, None).await.unwrap();
    second.close().await;
}

/// An array is all or nothing: when one item fails in the store (here: every prefix of
/// its id is taken by other URLs, which only tampering can do), the items before it are
/// not stored either, and a later array stores them.
#[tokio::test]
async fn an_array_with_a_failing_item_stores_none_of_it() {
    let (_dir, db, store, key) = fresh(LogLimit::DEFAULT).await;
    let blocked = link(&key, 500);
    let IdPlan::Derived(full) = &blocked.plan else {
        unreachable!()
    };
    let squatters: Vec<NewLink> = full
        .candidates()
        .enumerate()
        .map(|(i, id)| NewLink {
            plan: IdPlan::Exact(id),
            ..link(&key, 1000 + i)
        })
        .collect();
    assert_eq!(
        created(store.put_if_absent(squatters).await.unwrap()).len(),
        13
    );

    let before = link(&key, 1);
    let after = link(&key, 2);
    let first_id = |l: &NewLink| match &l.plan {
        IdPlan::Derived(f) => f.candidates().next().unwrap(),
        IdPlan::Exact(id) => id.clone(),
    };
    let err = store
        .put_if_absent(vec![before.clone(), blocked, after.clone()])
        .await
        .expect_err("every prefix is taken");
    assert!(err.to_string().contains("prefix"), "{err}");
    for l in [&before, &after] {
        assert_eq!(store.get(&first_id(l)).await.unwrap(), None);
    }
    assert_eq!(rows(&db), (13, 0), "only the squatters are stored");

    let again = created(store.put_if_absent(vec![before, after]).await.unwrap());
    assert_eq!(again.len(), 2);
    assert_eq!(all(&store, 100).await.len(), 15);
    store.close().await;
}

/// A link whose row had the largest rowid is deleted after its id was merged: the next
/// new link must not take that rowid again (SQLite's own choice would), or it would sit
/// where neither the log nor `link_ids` looks and be lost at the next start.
#[tokio::test]
async fn a_new_link_after_deleting_the_last_merged_one_survives_a_restart() {
    let (_dir, db, store, key) = fresh(LogLimit::fixed(2)).await;
    let made = created(
        store
            .put_if_absent(vec![link(&key, 1), link(&key, 2)])
            .await
            .unwrap(),
    );
    settle_on(&store, &key, 1).await;
    assert_eq!(rows(&db), (0, 2));
    assert!(store.delete(&made[1].id).await.unwrap());
    store.close().await;

    let store = SqliteStore::open_with_log_limit(&db, None, LogLimit::fixed(100))
        .await
        .unwrap();
    let new = created(store.put_if_absent(vec![link(&key, 3)]).await.unwrap());
    store.close().await;

    let store = SqliteStore::open(&db, None).await.unwrap();
    assert_eq!(store.get(&new[0].id).await.unwrap().as_ref(), Some(&new[0]));
    assert_eq!(
        store.get(&made[0].id).await.unwrap().as_ref(),
        Some(&made[0])
    );
    assert_eq!(store.get(&made[1].id).await.unwrap(), None);
    assert_eq!(rows(&db), (1, 1));
    store.close().await;
}

/// `settle` through stored link `i`.
async fn settle_on(store: &SqliteStore, key: &IdKey, i: usize) {
    match &store.put_if_absent(vec![link(key, i)]).await.unwrap()[0] {
        Put::Existing(_) => {}
        other => panic!("link {i} should be stored, got {other:?}"),
    }
}

/// A store as the fourth migration left it, with links in `links` and in the log table
/// `links_log`, is migrated to rows written once: every link reads back whole, from
/// the log (its rows moved past `merged_rowid`) or through `link_ids`, and merges on.
#[tokio::test]
async fn a_store_with_a_log_table_is_migrated_with_its_links() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v4.db");
    let key = IdKey::from_bytes([7; 32]);
    let links: Vec<NewLink> = (0..40).map(|i| link(&key, i)).collect();
    let first_id = |l: &NewLink| match &l.plan {
        IdPlan::Derived(f) => f.candidates().next().unwrap(),
        IdPlan::Exact(id) => id.clone(),
    };
    {
        let table = |name: &str| {
            format!(
                "CREATE TABLE {name} (
                     id TEXT NOT NULL, url TEXT NOT NULL, kind TEXT NOT NULL,
                     created_at INTEGER NOT NULL, expires_at INTEGER, convert INTEGER,
                     content_type TEXT, bytes INTEGER, converted_from TEXT, blob TEXT
                 );"
            )
        };
        let c = old_store(
            &db,
            &key,
            &format!(
                "{}
             CREATE UNIQUE INDEX links_id ON links (id);
             CREATE INDEX links_blob ON links (blob) WHERE blob IS NOT NULL;
             CREATE INDEX links_expires ON links (expires_at) WHERE expires_at IS NOT NULL;
             CREATE INDEX links_created ON links (created_at);
             {}
             CREATE INDEX links_log_blob ON links_log (blob) WHERE blob IS NOT NULL;
             CREATE INDEX links_log_expires ON links_log (expires_at) WHERE expires_at IS NOT NULL;
             CREATE INDEX links_log_created ON links_log (created_at);
             PRAGMA user_version = 4;",
                table("links"),
                table("links_log"),
            ),
        );
        // 30 merged (inserted in id order, as a merge did), 10 in the log.
        let mut merged: Vec<&NewLink> = links[..30].iter().collect();
        merged.sort_by_key(|l| first_id(l));
        for (table, part) in [
            ("links", merged),
            ("links_log", links[30..].iter().collect()),
        ] {
            for l in part {
                c.execute(
                    &format!(
                        "INSERT INTO {table} (id, url, kind, created_at, expires_at, blob)
                         VALUES (?1, ?2, 'image', ?3, ?4, ?5)"
                    ),
                    rusqlite::params![
                        first_id(l).as_str(),
                        l.url.as_str(),
                        l.created_at,
                        l.expires_at,
                        l.blob
                    ],
                )
                .unwrap();
            }
        }
    }

    let store = SqliteStore::open_with_log_limit(&db, None, LogLimit::fixed(12))
        .await
        .unwrap();
    assert_eq!(rows(&db), (10, 30));
    let listed = all(&store, 7).await;
    assert_eq!(listed.len(), 40);
    for l in &links {
        let r = store.get(&first_id(l)).await.unwrap().expect("migrated");
        assert_eq!(
            (&r.url, r.created_at, r.expires_at, &r.blob),
            (&l.url, l.created_at, l.expires_at, &l.blob)
        );
        match &store.put_if_absent(vec![l.clone()]).await.unwrap()[0] {
            Put::Existing(r) => assert_eq!(&r.url, &l.url),
            other => panic!("a migrated link should be found, got {other:?}"),
        }
    }
    assert_eq!(store.blob_refs(&"ab".repeat(32)).await.unwrap(), 8);
    assert_eq!(store.expired(i64::MAX, 100).await.unwrap().len(), 10);
    // Two more fill the log past its limit of 12: all 42 ids are merged.
    created(
        store
            .put_if_absent(vec![link(&key, 40), link(&key, 41)])
            .await
            .unwrap(),
    );
    settle_on(&store, &key, 41).await;
    assert_eq!(rows(&db), (0, 42));
    store.close().await;

    let store = SqliteStore::open(&db, None).await.unwrap();
    assert_eq!(all(&store, 100).await.len(), 42);
    for l in &links {
        assert!(store.get(&first_id(l)).await.unwrap().is_some());
    }
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5);
    let tables: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('links_log', 'links_id')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the log table and the id index are gone");
    store.close().await;
}

/// The log grows with the store: a merge waits for a quarter as many links as are
/// merged, within the bounds. The limit is read again after every merge, and after a
/// restart it follows the merged count kept in the store.
#[tokio::test]
async fn the_log_limit_follows_the_merged_count() {
    let bounds = LogLimit {
        min: 4,
        max: 10,
        slice: 10,
    };
    let (_dir, db, mut store, key) = fresh(bounds).await;
    let mut merges = Vec::new();
    for i in 0..70 {
        created(store.put_if_absent(vec![link(&key, i)]).await.unwrap());
        settle(&store, &key).await;
        let (logged, merged) = rows(&db);
        assert_eq!(logged + merged, i as i64 + 1);
        if merges.last().copied().unwrap_or(0) != merged {
            assert_eq!(logged, 0, "a merge takes the whole log");
            merges.push(merged);
        }
        if i == 40 {
            store.close().await;
            store = SqliteStore::open_with_log_limit(&db, None, bounds)
                .await
                .unwrap();
        }
    }
    // 4 while a quarter of the merged ids is fewer, then 20/4 = 5, 25/4 = 6, 31/4 = 7,
    // 38/4 = 9, and 10 from 40 merged ids on (across the restart at 41 links).
    assert_eq!(merges, [4, 8, 12, 16, 20, 25, 31, 38, 47, 57, 67]);
    store.close().await;
}

/// What a store file holds: the merged rowid, and every id of `link_ids` whose row is
/// gone or holds another id (there must be none).
fn merged_and_dangling(db: &Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    let merged: String = c
        .query_row(
            "SELECT value FROM meta WHERE key = 'merged_rowid'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let dangling: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM link_ids i
             WHERE NOT EXISTS (SELECT 1 FROM links l WHERE l.rowid = i.rid AND l.id = i.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (merged.parse().unwrap(), dangling)
}

/// Writes until the merge under way has ended (a merge moves a slice after each
/// write, and on its own while none waits).
async fn until_merged(store: &SqliteStore, key: &IdKey, i: usize, db: &Path, logged: i64) {
    for _ in 0..200 {
        settle_on(store, key, i).await;
        if rows(db).0 == logged {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the merge did not end: {:?} (logged, merged)", rows(db));
}

/// A restart can cut a merge short: some of the log's ids are in `link_ids` while
/// `merged_rowid` has not moved. Such a link reads and lists once, a delete takes it
/// out of both, and the next merge moves the rest over the ids already there.
#[tokio::test]
async fn a_merge_cut_short_by_a_restart_is_finished_by_the_next() {
    let (_dir, db, store, key) = fresh(LogLimit::fixed(100)).await;
    let mut made = created(
        store
            .put_if_absent((0..10).map(|i| link(&key, i)).collect())
            .await
            .unwrap(),
    );
    store.close().await;
    // The first slices of a merge, as a stopped process left them.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO link_ids (id, rid) SELECT id, rowid FROM links WHERE rowid <= 4",
            [],
        )
        .unwrap();

    let bounds = LogLimit {
        min: 12,
        max: 12,
        slice: 3,
    };
    let store = SqliteStore::open_with_log_limit(&db, None, bounds)
        .await
        .unwrap();
    assert_eq!(
        all(&store, 3).await,
        sorted(made.clone()),
        "listed once each"
    );
    for r in &made {
        assert_eq!(store.get(&r.id).await.unwrap().as_ref(), Some(r));
    }
    let gone = made.remove(1);
    assert!(store.delete(&gone.id).await.unwrap());
    assert_eq!(store.get(&gone.id).await.unwrap(), None);
    assert_eq!(
        merged_and_dangling(&db),
        (0, 0),
        "the deleted link's id left link_ids with its row"
    );

    made.extend(created(
        store
            .put_if_absent((10..13).map(|i| link(&key, i)).collect())
            .await
            .unwrap(),
    ));
    until_merged(&store, &key, 0, &db, 0).await;
    assert_eq!(rows(&db), (0, 12));
    assert_eq!(merged_and_dangling(&db), (13, 0));
    assert_eq!(all(&store, 5).await, sorted(made.clone()));
    store.close().await;

    let store = SqliteStore::open(&db, None).await.unwrap();
    assert_eq!(all(&store, 4).await, sorted(made.clone()));
    for r in &made {
        assert_eq!(store.get(&r.id).await.unwrap().as_ref(), Some(r));
    }
    assert_eq!(store.get(&gone.id).await.unwrap(), None);
    store.close().await;
}

/// A merge in slices of 3 goes on between writes: creates, deletes and media
/// updates that land while it runs, on logged and on moved ids, all hold after it,
/// and after a restart.
#[tokio::test]
async fn links_written_during_a_merge_in_slices_hold() {
    let bounds = LogLimit {
        min: 60,
        max: 60,
        slice: 3,
    };
    let (_dir, db, store, key) = fresh(bounds).await;
    let store = std::sync::Arc::new(store);
    let first = created(
        store
            .put_if_absent((0..59).map(|i| link(&key, i)).collect())
            .await
            .unwrap(),
    );
    // In the order made: link 0 stays, for `until_merged` to write again.
    let ids: Vec<LinkId> = first.iter().map(|r| r.id.clone()).collect();
    let mut live: std::collections::BTreeMap<String, LinkRecord> = first
        .into_iter()
        .map(|r| (r.id.as_str().to_owned(), r))
        .collect();
    // The 60th link fills the log; the merge's 20 slices run between what follows.
    for r in created(store.put_if_absent(vec![link(&key, 59)]).await.unwrap()) {
        live.insert(r.id.as_str().to_owned(), r);
    }
    let media = MediaInfo {
        content_type: "image/png".into(),
        bytes: 7,
        converted_from: None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (n, id) in ids.iter().enumerate().skip(1) {
        let (store, id, key, media) = (store.clone(), id.clone(), key.clone(), media.clone());
        tasks.spawn(async move {
            match n % 3 {
                0 => {
                    assert!(store.delete(&id).await.unwrap());
                    None
                }
                1 => {
                    store.set_media(&id, &media).await.unwrap();
                    None
                }
                _ => Some(created(
                    store
                        .put_if_absent(vec![link(&key, 100 + n)])
                        .await
                        .unwrap(),
                )),
            }
        });
    }
    for (n, id) in ids.iter().enumerate().skip(1) {
        match n % 3 {
            0 => {
                live.remove(id.as_str());
            }
            1 => {
                if let Some(r) = live.get_mut(id.as_str()) {
                    r.media = Some(media.clone());
                }
            }
            _ => {}
        }
    }
    while let Some(done) = tasks.join_next().await {
        for r in done.unwrap().unwrap_or_default() {
            live.insert(r.id.as_str().to_owned(), r);
        }
    }
    until_merged(&store, &key, 0, &db, 19).await;
    let (merged, dangling) = merged_and_dangling(&db);
    assert_eq!((merged, dangling), (60, 0));
    let expected: Vec<LinkRecord> = live.values().cloned().collect();
    assert_eq!(all(&*store, 7).await, expected);
    for r in &expected {
        assert_eq!(store.get(&r.id).await.unwrap().as_ref(), Some(r));
    }
    store.close().await;

    let store = SqliteStore::open(&db, None).await.unwrap();
    assert_eq!(all(&store, 7).await, expected);
    for id in ids.iter().skip(3).step_by(3) {
        assert_eq!(store.get(id).await.unwrap(), None, "deleted stays deleted");
    }
    store.close().await;
}

/// Pages read the log from a sorted copy once it stands still between pages, and from
/// the log itself as soon as it changes: links created or deleted between two pages
/// show in the next ones or are gone from them.
#[tokio::test]
async fn listing_pages_follow_the_log_between_pages() {
    let (_dir, _, store, key) = fresh(LogLimit::fixed(1_000)).await;
    let mut live = sorted(created(
        store
            .put_if_absent((0..30).map(|i| link(&key, i)).collect())
            .await
            .unwrap(),
    ));
    // Three pages of a still log: the second sorts it, the third reads the copy.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let after = seen.last().map(|r: &LinkRecord| r.id.clone());
        seen.extend(store.list(after.as_ref(), 5).await.unwrap());
    }
    assert_eq!(seen, live[..15]);
    let last = seen.last().unwrap().id.clone();

    // Between pages: the next link due is deleted, ten new ones are logged.
    let gone = live.remove(15);
    assert!(store.delete(&gone.id).await.unwrap());
    let new = created(
        store
            .put_if_absent((30..40).map(|i| link(&key, i)).collect())
            .await
            .unwrap(),
    );
    assert!(
        new.iter().any(|r| r.id.as_str() > last.as_str()),
        "some new id sorts after the pages read"
    );
    live = sorted(live.into_iter().chain(new).collect());
    let rest = all_after(&store, Some(&last), 5).await;
    let due: Vec<LinkRecord> = live
        .into_iter()
        .filter(|r| r.id.as_str() > last.as_str())
        .collect();
    assert_eq!(rest, due);
    store.close().await;
}

/// A store whose every page comes back one short of the limit, as a page can when a
/// logged link is deleted between the store's copy of its log and the read.
struct ShortPages(SqliteStore);

#[async_trait::async_trait]
impl Store for ShortPages {
    fn id_key(&self) -> &IdKey {
        self.0.id_key()
    }
    async fn put_if_absent(
        &self,
        links: Vec<NewLink>,
    ) -> Result<Vec<Put>, medialink::store::StoreError> {
        self.0.put_if_absent(links).await
    }
    async fn get(&self, id: &LinkId) -> Result<Option<LinkRecord>, medialink::store::StoreError> {
        self.0.get(id).await
    }
    async fn delete(&self, id: &LinkId) -> Result<bool, medialink::store::StoreError> {
        self.0.delete(id).await
    }
    async fn list(
        &self,
        after: Option<&LinkId>,
        limit: usize,
    ) -> Result<Vec<LinkRecord>, medialink::store::StoreError> {
        self.0.list(after, limit.saturating_sub(1).max(1)).await
    }
    async fn set_media(
        &self,
        id: &LinkId,
        media: &MediaInfo,
    ) -> Result<(), medialink::store::StoreError> {
        self.0.set_media(id, media).await
    }
    async fn blob_refs(&self, blob: &str) -> Result<u64, medialink::store::StoreError> {
        self.0.blob_refs(blob).await
    }
    async fn expired(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<LinkRecord>, medialink::store::StoreError> {
        self.0.expired(now, limit).await
    }
    async fn append_events(
        &self,
        traces: Vec<(LinkId, medialink::trace::Trace)>,
    ) -> Result<(), medialink::store::StoreError> {
        self.0.append_events(traces).await
    }
    async fn events(
        &self,
        id: &LinkId,
    ) -> Result<Option<medialink::trace::Trace>, medialink::store::StoreError> {
        self.0.events(id).await
    }
    async fn recent(&self, limit: usize) -> Result<Vec<LinkRecord>, medialink::store::StoreError> {
        self.0.recent(limit).await
    }
    async fn ping(&self) -> Result<(), medialink::store::StoreError> {
        self.0.ping().await
    }
    async fn close(&self) {
        self.0.close().await
    }
}

/// An export goes on past a short page: only an empty one ends it.
#[tokio::test]
async fn an_export_goes_on_past_a_short_page() {
    let (_dir, _, store, key) = fresh(LogLimit::DEFAULT).await;
    let store = ShortPages(store);
    let made = created(
        store
            .put_if_absent((0..2_500).map(|i| link(&key, i)).collect())
            .await
            .unwrap(),
    );
    let mut out = Vec::new();
    let written = medialink::transfer::export(&store, &mut out, false)
        .await
        .unwrap();
    assert_eq!(written, 2_500);
    let lines = String::from_utf8(out).unwrap();
    assert_eq!(lines.lines().count(), 2_500);
    for r in &made {
        assert!(
            lines.contains(&format!("\"{}\"", r.id.as_str())),
            "{} exported",
            r.id.as_str()
        );
    }
    store.close().await;
}
