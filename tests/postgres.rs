//! The PostgreSQL store against a real server (DESIGN §6): the `Store` contract,
//! race-free ids across replicas, the shared id key, and invalidations between
//! replicas, including across a reconnect. Skipped (passing) without
//! `MEDIALINK_TEST_POSTGRES_URL`.
#![cfg(feature = "postgres")]

mod pgutil;

use std::sync::Arc;
use std::time::{Duration, Instant};

use medialink::ids::{IdKey, LinkId};
use medialink::store::postgres::PgStore;
use medialink::store::{IdPlan, Invalidation, MediaInfo, NewLink, Put, Store};
use pgutil::{TestDb, derived, url};
use tokio::sync::broadcast;

async fn recv_within(
    rx: &mut broadcast::Receiver<Invalidation>,
    limit: Duration,
    want: impl Fn(&Invalidation) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(inv)) if want(&inv) => return true,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn round_trip_put_get_list_set_media_delete() {
    let Some(db) = TestDb::create("round_trip").await else {
        return;
    };
    let store = PgStore::open(&db.url, None).await.unwrap();
    let key = store.id_key().clone();
    let links: Vec<NewLink> = (0..5)
        .map(|i| derived(&key, &format!("https://cdn.example.com/{i}.jpg")))
        .collect();
    let puts = store.put_if_absent(links).await.unwrap();
    let mut ids: Vec<LinkId> = puts
        .iter()
        .map(|p| match p {
            Put::Created(r) => r.id.clone(),
            other => panic!("expected Created, got {other:?}"),
        })
        .collect();
    ids.sort();
    assert!(ids.iter().all(|id| id.as_str().len() == 10));

    let got = store.get(&ids[0]).await.unwrap().unwrap();
    assert_eq!(got.id, ids[0]);
    assert_eq!(got.created_at, 1_700_000_000);
    assert_eq!(got.media, None);

    // Paging in id order, as `LinkId` orders.
    let first = store.list(None, 2).await.unwrap();
    let rest = store.list(Some(&first[1].id), 10).await.unwrap();
    let listed: Vec<LinkId> = first.iter().chain(&rest).map(|r| r.id.clone()).collect();
    assert_eq!(listed, ids);

    let media = MediaInfo {
        content_type: "image/jpeg".into(),
        bytes: 48_213,
        converted_from: Some("image/webp".into()),
    };
    store.set_media(&ids[0], &media).await.unwrap();
    assert_eq!(
        store.get(&ids[0]).await.unwrap().unwrap().media,
        Some(media)
    );

    // Pinned links are counted per blob; expired ones are found by the sweep.
    let blob = "ab".repeat(32);
    let pinned = NewLink {
        blob: Some(blob.clone()),
        expires_at: Some(1_700_000_100),
        ..derived(&key, "https://cdn.example.com/pinned.jpg")
    };
    let pinned_too = NewLink {
        blob: Some(blob.clone()),
        expires_at: Some(1_700_000_050),
        ..derived(&key, "https://cdn.example.com/pinned-too.jpg")
    };
    let puts = store.put_if_absent(vec![pinned, pinned_too]).await.unwrap();
    let Put::Created(p) = &puts[0] else { panic!() };
    assert_eq!(
        store.get(&p.id).await.unwrap().unwrap().blob,
        Some(blob.clone())
    );
    assert_eq!(store.blob_refs(&blob).await.unwrap(), 2);
    assert_eq!(store.blob_refs(&"cd".repeat(32)).await.unwrap(), 0);
    assert!(store.expired(1_700_000_049, 10).await.unwrap().is_empty());
    let expired = store.expired(1_700_000_100, 10).await.unwrap();
    let at: Vec<Option<i64>> = expired.iter().map(|r| r.expires_at).collect();
    assert_eq!(
        at,
        [Some(1_700_000_050), Some(1_700_000_100)],
        "soonest first"
    );
    assert_eq!(store.expired(2_000_000_000, 1).await.unwrap().len(), 1);
    for p in &puts {
        let Put::Created(r) = p else { panic!() };
        assert!(store.delete(&r.id).await.unwrap());
    }
    assert_eq!(store.blob_refs(&blob).await.unwrap(), 0);

    assert!(store.delete(&ids[0]).await.unwrap());
    assert!(!store.delete(&ids[0]).await.unwrap(), "second delete");
    assert_eq!(store.get(&ids[0]).await.unwrap(), None);
    assert_eq!(store.list(None, 100).await.unwrap().len(), 4);
    store.ping().await.unwrap();
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn put_is_idempotent() {
    let Some(db) = TestDb::create("idempotent").await else {
        return;
    };
    let store = PgStore::open(&db.url, None).await.unwrap();
    let key = store.id_key().clone();
    let u = "https://cdn.example.com/a.jpg?X-Amz-Signature=abc";
    let first = store.put_if_absent(vec![derived(&key, u)]).await.unwrap();
    let second = store.put_if_absent(vec![derived(&key, u)]).await.unwrap();
    // One call naming the same URL twice: created once.
    let twice = store
        .put_if_absent(vec![derived(&key, "https://b.example/x.png"); 2])
        .await
        .unwrap();
    match (&first[0], &second[0], &twice[..]) {
        (Put::Created(a), Put::Existing(b), [Put::Created(c), Put::Existing(d)]) => {
            assert_eq!(a, b);
            assert_eq!(c, d);
        }
        other => panic!("unexpected {other:?}"),
    }
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn concurrent_puts_through_two_replicas_make_one_id() {
    let Some(db) = TestDb::create("race").await else {
        return;
    };
    let a: Arc<dyn Store> = Arc::new(PgStore::open(&db.url, None).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(PgStore::open(&db.url, None).await.unwrap());
    assert_eq!(a.id_key(), b.id_key());
    let key = a.id_key().clone();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
            let link = derived(&key, "https://cdn.example.com/race.jpg");
            tokio::spawn(async move { store.put_if_absent(vec![link]).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap().pop().unwrap() {
            Put::Created(r) => {
                created += 1;
                ids.push(r.id);
            }
            Put::Existing(r) => ids.push(r.id),
            Put::Conflict(id) => panic!("conflict on {id}"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one id for one URL: {ids:?}");
    assert_eq!(created, 1, "exactly one Created");
    assert_eq!(a.list(None, 10).await.unwrap().len(), 1);
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn taken_prefix_extends_the_id() {
    let Some(db) = TestDb::create("collision").await else {
        return;
    };
    let store = PgStore::open(&db.url, None).await.unwrap();
    let key = store.id_key().clone();
    let target = "https://cdn.example.com/wanted.jpg";
    let full = key.derive(&url(target));
    let ten = full.candidates().next().unwrap();
    let squatter = NewLink {
        plan: IdPlan::Exact(ten.clone()),
        ..derived(&key, "https://other.example/squatter.jpg")
    };
    assert!(matches!(
        &store.put_if_absent(vec![squatter.clone()]).await.unwrap()[0],
        Put::Created(r) if r.id == ten
    ));
    let put = store
        .put_if_absent(vec![derived(&key, target)])
        .await
        .unwrap();
    let Put::Created(r) = &put[0] else {
        panic!("expected Created, got {put:?}");
    };
    assert_eq!(r.id.as_str().len(), 11);
    assert_eq!(r.id.as_str(), &full.as_str()[..11]);
    // Stable: asking again finds it at 11, not a new id.
    let again = store
        .put_if_absent(vec![derived(&key, target)])
        .await
        .unwrap();
    assert!(matches!(&again[0], Put::Existing(e) if e.id == r.id));
    // Exact on a taken id with another URL is a conflict; with the same URL, existing.
    let clash = NewLink {
        plan: IdPlan::Exact(ten.clone()),
        ..derived(&key, target)
    };
    let outcome = store.put_if_absent(vec![clash, squatter]).await.unwrap();
    assert!(matches!(&outcome[0], Put::Conflict(id) if *id == ten));
    assert!(matches!(&outcome[1], Put::Existing(e) if e.id == ten));
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn id_key_is_shared_and_can_be_overridden() {
    let Some(db) = TestDb::create("id_key").await else {
        return;
    };
    // Opened together: whichever insert wins, both end up with one key.
    let (a, b) = tokio::join!(PgStore::open(&db.url, None), PgStore::open(&db.url, None));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.id_key(), b.id_key());
    let given = IdKey::from_bytes([9; 32]);
    let c = PgStore::open(&db.url, Some(given.clone())).await.unwrap();
    assert_eq!(c.id_key(), &given);
    // The override is not stored: the shared key is unchanged.
    let d = PgStore::open(&db.url, None).await.unwrap();
    assert_eq!(d.id_key(), a.id_key());
    for s in [a, b, c, d] {
        s.close().await;
    }
    db.drop_db().await;
}

#[tokio::test]
async fn delete_on_one_replica_reaches_the_other_within_a_second() {
    let Some(db) = TestDb::create("notify").await else {
        return;
    };
    let a = PgStore::open(&db.url, None).await.unwrap();
    let b = PgStore::open(&db.url, None).await.unwrap();
    let mut rx = b.invalidations().unwrap();
    let key = a.id_key().clone();
    let put = a
        .put_if_absent(vec![derived(&key, "https://cdn.example.com/del.jpg")])
        .await
        .unwrap();
    let Put::Created(r) = &put[0] else { panic!() };
    let start = Instant::now();
    assert!(a.delete(&r.id).await.unwrap());
    let id = r.id.clone();
    assert!(
        recv_within(&mut rx, Duration::from_secs(1), |i| *i
            == Invalidation::Id(id.clone()))
        .await,
        "no invalidation within 1 s"
    );
    eprintln!("invalidation arrived after {:?}", start.elapsed());
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn terminated_backends_reconnect_and_announce_all() {
    let Some(db) = TestDb::create("terminate").await else {
        return;
    };
    let store = PgStore::open(&db.url, None).await.unwrap();
    let mut rx = store.invalidations().unwrap();
    let key = store.id_key().clone();
    store
        .put_if_absent(vec![derived(&key, "https://cdn.example.com/1.jpg")])
        .await
        .unwrap();

    let mut admin = db.admin().await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(killed.len() >= 2, "the pool and the listener: {killed:?}");
    let start = Instant::now();

    assert!(
        recv_within(&mut rx, Duration::from_secs(5), |i| *i == Invalidation::All).await,
        "no Invalidation::All after the listener's backend was terminated"
    );
    eprintln!("Invalidation::All after {:?}", start.elapsed());
    // Writes work again without a restart.
    let put = loop {
        match store
            .put_if_absent(vec![derived(&key, "https://cdn.example.com/2.jpg")])
            .await
        {
            Ok(p) => break p,
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("puts still failing after 5 s: {e}"),
        }
    };
    assert!(matches!(put[0], Put::Created(_)));
    eprintln!("puts work again after {:?}", start.elapsed());
    // And the listener still delivers deletes.
    let Put::Created(r) = &put[0] else { panic!() };
    let other = PgStore::open(&db.url, None).await.unwrap();
    other.delete(&r.id).await.unwrap();
    let id = r.id.clone();
    assert!(
        recv_within(&mut rx, Duration::from_secs(1), |i| *i
            == Invalidation::Id(id.clone()))
        .await
    );
    other.close().await;
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn listener_keeps_delivering_across_heartbeats() {
    let Some(db) = TestDb::create("heartbeat").await else {
        return;
    };
    let a = PgStore::open(&db.url, None).await.unwrap();
    let b = PgStore::open(&db.url, None).await.unwrap();
    let mut rx = b.invalidations().unwrap();
    // The listener queries its own connection every 10 s; past one of those, it must
    // neither have reconnected nor lost notifications.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let key = a.id_key().clone();
    let put = a
        .put_if_absent(vec![derived(&key, "https://cdn.example.com/hb.jpg")])
        .await
        .unwrap();
    let Put::Created(r) = &put[0] else { panic!() };
    a.delete(&r.id).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .unwrap()
            .unwrap(),
        Invalidation::Id(r.id.clone()),
        "the first event is the delete (no reconnect happened)"
    );
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_refused_write_fails_alone() {
    let Some(db) = TestDb::create("refused").await else {
        return;
    };
    let store = PgStore::open(&db.url, None).await.unwrap();
    let key = store.id_key().clone();
    // PostgreSQL refuses NUL in text: this op's statement fails inside the batch.
    let poisoned = NewLink {
        media: Some(MediaInfo {
            content_type: "image/jpeg\0".into(),
            bytes: 1,
            converted_from: None,
        }),
        ..derived(&key, "https://cdn.example.com/poison.jpg")
    };
    for round in 0..5 {
        let good = derived(&key, &format!("https://cdn.example.com/good{round}.jpg"));
        // Sent together, so they usually share a transaction.
        let (bad, ok) = tokio::join!(
            store.put_if_absent(vec![poisoned.clone()]),
            store.put_if_absent(vec![good]),
        );
        assert!(bad.is_err(), "{bad:?}");
        assert!(matches!(ok.unwrap()[0], Put::Created(_)));
    }
    assert_eq!(store.list(None, 10).await.unwrap().len(), 5);
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn replicas_batching_the_same_links_in_opposite_orders_do_not_deadlock() {
    let Some(db) = TestDb::create("order").await else {
        return;
    };
    let a: Arc<dyn Store> = Arc::new(PgStore::open(&db.url, None).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(PgStore::open(&db.url, None).await.unwrap());
    let key = a.id_key().clone();
    let urls: Vec<String> = (0..50)
        .map(|i| format!("https://cdn.example.com/o/{i}.jpg"))
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(if t % 2 == 0 { &a } else { &b });
            let mut links: Vec<NewLink> = urls.iter().map(|u| derived(&key, u)).collect();
            // Replica a sees them backwards, replica b forwards.
            if t % 2 == 0 {
                links.reverse();
            }
            tokio::spawn(async move { store.put_if_absent(links).await.unwrap() })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        created += t
            .await
            .unwrap()
            .iter()
            .filter(|p| matches!(p, Put::Created(_)))
            .count();
    }
    let took = start.elapsed();
    eprintln!("16 x 50 links through two replicas in {took:?}");
    assert_eq!(created, 50, "each URL created once");
    // A deadlock costs the server's deadlock_timeout (1 s) before one side retries.
    assert!(took < Duration::from_millis(900), "took {took:?}");
    a.close().await;
    b.close().await;
    db.drop_db().await;
}
