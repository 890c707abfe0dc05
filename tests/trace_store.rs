//! The trace part of the `Store` contract, on both stores: appends merge (ring of the
//! last 50, counters add up, last fetch and send kept), replicas appending at once
//! both land, no trace outlives its link, and recent links come newest first. The
//! PostgreSQL half is skipped (passing) without `MEDIALINK_TEST_POSTGRES_URL`.

mod pgutil;

use std::sync::Arc;

use medialink::ids::{LinkId, MIN_LEN};
use medialink::store::{Put, Store};
use medialink::trace::{ClientClass, Event, FetchEvent, RING, SendEvent, Source, Trace};
use pgutil::derived;

fn fetch(n: u64) -> Event {
    Event::Fetch(FetchEvent {
        at: format!("2026-01-01T00:00:{:02}.000Z", n % 60)
            .parse()
            .unwrap(),
        method: "GET".into(),
        status: 200,
        bytes: n,
        source: Source::Upstream,
        client: ClientClass::Gateway,
        agent: Some("Baileys (axios)".into()),
        user_agent: Some("axios/1.7.9".into()),
        code: None,
        ms: 1,
        request_id: None,
    })
}

fn send() -> Event {
    Event::Send(SendEvent {
        at: "2026-01-01T00:01:00.000Z".parse().unwrap(),
        via: "api".into(),
        endpoint: "send-image".into(),
        delivered_as: "image".into(),
        to: None,
        status: Some(200),
        success: true,
        message: Some("Message sent successfully!".into()),
        attempts: 1,
        error: None,
    })
}

fn trace(events: impl IntoIterator<Item = Event>) -> Trace {
    let mut t = Trace::default();
    events.into_iter().for_each(|e| t.push(e));
    t
}

async fn contract(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let key = a.id_key().clone();
    let mut ids = Vec::new();
    for (i, u) in [
        "https://cdn.example.com/a.jpg",
        "https://cdn.example.com/b.jpg",
    ]
    .iter()
    .enumerate()
    {
        let mut l = derived(&key, u);
        l.created_at += i as i64;
        match &a.put_if_absent(vec![l]).await.unwrap()[0] {
            Put::Created(r) => ids.push(r.id.clone()),
            other => panic!("{other:?}"),
        }
    }
    let id = ids[0].clone();
    assert_eq!(a.events(&id).await.unwrap(), None);

    a.append_events(vec![(id.clone(), trace([fetch(1), send()]))])
        .await
        .unwrap();
    // Two replicas at once: both appends land.
    let (ra, rb) = tokio::join!(
        a.append_events(vec![(id.clone(), trace((2..32).map(fetch)))]),
        b.append_events(vec![(id.clone(), trace((32..62).map(fetch)))]),
    );
    ra.unwrap();
    rb.unwrap();
    let t = b.events(&id).await.unwrap().unwrap();
    assert_eq!(t.events.len(), RING);
    assert_eq!(t.counters.fetches, 61);
    assert_eq!(t.counters.gateway_fetches, 61);
    assert_eq!(t.counters.sends, 1);
    assert_eq!(t.counters.bytes_served, (1..62).sum::<u64>());
    assert!(t.last_send.is_some(), "kept after leaving the ring");
    assert!(!t.events.iter().any(|e| matches!(e, Event::Send(_))));

    // A link that does not exist gets no trace.
    let ghost = LinkId::parse(&"Z".repeat(MIN_LEN)).unwrap();
    a.append_events(vec![(ghost.clone(), trace([fetch(1)]))])
        .await
        .unwrap();
    assert_eq!(a.events(&ghost).await.unwrap(), None);

    let recent = a.recent(10).await.unwrap();
    assert_eq!(
        recent.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![ids[1].clone(), ids[0].clone()]
    );

    assert!(a.delete(&id).await.unwrap());
    assert_eq!(b.events(&id).await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_keeps_traces_by_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let loc = format!("sqlite://{}", dir.path().join("m.db").display());
    let a = medialink::store::open(&loc, None).await.unwrap();
    contract(Arc::clone(&a), Arc::clone(&a)).await;
    a.close().await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_keeps_traces_by_the_contract_across_replicas() {
    let Some(db) = pgutil::TestDb::create("trace").await else {
        eprintln!("skipping: MEDIALINK_TEST_POSTGRES_URL is not set");
        return;
    };
    let a = medialink::store::open(&db.url, None).await.unwrap();
    let b = medialink::store::open(&db.url, None).await.unwrap();
    contract(Arc::clone(&a), Arc::clone(&b)).await;
    a.close().await;
    b.close().await;
    db.drop_db().await;
}
