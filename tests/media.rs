//! The `/m/` proxy through the real binary against fake upstreams on loopback:
//! DESIGN §3, §4, §5; issue "Verified media proxy".

mod common;

use std::time::{Duration, Instant};

use common::upstream::{Reply, Upstream, fixture};
use common::{Server, assert_problem, create, http};
use serde_json::json;

const ALLOW_LOOPBACK: &[&str] = &["--allow-upstream-cidr", "127.0.0.1/32"];

fn any_profile() -> Server {
    Server::start(&["--allow-upstream-cidr", "127.0.0.1/32", "--profile", "any"])
}

/// Creates a link to `url` and returns its id.
async fn link(s: &Server, url: &str, kind: &str) -> String {
    let (st, b) = create(s, json!({"url": url, "kind": kind, "convert": false})).await;
    assert!(st == 201 || st == 200, "create {url}: {st} {b}");
    b["id"].as_str().unwrap().to_owned()
}

async fn get(s: &Server, path: &str) -> reqwest::Response {
    http().get(s.url(path)).send().await.unwrap()
}

#[tokio::test]
async fn every_sample_is_served_byte_exact_with_its_sniffed_type_whatever_the_upstream_says() {
    let up = Upstream::start().await;
    let s = any_profile();
    let cases = [
        ("photo.jpg", "image/jpeg"),
        ("photo.png", "image/png"),
        ("photo.gif", "image/gif"),
        ("photo.webp", "image/webp"),
        ("voice.ogg", "audio/ogg; codecs=opus"),
        ("voice-vorbis.ogg", "audio/ogg"),
        ("voice.mp3", "audio/mpeg"),
        ("voice.m4a", "audio/mp4"),
        ("voice.aac", "audio/aac"),
        ("voice.amr", "audio/amr"),
        ("voice.wav", "audio/wav"),
    ];
    for (i, (name, mime)) in cases.iter().enumerate() {
        let lie = if i % 2 == 0 {
            "text/plain"
        } else {
            "application/octet-stream"
        };
        // No extension in the upstream path: the type can only come from the bytes.
        up.set(&format!("/blob{i}"), Reply::Bytes(200, lie, fixture(name)));
        let id = link(&s, &up.url(&format!("/blob{i}")), "any").await;
        let res = get(&s, &format!("/m/{id}")).await;
        assert_eq!(res.status(), 200, "{name}");
        assert_eq!(res.headers()["content-type"], *mime, "{name}");
        assert_eq!(
            res.bytes().await.unwrap().as_ref(),
            fixture(name).as_slice(),
            "{name} byte-exact"
        );
    }
}

#[tokio::test]
async fn responses_carry_exactly_the_designed_headers_and_no_upstream_cookie() {
    let up = Upstream::start().await;
    up.set(
        "/a.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    let s = Server::start(ALLOW_LOOPBACK);
    let id = link(&s, &up.url("/a.jpg"), "image").await;
    let res = get(&s, &format!("/m/{id}.jpg")).await;
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["content-type"], "image/jpeg");
    assert_eq!(
        h["content-length"],
        fixture("photo.jpg").len().to_string().as_str()
    );
    assert!(h["etag"].to_str().unwrap().starts_with('"'), "strong ETag");
    assert_eq!(h["cache-control"], "public, max-age=86400");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["content-security-policy"], "default-src 'none'; sandbox");
    assert!(
        h.get("set-cookie").is_none(),
        "upstream Set-Cookie never passed back"
    );
    let allowed = [
        "content-type",
        "content-length",
        "etag",
        "cache-control",
        "accept-ranges",
        "x-content-type-options",
        "content-security-policy",
        "x-request-id",
        "date",
    ];
    for name in h.keys() {
        assert!(allowed.contains(&name.as_str()), "unexpected header {name}");
    }
    // The upstream saw no credentials or cookies from us.
    for seen in up.headers_seen() {
        assert!(seen.get("cookie").is_none() && seen.get("authorization").is_none());
    }
}

#[tokio::test]
async fn html_svg_json_empty_and_truncated_bodies_never_reach_the_client() {
    let up = Upstream::start().await;
    let s = any_profile();
    let jpg = fixture("photo.jpg");
    let cases: Vec<(&str, &'static str, Vec<u8>)> = vec![
        (
            "html",
            "image/jpeg",
            b"<!DOCTYPE html><html><body>Sign in to view</body></html>".to_vec(),
        ),
        (
            "svg",
            "image/svg+xml",
            br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#.to_vec(),
        ),
        ("json", "image/png", br#"{"error": "expired"}"#.to_vec()),
        ("empty", "image/jpeg", Vec::new()),
        ("truncated", "image/jpeg", jpg[..jpg.len() / 2].to_vec()),
    ];
    for (name, ct, body) in cases {
        up.set(&format!("/{name}.jpg"), Reply::Bytes(200, ct, body.clone()));
        let id = link(&s, &up.url(&format!("/{name}.jpg")), "any").await;
        let res = get(&s, &format!("/m/{id}.jpg")).await;
        let st = res.status().as_u16();
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
        let text = res.text().await.unwrap();
        let b: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_problem(st, &b, 502, "upstream_not_media");
        assert!(
            !text.contains("Sign in") && !text.contains("<script>"),
            "{name}: upstream bytes leaked"
        );
    }
}

/// A JPEG of about `size` bytes: photo.jpg with comment segments after SOI.
fn big_jpeg(size: usize) -> Vec<u8> {
    let src = fixture("photo.jpg");
    let mut out = vec![0xFF, 0xD8];
    while out.len() + src.len() < size {
        out.extend_from_slice(&[0xFF, 0xFE, 0xFF, 0xFF]);
        out.extend(std::iter::repeat_n(b'c', 0xFFFF - 2));
    }
    out.extend_from_slice(&src[2..]);
    out
}

#[tokio::test]
async fn a_seven_megabyte_jpeg_is_too_large_for_whatsapp_and_audio_is_refused_behind_an_image_link()
{
    let up = Upstream::start().await;
    up.set(
        "/big.jpg",
        Reply::Bytes(200, "image/jpeg", big_jpeg(7 * 1024 * 1024)),
    );
    up.set(
        "/voice",
        Reply::Bytes(200, "image/jpeg", fixture("voice.mp3")),
    );
    let s = Server::start(ALLOW_LOOPBACK);
    let id = link(&s, &up.url("/big.jpg"), "any").await;
    let res = get(&s, &format!("/m/{id}.jpg")).await;
    let st = res.status().as_u16();
    assert_problem(st, &res.json().await.unwrap(), 502, "upstream_too_large");

    let id = link(&s, &up.url("/voice"), "image").await;
    let res = get(&s, &format!("/m/{id}")).await;
    let st = res.status().as_u16();
    assert_problem(st, &res.json().await.unwrap(), 502, "media_not_accepted");
}

#[tokio::test]
async fn head_range_and_conditional_requests() {
    let up = Upstream::start().await;
    let body = fixture("photo.png");
    up.set("/p.png", Reply::Bytes(200, "image/png", body.clone()));
    let s = Server::start(ALLOW_LOOPBACK);
    let id = link(&s, &up.url("/p.png"), "image").await;
    let path = format!("/m/{id}.png");

    let g = get(&s, &path).await;
    let gh = g.headers().clone();
    let h = http().head(s.url(&path)).send().await.unwrap();
    assert_eq!(h.status(), 200);
    for name in [
        "content-type",
        "content-length",
        "etag",
        "cache-control",
        "accept-ranges",
    ] {
        assert_eq!(h.headers()[name], gh[name], "HEAD {name}");
    }
    assert!(h.bytes().await.unwrap().is_empty());

    let r = http()
        .get(s.url(&path))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 0-99/{}", body.len()).as_str()
    );
    assert_eq!(r.headers()["content-length"], "100");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..100]);

    let r = http()
        .get(s.url(&path))
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[body.len() - 10..]);

    let r = http()
        .get(s.url(&path))
        .header("range", format!("bytes={}-", body.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{}", body.len()).as_str()
    );

    let etag = gh["etag"].clone();
    let r = http()
        .get(s.url(&path))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag);
    let r = http()
        .get(s.url(&path))
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn forty_cold_requests_make_one_upstream_fetch_and_warm_ones_none() {
    let up = Upstream::start().await;
    up.set(
        "/slow.jpg",
        Reply::Slow(
            400,
            Box::new(Reply::Bytes(200, "image/jpeg", fixture("photo.jpg"))),
        ),
    );
    let s = Server::start(ALLOW_LOOPBACK);
    let id = link(&s, &up.url("/slow.jpg"), "image").await;
    let url = s.url(&format!("/m/{id}.jpg"));
    let client = http();
    let cold: Vec<_> = (0..40).map(|_| client.get(&url).send()).collect();
    for r in futures_util::future::join_all(cold).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), fixture("photo.jpg").len());
    }
    assert_eq!(up.hits("/slow.jpg"), 1, "single flight");
    let warm: Vec<_> = (0..20).map(|_| client.get(&url).send()).collect();
    for r in futures_util::future::join_all(warm).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    assert_eq!(
        up.hits("/slow.jpg"),
        1,
        "warm hits never touch the upstream"
    );
    // An unknown id answers 404 and fetches nothing.
    let before = up.total_hits();
    assert_eq!(get(&s, "/m/AAAAAAAAAA.jpg").await.status(), 404);
    assert_eq!(get(&s, "/m/..%2F..%2Fetc%2Fpasswd").await.status(), 404);
    assert_eq!(up.total_hits(), before);
}

#[tokio::test]
async fn cut_upstream_body_is_502_and_poisons_nothing() {
    let up = Upstream::start().await;
    let jpg = fixture("photo.jpg");
    up.set(
        "/cut.jpg",
        Reply::Cut {
            content_type: "image/jpeg",
            body: jpg.clone(),
            send: 1000,
        },
    );
    let s = Server::start(ALLOW_LOOPBACK);
    let id = link(&s, &up.url("/cut.jpg"), "image").await;
    let res = get(&s, &format!("/m/{id}.jpg")).await;
    let st = res.status().as_u16();
    assert_problem(st, &res.json().await.unwrap(), 502, "upstream_unreachable");
    up.set("/cut.jpg", Reply::Bytes(200, "image/jpeg", jpg.clone()));
    let res = get(&s, &format!("/m/{id}.jpg")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), jpg.as_slice());
}

#[tokio::test]
async fn stalled_upstream_is_504_within_the_timeout_while_other_ids_are_served() {
    let up = Upstream::start().await;
    up.set("/stall.jpg", Reply::Stall { secs: 30 });
    up.set(
        "/ok.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    let s = Server::start(&[
        "--allow-upstream-cidr",
        "127.0.0.1/32",
        "--upstream-timeout",
        "2s",
    ]);
    let stalled = link(&s, &up.url("/stall.jpg"), "image").await;
    let ok = link(&s, &up.url("/ok.jpg"), "image").await;
    let started = Instant::now();
    let slow = tokio::spawn({
        let url = s.url(&format!("/m/{stalled}.jpg"));
        async move { http().get(url).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let r = get(&s, &format!("/m/{ok}.jpg")).await;
        assert_eq!(r.status(), 200, "other ids keep being served");
    }
    let res = slow.await.unwrap();
    let took = started.elapsed();
    let st = res.status().as_u16();
    assert_problem(st, &res.json().await.unwrap(), 504, "upstream_timeout");
    assert!(
        took < Duration::from_secs(6),
        "504 within the timeout, took {took:?}"
    );
}

#[tokio::test]
async fn private_addresses_in_every_spelling_are_refused_at_creation() {
    let s = Server::start(&[]);
    let refused = [
        "http://127.0.0.1/a.jpg",
        "http://localhost/a.jpg",
        "http://0177.0.0.1/a.jpg",
        "http://2130706433/a.jpg",
        "http://0x7f000001/a.jpg",
        "http://127.1/a.jpg",
        "http://0/a.jpg",
        "http://0.0.0.0/a.jpg",
        "http://[::1]/a.jpg",
        "http://[::]/a.jpg",
        "http://[::ffff:127.0.0.1]/a.jpg",
        "http://[::ffff:7f00:1]/a.jpg",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data",
        "http://10.0.0.1/a.jpg",
        "http://172.16.5.4/a.jpg",
        "http://192.168.1.1/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/a.jpg",
        "http://100.100.100.200/a.jpg",
        "http://[fe80::1]/a.jpg",
        "http://[fd00:ec2::254]/a.jpg",
        "http://[fc00::1]/a.jpg",
        "http://[64:ff9b::7f00:1]/a.jpg",
        "https://224.0.0.1/a.jpg",
        "http://198.18.0.1/a.jpg",
        "http://192.0.2.1/a.jpg",
    ];
    for u in refused {
        let (st, b) = create(&s, json!({"url": u})).await;
        assert_problem(st, &b, 400, "forbidden_upstream");
    }
    // A public literal is accepted at creation (never fetched here).
    let (st, _) = create(&s, json!({"url": "http://93.184.216.34/a.jpg"})).await;
    assert_eq!(st, 201);
}

#[tokio::test]
async fn a_redirect_to_a_refused_address_is_502_and_never_connected() {
    let up = Upstream::start().await;
    let inner = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let inner_port = inner.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acc2 = accepted.clone();
    tokio::spawn(async move {
        while inner.accept().await.is_ok() {
            acc2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    up.set(
        "/to-127-2",
        Reply::Redirect(format!("http://127.0.0.2:{inner_port}/x.jpg")),
    );
    up.set(
        "/to-metadata",
        Reply::Redirect("http://169.254.169.254/latest/meta-data/".into()),
    );
    up.set("/loop", Reply::Redirect(up.url("/loop")));
    let s = Server::start(ALLOW_LOOPBACK);
    for (path, code) in [
        ("/to-127-2", "forbidden_upstream"),
        ("/to-metadata", "forbidden_upstream"),
        ("/loop", "upstream_unreachable"),
    ] {
        let id = link(&s, &up.url(path), "image").await;
        let res = get(&s, &format!("/m/{id}")).await;
        let st = res.status().as_u16();
        assert_problem(st, &res.json().await.unwrap(), 502, code);
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "127.0.0.2 never connected to"
    );
    assert!(up.hits("/loop") <= 6, "the loop stopped after 5 hops");
}

#[tokio::test]
async fn verify_on_create_fetches_now_and_answers_422_with_the_code() {
    let up = Upstream::start().await;
    up.set(
        "/download",
        Reply::Bytes(200, "application/octet-stream", fixture("photo.png")),
    );
    up.set(
        "/login",
        Reply::Bytes(
            200,
            "image/jpeg",
            b"<html><body>login</body></html>".to_vec(),
        ),
    );
    up.set(
        "/voice.mp3",
        Reply::Bytes(200, "audio/mpeg", fixture("voice.mp3")),
    );
    let s = Server::start(ALLOW_LOOPBACK);

    let (st, b) = create(
        &s,
        json!({"url": up.url("/download"), "kind": "image", "verify": true}),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["media"]["content_type"], "image/png");
    assert_eq!(b["media"]["bytes"], fixture("photo.png").len());
    let short = b["short_url"].as_str().unwrap();
    assert!(
        short.ends_with(".png"),
        "extension from the sniffed type: {short}"
    );
    // Verification warmed the cache: serving needs no second upstream fetch.
    let hits = up.hits("/download");
    let path = short.trim_start_matches(&s.base);
    assert_eq!(get(&s, path).await.status(), 200);
    assert_eq!(up.hits("/download"), hits);

    let (st, b) = create(
        &s,
        json!({"url": up.url("/login"), "kind": "image", "verify": true}),
    )
    .await;
    assert_problem(st, &b, 422, "upstream_not_media");
    let (st, b) = create(
        &s,
        json!({"url": up.url("/voice.mp3"), "kind": "image", "verify": true}),
    )
    .await;
    assert_problem(st, &b, 422, "media_not_accepted");
    let (st, b) = create(&s, json!({"url": up.url("/missing"), "verify": true})).await;
    assert_problem(st, &b, 422, "upstream_status");
}

#[tokio::test]
async fn content_encoding_is_decoded_before_sniffing() {
    let up = Upstream::start().await;
    up.set("/gz", Reply::Gzip("image/jpeg", fixture("photo.jpg")));
    let s = Server::start(ALLOW_LOOPBACK);
    let id = link(&s, &up.url("/gz"), "image").await;
    let res = get(&s, &format!("/m/{id}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        fixture("photo.jpg").as_slice()
    );
}

/// The unnamed files (`O_TMPFILE`, shown as "(deleted)") the server holds open.
#[cfg(target_os = "linux")]
fn cache_files(s: &Server) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let target = std::fs::read_link(&p).ok()?;
            let t = target.to_string_lossy();
            (t.contains("(deleted)") && !t.contains("medialink.db"))
                .then(|| std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0))
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn cached_media_is_sent_from_files_byte_exact_and_the_files_stay_within_cache_bytes() {
    let up = Upstream::start().await;
    // Eight distinct ~35 KB JPEGs (bytes after EOI keep them whole) under a cache
    // that holds three.
    let photo = fixture("photo.jpg");
    let s = Server::start(&[
        "--allow-upstream-cidr",
        "127.0.0.1/32",
        "--cache-bytes",
        &(3 * photo.len() + 3_000).to_string(),
    ]);
    let mut ids = Vec::new();
    for i in 0..8u8 {
        let mut body = photo.clone();
        body.extend_from_slice(&[b'#', i]);
        up.set(&format!("/p{i}.jpg"), Reply::Bytes(200, "image/jpeg", body));
        ids.push(link(&s, &up.url(&format!("/p{i}.jpg")), "image").await);
    }
    for (i, id) in ids.iter().enumerate() {
        let mut want = photo.clone();
        want.extend_from_slice(&[b'#', i as u8]);
        // Cold (fetched, then cached into a file), then warm (sent with sendfile).
        for _ in 0..2 {
            let res = get(&s, &format!("/m/{id}.jpg")).await;
            assert_eq!(res.status(), 200);
            assert_eq!(
                res.bytes().await.unwrap().as_ref(),
                want.as_slice(),
                "photo {i}"
            );
        }
        let res = http()
            .get(s.url(&format!("/m/{id}.jpg")))
            .header("range", "bytes=1000-20999")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.bytes().await.unwrap().as_ref(), &want[1000..21000]);
        // An entry the cache did not admit lives on in the answer that carried it,
        // until the server's side of that connection lets go: wait for that.
        let t0 = std::time::Instant::now();
        while cache_files(&s).len() > 3 && t0.elapsed() < std::time::Duration::from_secs(5) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let files = cache_files(&s);
        assert!(
            !files.is_empty() && files.len() <= 3,
            "after photo {i}: cache files {files:?}"
        );
        assert!(files.iter().all(|&n| n == want.len() as u64), "{files:?}");
    }
}
