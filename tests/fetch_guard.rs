//! The SSRF guard wired into the fetcher (DESIGN §5): literal hosts, every redirect
//! hop and every DNS answer are checked, and a refused address is never connected to.

mod common;

use std::time::{Duration, Instant};

use common::raw::{cfg, counting_listener, fetcher_with_names, path_of, raw_upstream};
use medialink::fetch::{FetchError, Fetcher};
use tokio::io::AsyncWriteExt;

fn redirect_to(location: String) -> Vec<u8> {
    format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

/// An upstream on 127.0.0.1 that redirects every request to `location`.
async fn redirector(location: String) -> common::raw::Upstream {
    raw_upstream("127.0.0.1", move |mut s, _| {
        let body = redirect_to(location.clone());
        async move { s.write_all(&body).await }
    })
    .await
}

fn assert_forbidden(err: &FetchError, needle: &str) {
    match err {
        FetchError::Forbidden { reason } => assert!(reason.contains(needle), "{reason}"),
        other => panic!("expected Forbidden ({needle}), got {other:?}"),
    }
    assert_eq!(err.code(), "forbidden_upstream");
}

async fn settle() {
    // Give a connection that should not exist time to show up in the count.
    tokio::time::sleep(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn literal_refused_host_is_never_connected() {
    let target = counting_listener("127.0.0.2").await;
    let fetcher = Fetcher::new(cfg()).expect("fetcher");
    let err = fetcher
        .fetch(&target.url("/"), 16)
        .await
        .expect_err("refused");
    assert_forbidden(&err, "loopback");
    let mapped = url::Url::parse(&format!(
        "http://[::ffff:127.0.0.2]:{}/",
        target.addr.port()
    ))
    .expect("url");
    assert_forbidden(
        &fetcher.fetch(&mapped, 16).await.expect_err("refused"),
        "loopback",
    );
    settle().await;
    assert_eq!(target.accepted(), 0);
}

#[tokio::test]
async fn without_allow_rules_loopback_is_refused() {
    let up = counting_listener("127.0.0.1").await;
    let mut config = cfg();
    config.allow_cidrs.clear();
    let err = Fetcher::new(config)
        .expect("fetcher")
        .fetch(&up.url("/"), 16)
        .await
        .expect_err("refused");
    assert_forbidden(&err, "loopback");
    settle().await;
    assert_eq!(up.accepted(), 0);
}

#[tokio::test]
async fn allow_private_lifts_the_guard() {
    let target = counting_listener("127.0.0.2").await;
    let mut config = cfg();
    config.allow_private = true;
    let got = Fetcher::new(config)
        .expect("fetcher")
        .fetch(&target.url("/"), 16)
        .await
        .expect("allowed");
    assert_eq!(&got.bytes[..], b"no");
}

#[tokio::test]
async fn redirect_to_other_loopback_is_forbidden_and_never_connected() {
    let target = counting_listener("127.0.0.2").await;
    let up = redirector(format!("http://127.0.0.2:{}/", target.addr.port())).await;
    let err = Fetcher::new(cfg())
        .expect("fetcher")
        .fetch(&up.url("/start"), 16)
        .await
        .expect_err("refused");
    assert_forbidden(&err, "127.0.0.2 refused: loopback");
    settle().await;
    assert_eq!(target.accepted(), 0);
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn redirect_odd_spelling_is_judged_by_meaning() {
    let target = counting_listener("127.0.0.2").await;
    // 0x7f000002 is 127.0.0.2.
    let up = redirector(format!("http://0x7f000002:{}/", target.addr.port())).await;
    let err = Fetcher::new(cfg())
        .expect("fetcher")
        .fetch(&up.url("/"), 16)
        .await
        .expect_err("refused");
    assert_forbidden(&err, "loopback");
    settle().await;
    assert_eq!(target.accepted(), 0);
}

#[tokio::test]
async fn redirect_to_cloud_metadata_is_forbidden_at_once() {
    let up = redirector("http://169.254.169.254/latest/meta-data/".into()).await;
    let started = Instant::now();
    let err = Fetcher::new(cfg())
        .expect("fetcher")
        .fetch(&up.url("/"), 16)
        .await
        .expect_err("refused");
    assert_forbidden(&err, "cloud metadata");
    // Refused before any connect attempt (which would run into connect_timeout).
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn redirect_to_ftp_is_refused() {
    let up = redirector("ftp://127.0.0.1/file.jpg".into()).await;
    let err = Fetcher::new(cfg())
        .expect("fetcher")
        .fetch(&up.url("/"), 16)
        .await
        .expect_err("refused");
    assert_forbidden(&err, "non-http(s) scheme");
}

#[tokio::test]
async fn redirect_with_credentials_is_refused() {
    let up = redirector("http://user:pw@127.0.0.1:9/".into()).await;
    let err = Fetcher::new(cfg())
        .expect("fetcher")
        .fetch(&up.url("/"), 16)
        .await
        .expect_err("refused");
    assert_forbidden(&err, "credentials");
}

/// Redirects /N to /N+1 until `/{stop}`, which answers 200.
async fn chain(stop: usize) -> common::raw::Upstream {
    raw_upstream("127.0.0.1", move |mut s, head| async move {
        let n: usize = path_of(&head).trim_start_matches('/').parse().unwrap_or(0);
        if n >= stop {
            return s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
                .await;
        }
        s.write_all(&redirect_to(format!("/{}", n + 1))).await
    })
    .await
}

#[tokio::test]
async fn redirect_loop_stops_after_five_hops() {
    let up = chain(usize::MAX).await;
    let err = Fetcher::new(cfg())
        .expect("fetcher")
        .fetch(&up.url("/0"), 16)
        .await
        .expect_err("loop");
    assert_eq!(err, FetchError::TooManyRedirects);
    assert_eq!(err.code(), "upstream_unreachable");
    assert!(err.to_string().contains("redirected more than 5"), "{err}");
    // The original request plus five followed hops; the sixth is refused.
    let paths: Vec<String> = up.heads().iter().map(|h| path_of(h)).collect();
    assert_eq!(paths, ["/0", "/1", "/2", "/3", "/4", "/5"]);
}

#[tokio::test]
async fn five_redirects_are_followed() {
    let up = chain(5).await;
    let got = Fetcher::new(cfg())
        .expect("fetcher")
        .fetch(&up.url("/0"), 16)
        .await
        .expect("five hops are allowed");
    assert_eq!(&got.bytes[..], b"done");
    assert_eq!(got.final_url, up.url("/5"));
}

#[tokio::test]
async fn name_resolving_to_refused_address_is_forbidden_at_fetch_and_creation() {
    let target = counting_listener("127.0.0.2").await;
    let fetcher = fetcher_with_names(&[("evil.test", "127.0.0.2")]);
    let url =
        url::Url::parse(&format!("http://evil.test:{}/a.jpg", target.addr.port())).expect("url");
    assert_forbidden(
        &fetcher.fetch(&url, 16).await.expect_err("fetch"),
        "evil.test",
    );
    assert_forbidden(
        &fetcher.check_at_creation(&url).await.expect_err("creation"),
        "loopback",
    );
    settle().await;
    assert_eq!(target.accepted(), 0);
}

#[tokio::test]
async fn redirect_to_name_resolving_to_refused_address_is_forbidden() {
    let target = counting_listener("127.0.0.2").await;
    let up = redirector(format!("http://evil.test:{}/", target.addr.port())).await;
    let fetcher = fetcher_with_names(&[("evil.test", "127.0.0.2")]);
    assert_forbidden(
        &fetcher.fetch(&up.url("/"), 16).await.expect_err("fetch"),
        "loopback",
    );
    settle().await;
    assert_eq!(target.accepted(), 0);
}

#[tokio::test]
async fn name_resolving_to_allowed_address_is_fetched() {
    let up = counting_listener("127.0.0.1").await;
    let fetcher = fetcher_with_names(&[("good.test", "127.0.0.1")]);
    let url = url::Url::parse(&format!("http://good.test:{}/", up.addr.port())).expect("url");
    fetcher.check_at_creation(&url).await.expect("creation");
    let got = fetcher.fetch(&url, 16).await.expect("fetch");
    assert_eq!(&got.bytes[..], b"no");
    let head = up.heads()[0].to_ascii_lowercase();
    assert!(head.contains("host: good.test:"), "{head}");
}

#[tokio::test]
async fn literal_refused_at_creation() {
    let fetcher = fetcher_with_names(&[]);
    for input in [
        "http://127.0.0.2/",
        "http://0177.0.0.2/",
        "http://[::ffff:127.0.0.2]/",
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://10.0.0.1/",
    ] {
        let url = url::Url::parse(input).expect("url");
        let err = fetcher.check_at_creation(&url).await.expect_err(input);
        assert_eq!(err.code(), "forbidden_upstream", "{input}");
    }
    let ok = url::Url::parse("https://8.8.8.8/a.jpg").expect("url");
    fetcher
        .check_at_creation(&ok)
        .await
        .expect("public literal");
}

#[tokio::test]
async fn unresolvable_name_is_accepted_at_creation_and_unreachable_at_fetch() {
    let fetcher = fetcher_with_names(&[]);
    let url = url::Url::parse("http://nowhere.test/a.jpg").expect("url");
    fetcher.check_at_creation(&url).await.expect("accepted");
    let err = fetcher.fetch(&url, 16).await.expect_err("no such name");
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn slow_resolver_is_accepted_at_creation_after_resolve_timeout() {
    let fetcher = fetcher_with_names(&[("slow.test", "127.0.0.2")]);
    let url = url::Url::parse("http://slow.test/a.jpg").expect("url");
    let started = Instant::now();
    fetcher.check_at_creation(&url).await.expect("accepted");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
}
