//! Throughput of the PostgreSQL store's group commit: 64 concurrent creators, one
//! link per call, as the API would send them. Ignored by default (it measures, it does
//! not check): `cargo test --test pg_load -- --ignored --nocapture`.
#![cfg(feature = "postgres")]

mod pgutil;

use std::sync::Arc;
use std::time::{Duration, Instant};

use medialink::store::postgres::PgStore;
use medialink::store::{Put, Store};
use pgutil::{TestDb, derived};

const TASKS: usize = 64;
const RUN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored"]
async fn puts_per_second_at_64_concurrent() {
    let Some(db) = TestDb::create("load").await else {
        return;
    };
    let store = Arc::new(PgStore::open(&db.url, None).await.unwrap());
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let key = store.id_key().clone();
                let mut latencies = Vec::new();
                let mut i = 0;
                while start.elapsed() < RUN {
                    let link = derived(&key, &format!("https://cdn.example.com/{t}/{i}.jpg"));
                    let t0 = Instant::now();
                    let put = store.put_if_absent(vec![link]).await.unwrap();
                    latencies.push(t0.elapsed());
                    assert!(matches!(put[0], Put::Created(_)));
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    eprintln!(
        "{} puts in {secs:.1} s: {:.0} puts/s at {TASKS} concurrent; latency p50 {:?} p99 {:?} max {:?}",
        all.len(),
        all.len() as f64 / secs,
        pct(0.5),
        pct(0.99),
        all[all.len() - 1]
    );
    store.close().await;
    db.drop_db().await;
}
