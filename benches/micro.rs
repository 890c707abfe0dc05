//! Micro-benchmarks of the pieces on the request paths: id derivation, URL
//! canonicalization, sniffing, range parsing, the SQLite store, the cache hit.
//! `cargo bench --bench micro` (release). Timings are compared between runs of one
//! machine, never asserted.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use medialink::cache::{Media, MediaCache};
use medialink::canon::CanonicalUrl;
use medialink::ids::{IdKey, LinkId};
use medialink::media::range;
use medialink::policy::Kind;
use medialink::sniff::{self, MediaType};
use medialink::store::{IdPlan, NewLink, Store};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

const SIGNED: &str = "https://cdn.example.com/media/2026/11/photo.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261124%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261124T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn ids_and_urls(c: &mut Criterion) {
    let key = IdKey::from_bytes([7; 32]);
    let url = CanonicalUrl::parse(SIGNED).unwrap();
    c.bench_function("canonicalize signed URL", |b| {
        b.iter(|| CanonicalUrl::parse(black_box(SIGNED)).unwrap())
    });
    c.bench_function("derive id (HMAC-SHA256 + base62)", |b| {
        b.iter(|| key.derive(black_box(&url)))
    });
    c.bench_function("parse link id", |b| {
        b.iter(|| LinkId::parse(black_box("k3J9aQ2mZx")).unwrap())
    });
}

fn sniffing(c: &mut Criterion) {
    for name in [
        "photo.jpg",
        "photo.png",
        "voice.ogg",
        "voice.m4a",
        "voice.mp3",
    ] {
        let bytes = fixture(name);
        c.bench_function(&format!("sniff {name} ({} B)", bytes.len()), |b| {
            b.iter(|| sniff::sniff(black_box(&bytes)).unwrap())
        });
    }
}

fn ranges(c: &mut Criterion) {
    c.bench_function("range bytes=0-99", |b| {
        b.iter(|| range::parse(black_box(Some("bytes=0-99")), 100_000))
    });
    c.bench_function("range suffix", |b| {
        b.iter(|| range::parse(black_box(Some("bytes=-500")), 100_000))
    });
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = rt
        .block_on(medialink::store::open(
            &format!("sqlite://{}/b.db", dir.path().display()),
            None,
        ))
        .unwrap();
    let key = store.id_key().clone();
    let link = |i: u64| {
        let url = CanonicalUrl::parse(&format!("https://cdn.example.com/b/{i}.jpg")).unwrap();
        NewLink {
            plan: IdPlan::Derived(key.derive(&url)),
            url,
            kind: Kind::Image,
            created_at: 0,
            expires_at: None,
            convert: None,
            media: None,
            blob: None,
        }
    };
    let mut n = 0u64;
    c.bench_function("sqlite put (one link, durable)", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(store.put_if_absent(vec![link(n)])).unwrap()
        })
    });
    let batch_base = 10_000_000u64;
    let mut k = 0u64;
    c.bench_function("sqlite put (1000 links, one transaction)", |b| {
        b.iter(|| {
            k += 1;
            let links = (0..1000).map(|i| link(batch_base + k * 1000 + i)).collect();
            rt.block_on(store.put_if_absent(links)).unwrap()
        })
    });
    let id = match &rt.block_on(store.put_if_absent(vec![link(1)])).unwrap()[0] {
        medialink::store::Put::Created(r) | medialink::store::Put::Existing(r) => r.id.clone(),
        medialink::store::Put::Conflict(_) => unreachable!(),
    };
    c.bench_function("sqlite get by id", |b| {
        b.iter(|| rt.block_on(store.get(black_box(&id))).unwrap())
    });
    rt.block_on(store.close());
}

fn cache(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = MediaCache::new(64 << 20);
    let id = LinkId::parse("k3J9aQ2mZx").unwrap();
    let media = Media::new(
        Bytes::from(fixture("photo.jpg")),
        MediaType::Jpeg,
        None,
        None,
    );
    rt.block_on(cache.insert(id.clone(), media));
    c.bench_function("cache hit", |b| {
        b.iter(|| rt.block_on(cache.get(black_box(&id))).unwrap())
    });
}

criterion_group!(benches, ids_and_urls, sniffing, ranges, store, cache);
criterion_main!(benches);
