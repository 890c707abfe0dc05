//! The PostgreSQL store through an outage (DESIGN §6): while the server is gone or
//! frozen every call answers `Unavailable` within about 3 s, and when it is back the
//! same store works again without a restart. A TCP proxy plays the outage.
//! Skipped (passing) without `MEDIALINK_TEST_POSTGRES_URL`.
#![cfg(feature = "postgres")]

mod pgutil;

use std::time::{Duration, Instant};

use medialink::ids::LinkId;
use medialink::store::postgres::PgStore;
use medialink::store::{Invalidation, Put, Store, StoreError};
use pgutil::{Mode, Proxy, TestDb, derived};

/// Every kind of call fails fast, with `Unavailable`.
async fn all_calls_fail_fast(store: &PgStore, n: u32) {
    let key = store.id_key().clone();
    let id = LinkId::parse("abcdefghij").unwrap();
    let start = Instant::now();
    let link = derived(&key, &format!("https://cdn.example.com/outage{n}.jpg"));
    let (put, get, del, list, ping) = tokio::join!(
        store.put_if_absent(vec![link]),
        store.get(&id),
        store.delete(&id),
        store.list(None, 10),
        store.ping(),
    );
    let took = start.elapsed();
    eprintln!("outage {n}: all calls answered in {took:?}");
    assert!(matches!(put, Err(StoreError::Unavailable(_))), "{put:?}");
    assert!(matches!(get, Err(StoreError::Unavailable(_))), "{get:?}");
    assert!(matches!(del, Err(StoreError::Unavailable(_))), "{del:?}");
    assert!(matches!(list, Err(StoreError::Unavailable(_))), "{list:?}");
    assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
    assert!(took < Duration::from_millis(3500), "took {took:?}");
}

async fn works_again_within(store: &PgStore, limit: Duration, n: u32) {
    let key = store.id_key().clone();
    let start = Instant::now();
    loop {
        let link = derived(&key, &format!("https://cdn.example.com/back{n}.jpg"));
        match store.put_if_absent(vec![link]).await {
            Ok(p) => {
                assert!(matches!(p[0], Put::Created(_)));
                break;
            }
            Err(e) if start.elapsed() < limit => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("still failing after {limit:?}: {e}"),
        }
    }
    store.ping().await.unwrap();
    eprintln!("recovered after {:?}", start.elapsed());
}

#[tokio::test]
async fn outage_answers_unavailable_fast_and_recovers_by_itself() {
    let Some(db) = TestDb::create("outage").await else {
        return;
    };
    let proxy = Proxy::start(&db.url).await;
    let store = PgStore::open(&db.url_via(proxy.addr), None).await.unwrap();
    let mut rx = store.invalidations().unwrap();
    works_again_within(&store, Duration::ZERO, 0).await;

    // The server goes away (connections closed, new ones refused).
    proxy.set(Mode::Cut);
    all_calls_fail_fast(&store, 1).await;
    proxy.set(Mode::Forward);
    works_again_within(&store, Duration::from_secs(5), 1).await;
    // The listener came back too, and said it may have missed deletes.
    let all = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            if let Ok(Invalidation::All) = rx.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(all.is_ok(), "no Invalidation::All after the outage");

    // The server freezes (sockets open, no answers): still no hang.
    proxy.set(Mode::Freeze);
    all_calls_fail_fast(&store, 2).await;
    proxy.set(Mode::Forward);
    works_again_within(&store, Duration::from_secs(8), 2).await;

    store.close().await;
    db.drop_db().await;
}
