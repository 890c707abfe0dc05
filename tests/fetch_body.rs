//! The fetcher's body contract (DESIGN §5): a body comes back only when it arrived
//! whole and within the limit; every other outcome is a typed error.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use common::raw::{axum_upstream, cfg, gzip_stored, raw_upstream};
use medialink::fetch::{FetchError, Fetcher};
use tokio::io::AsyncWriteExt;

fn fetcher() -> Fetcher {
    Fetcher::new(cfg()).expect("fetcher")
}

const JPEG: &[u8] = b"\xff\xd8\xff\xe0fake jpeg bytes";

#[tokio::test]
async fn whole_body_is_returned_with_its_upstream_type() {
    let app = Router::new().route(
        "/a.jpg",
        get(|| async { ([(header::CONTENT_TYPE, "image/jpeg")], JPEG) }),
    );
    let addr = axum_upstream(app).await;
    let url = url::Url::parse(&format!("http://{addr}/a.jpg")).expect("url");
    let got = fetcher().fetch(&url, 1024).await.expect("fetch");
    assert_eq!(&got.bytes[..], JPEG);
    assert_eq!(got.final_url, url);
    assert_eq!(got.upstream_content_type.as_deref(), Some("image/jpeg"));
    assert!(got.elapsed < Duration::from_secs(5));
}

#[tokio::test]
async fn lying_content_type_passes_through_unjudged() {
    // fetch never decides whether bytes are acceptable; sniff + policy do.
    let app = Router::new().route(
        "/a.jpg",
        get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], JPEG) }),
    );
    let addr = axum_upstream(app).await;
    let url = url::Url::parse(&format!("http://{addr}/a.jpg")).expect("url");
    let got = fetcher().fetch(&url, 1024).await.expect("fetch");
    assert_eq!(&got.bytes[..], JPEG);
    assert_eq!(
        got.upstream_content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
}

#[tokio::test]
async fn body_exactly_at_the_limit_is_whole() {
    let app = Router::new().route("/", get(|| async { vec![7u8; 1000] }));
    let addr = axum_upstream(app).await;
    let url = url::Url::parse(&format!("http://{addr}/")).expect("url");
    let got = fetcher().fetch(&url, 1000).await.expect("fetch");
    assert_eq!(got.bytes.len(), 1000);
}

#[tokio::test]
async fn not_found_is_status_error() {
    let app = Router::new().route("/", get(|| async { (StatusCode::NOT_FOUND, "nope") }));
    let addr = axum_upstream(app).await;
    let url = url::Url::parse(&format!("http://{addr}/missing")).expect("url");
    let err = fetcher().fetch(&url, 1024).await.expect_err("404");
    assert_eq!(err, FetchError::Status { status: 404 });
    assert_eq!(err.code(), "upstream_status");
}

#[tokio::test]
async fn announced_length_over_limit_is_too_large_without_reading() {
    // Announce 10 MB, send 100 bytes, then hold the connection open for 10 s: only
    // a fetcher that refuses on the header alone answers quickly.
    let up = raw_upstream("127.0.0.1", |mut s, _| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
            .await?;
        s.write_all(&[0u8; 100]).await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(())
    })
    .await;
    let started = Instant::now();
    let err = fetcher()
        .fetch(&up.url("/big"), 1000)
        .await
        .expect_err("too large");
    assert_eq!(err, FetchError::TooLarge { limit: 1000 });
    assert_eq!(err.code(), "upstream_too_large");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn body_in_several_reads_comes_back_whole_and_in_order() {
    // Chunks sent apart, so the client reads them one by one and must join them.
    let up = raw_upstream("127.0.0.1", |mut s, _| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await?;
        for i in 0..5u8 {
            s.write_all(b"c8\r\n").await?;
            s.write_all(&[i; 200]).await?;
            s.write_all(b"\r\n").await?;
            s.flush().await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.write_all(b"0\r\n\r\n").await?;
        Ok(())
    })
    .await;
    let got = fetcher().fetch(&up.url("/"), 1000).await.expect("whole");
    let want: Vec<u8> = (0..5u8).flat_map(|i| [i; 200]).collect();
    assert_eq!(&got.bytes[..], &want[..]);
}

#[tokio::test]
async fn chunked_body_growing_past_limit_is_too_large() {
    // No length announced; 10 chunks of 200 bytes against a 1000-byte limit, then the
    // stream stays open, so only stopping at the limit answers quickly.
    let up = raw_upstream("127.0.0.1", |mut s, _| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await?;
        for _ in 0..10 {
            s.write_all(b"c8\r\n").await?;
            s.write_all(&[1u8; 200]).await?;
            s.write_all(b"\r\n").await?;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(())
    })
    .await;
    let started = Instant::now();
    let err = fetcher()
        .fetch(&up.url("/"), 1000)
        .await
        .expect_err("too large");
    assert_eq!(err, FetchError::TooLarge { limit: 1000 });
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn body_cut_before_content_length_is_unreachable_not_partial() {
    let up = raw_upstream("127.0.0.1", |mut s, _| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .await?;
        s.write_all(&[9u8; 100]).await?;
        s.shutdown().await
    })
    .await;
    let err = fetcher().fetch(&up.url("/"), 4096).await.expect_err("cut");
    let FetchError::Unreachable { detail } = &err else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert!(detail.contains("cut short after 100 bytes"), "{detail}");
    assert_eq!(err.code(), "upstream_unreachable");
}

#[tokio::test]
async fn chunked_stream_cut_mid_chunk_is_unreachable() {
    let up = raw_upstream("127.0.0.1", |mut s, _| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await?;
        s.write_all(b"64\r\n").await?;
        s.write_all(&[3u8; 50]).await?;
        s.shutdown().await
    })
    .await;
    let err = fetcher().fetch(&up.url("/"), 4096).await.expect_err("cut");
    assert!(
        matches!(&err, FetchError::Unreachable { detail } if detail.contains("cut short")),
        "{err:?}"
    );
}

#[tokio::test]
async fn stalled_body_times_out_within_configured_timeout() {
    let up = raw_upstream("127.0.0.1", |mut s, _| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .await?;
        s.write_all(&[5u8; 10]).await?;
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    })
    .await;
    let mut config = cfg();
    config.timeout = Duration::from_secs(1);
    let fetcher = Fetcher::new(config).expect("fetcher");
    let started = Instant::now();
    let err = fetcher.fetch(&up.url("/"), 4096).await.expect_err("stall");
    let took = started.elapsed();
    assert_eq!(err, FetchError::Timeout);
    assert_eq!(err.code(), "upstream_timeout");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

#[tokio::test]
async fn stalled_headers_time_out_too() {
    let up = raw_upstream("127.0.0.1", |s, _| async move {
        let _held_open = s;
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    })
    .await;
    let mut config = cfg();
    config.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = Fetcher::new(config)
        .expect("fetcher")
        .fetch(&up.url("/"), 4096)
        .await
        .expect_err("stall");
    assert_eq!(err, FetchError::Timeout);
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn gzip_body_is_decoded_before_counting() {
    let plain = vec![b'x'; 3000];
    let gz = gzip_stored(&plain);
    let up = raw_upstream("127.0.0.1", move |mut s, head| {
        let gz = gz.clone();
        async move {
            assert!(head.to_ascii_lowercase().contains("accept-encoding:"), "{head}");
            let hdr = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                gz.len()
            );
            s.write_all(hdr.as_bytes()).await?;
            s.write_all(&gz).await
        }
    })
    .await;
    let got = fetcher().fetch(&up.url("/"), 4096).await.expect("fetch");
    assert_eq!(&got.bytes[..], &plain[..]);
    // The decoded size, not the encoded one, is what the limit applies to.
    let err = fetcher().fetch(&up.url("/"), 2999).await.expect_err("over");
    assert_eq!(err, FetchError::TooLarge { limit: 2999 });
}

#[tokio::test]
async fn request_carries_our_headers_and_no_credentials() {
    let up = raw_upstream("127.0.0.1", |mut s, _| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=b\r\n\r\nok")
            .await
    })
    .await;
    let mut url = up.url("/x.jpg#frag");
    url.set_username("user").expect("user");
    url.set_password(Some("secret")).expect("password");
    let fetcher = fetcher();
    fetcher.fetch(&url, 16).await.expect("fetch");
    // A second request must not echo the cookie back: there is no cookie store.
    fetcher.fetch(&up.url("/y.jpg"), 16).await.expect("fetch");
    let heads = up.heads();
    assert_eq!(heads.len(), 2);
    for head in &heads {
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("user-agent: medialink/0.1\r\n"), "{head}");
        assert!(
            lower.contains("accept: image/*, audio/*;q=0.9, */*;q=0.1\r\n"),
            "{head}"
        );
        assert!(!lower.contains("authorization"), "{head}");
        assert!(!lower.contains("cookie"), "{head}");
        assert!(
            !lower.contains("secret") && !lower.contains("frag"),
            "{head}"
        );
    }
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let url = url::Url::parse(&format!("http://{addr}/")).expect("url");
    let err = fetcher().fetch(&url, 16).await.expect_err("refused");
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err:?}");
}
