//! Export and import (DESIGN §10): links move from SQLite to PostgreSQL with their
//! ids, a second import skips them all, and a bad line stops the import by name.
//! Skipped (passing) without `MEDIALINK_TEST_POSTGRES_URL`.
#![cfg(feature = "postgres")]

mod pgutil;

use medialink::policy::Kind;
use medialink::store::postgres::PgStore;
use medialink::store::sqlite::SqliteStore;
use medialink::store::{LinkRecord, MediaInfo, NewLink, Store};
use medialink::transfer::{ImportStats, TransferError, export, import};
use pgutil::{TestDb, derived};

async fn all(store: &dyn Store) -> Vec<LinkRecord> {
    let mut out: Vec<LinkRecord> = Vec::new();
    loop {
        let page = store.list(out.last().map(|r| &r.id), 700).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

#[tokio::test]
async fn sqlite_to_postgres_keeps_every_link_and_id() {
    let Some(db) = TestDb::create("transfer").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("medialink.db"), None)
        .await
        .unwrap();
    let key = sqlite.id_key().clone();
    // More than one export page and one import batch, with every optional field.
    let links: Vec<NewLink> = (0..2500)
        .map(|i| NewLink {
            kind: [Kind::Image, Kind::Audio, Kind::Voice, Kind::Any][i % 4],
            created_at: 1_700_000_000 + i as i64,
            expires_at: (i % 3 == 0).then_some(1_800_000_000),
            convert: [None, Some(true), Some(false)][i % 3],
            ..derived(
                &key,
                &format!("https://cdn.example.com/{i}.jpg?sig=x%20y&n={i}"),
            )
        })
        .collect();
    sqlite.put_if_absent(links).await.unwrap();
    let first = sqlite.list(None, 3).await.unwrap();
    for (n, r) in first.iter().enumerate() {
        let media = MediaInfo {
            content_type: "audio/ogg".into(),
            bytes: 1000 + n as u64,
            converted_from: (n == 0).then(|| "audio/mpeg".into()),
        };
        sqlite.set_media(&r.id, &media).await.unwrap();
    }

    let mut file = Vec::new();
    let written = export(&sqlite, &mut file, false).await.unwrap();
    assert_eq!(written, 2500);
    assert_eq!(file.iter().filter(|&&b| b == b'\n').count(), 2500);

    // A different key on purpose: import keeps ids, it does not derive them.
    let pg = PgStore::open(&db.url, None).await.unwrap();
    let stats = import(&pg, &mut file.as_slice(), false).await.unwrap();
    assert_eq!(
        stats,
        ImportStats {
            read: 2500,
            created: 2500,
            skipped: 0,
            conflicts: 0
        }
    );
    assert_eq!(all(&pg).await, all(&sqlite).await);

    // With the progress bar asked for (hidden anyway: stderr is not a terminal here).
    let again = import(&pg, &mut file.as_slice(), true).await.unwrap();
    assert_eq!(
        again,
        ImportStats {
            read: 2500,
            created: 0,
            skipped: 2500,
            conflicts: 0
        }
    );

    // And back: PostgreSQL exports the same lines, byte for byte.
    let mut from_pg = Vec::new();
    export(&pg, &mut from_pg, false).await.unwrap();
    assert_eq!(from_pg, file);

    pg.close().await;
    sqlite.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_malformed_line_stops_the_import_and_names_the_line() {
    let Some(db) = TestDb::create("bad_line").await else {
        return;
    };
    let pg = PgStore::open(&db.url, None).await.unwrap();
    let good = |i: u32| {
        format!(
            r#"{{"id":"abcdefghi{i}","url":"https://a.example/{i}","kind":"any","created_at":1}}"#
        )
    };
    let input = format!(
        "{}\n\n{}\n{{\"id\": oops}}\n{}\n",
        good(1),
        good(2),
        good(3)
    );
    let err = import(&pg, &mut input.as_bytes(), false).await.unwrap_err();
    let TransferError::Line { line, ref detail } = err else {
        panic!("expected a line error, got {err:?}");
    };
    assert_eq!(line, 4);
    assert!(detail.contains("nothing was imported"), "{detail}");
    eprintln!("{err}");
    // Nothing of the failed batch was applied.
    assert!(pg.list(None, 10).await.unwrap().is_empty());

    let bad_id = r#"{"id":"no","url":"https://a.example/","kind":"any","created_at":1}"#;
    let err = import(
        &pg,
        &mut format!("{}\n{bad_id}\n", good(5)).as_bytes(),
        false,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TransferError::Line { line: 2, .. }), "{err}");

    // Past the first batch: that batch stays imported, and the error says so.
    let mut input: String = (100..1100).map(|i| good(i) + "\n").collect();
    input.push_str(&good(2000));
    input.push_str("\nnot json\n");
    let err = import(&pg, &mut input.as_bytes(), false).await.unwrap_err();
    let TransferError::Line { line, ref detail } = err else {
        panic!("expected a line error, got {err:?}");
    };
    assert_eq!(line, 1002);
    assert!(
        detail.contains("lines 1 to 1000 were imported, none from line 1001 on"),
        "{detail}"
    );
    assert_eq!(pg.list(None, 2000).await.unwrap().len(), 1000);
    pg.close().await;
    db.drop_db().await;
}
