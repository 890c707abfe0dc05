//! The links API through the real binary: DESIGN §2 and §3, issue "Foundation".

mod common;

use common::{Server, TOKEN, assert_problem, create, get_json, http, signed_url};
use serde_json::json;

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[tokio::test]
async fn signed_url_gets_a_short_stable_id_and_comes_back_unchanged() {
    let s = Server::start(&["--public-url", "https://m.example.com/"]);
    let url = signed_url("https://cdn.example.com/media/photo.jpg", 1024);
    assert!(url.len() >= 1024);

    let (st, first) = create(&s, json!({"url": url, "kind": "image"})).await;
    assert_eq!(st, 201, "{first}");
    let id = first["id"].as_str().unwrap();
    assert_eq!(id.len(), 10);
    assert!(is_base62(id));
    assert_eq!(
        first["short_url"],
        format!("https://m.example.com/m/{id}.jpg")
    );
    assert_eq!(first["url"], url);
    assert_eq!(first["kind"], "image");

    let (st, again) = create(&s, json!({"url": url, "kind": "image"})).await;
    assert_eq!(st, 200);
    assert_eq!(again["id"], id);

    let (st, got) = get_json(&s, &format!("/api/v1/links/{id}")).await;
    assert_eq!(st, 200);
    assert_eq!(got["url"], url, "URL returned unchanged");
    let res = http().get(s.url("/healthz")).send().await.unwrap();
    assert!(res.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn equivalent_spellings_share_an_id_and_extensions_follow_the_path() {
    let s = Server::start(&[]);
    let (_, a) = create(
        &s,
        json!({"url": "HTTPS://CDN.Example.com:443/a/voice.OGG?x=1"}),
    )
    .await;
    let (st, b) = create(
        &s,
        json!({"url": "https://cdn.example.com/a/voice.OGG?x=1"}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(a["id"], b["id"]);
    assert!(a["short_url"].as_str().unwrap().ends_with(".ogg"));
    let (_, c) = create(&s, json!({"url": "https://cdn.example.com/download?id=7"})).await;
    let id = c["id"].as_str().unwrap();
    assert_eq!(c["short_url"], format!("{}/m/{id}", s.base));
}

#[tokio::test]
async fn bad_requests_are_problems_with_design_codes() {
    let s = Server::start(&[]);
    let c = http();
    let post = |auth: Option<&'static str>, body: Vec<u8>| {
        let mut r = c
            .post(s.url("/api/v1/links"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = auth {
            r = r.bearer_auth(t);
        }
        async move {
            let res = r.send().await.unwrap();
            let st = res.status().as_u16();
            assert_eq!(res.headers()["content-type"], "application/problem+json");
            (st, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let good = br#"{"url":"https://a.example/x.jpg"}"#.to_vec();
    let (st, b) = post(None, good.clone()).await;
    assert_problem(st, &b, 401, "unauthorized");
    let (st, b) = post(Some("wrong"), good.clone()).await;
    assert_problem(st, &b, 401, "unauthorized");
    let (st, b) = post(Some(TOKEN), br#"{"url":"not a url"}"#.to_vec()).await;
    assert_problem(st, &b, 400, "invalid_url");
    let (st, b) = post(
        Some(TOKEN),
        br#"{"url":"ftp://files.example/a.jpg"}"#.to_vec(),
    )
    .await;
    assert_problem(st, &b, 400, "unsupported_scheme");
    let long = format!("https://a.example/{}", "x".repeat(17 * 1024));
    let (st, b) = post(
        Some(TOKEN),
        serde_json::to_vec(&json!({"url": long})).unwrap(),
    )
    .await;
    assert_problem(st, &b, 413, "url_too_long");
    let (st, b) = post(Some(TOKEN), br#"{"url": "https://a.example/"#.to_vec()).await;
    assert_problem(st, &b, 400, "invalid_json");
    let (st, b) = post(
        Some(TOKEN),
        br#"{"url": "https://a.example/", "verfy": true}"#.to_vec(),
    )
    .await;
    assert_problem(st, &b, 400, "invalid_json");
    let big = format!(
        r#"{{"url": "https://a.example/", "pad": "{}"}}"#,
        "p".repeat(2 * 1024 * 1024)
    );
    let (st, b) = post(Some(TOKEN), big.into_bytes()).await;
    assert_problem(st, &b, 413, "payload_too_large");
    let (st, b) = post(
        Some(TOKEN),
        br#"{"url":"https://u:p@a.example/x.jpg"}"#.to_vec(),
    )
    .await;
    assert_problem(st, &b, 400, "invalid_url");
    // The server is still fine after all that.
    assert_eq!(
        http().get(s.url("/readyz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn arrays_answer_per_item_and_207_when_mixed() {
    let s = Server::start(&[]);
    let items: Vec<_> = (0..1000)
        .map(|i| json!({"url": format!("https://cdn.example.com/p/{i}.jpg")}))
        .collect();
    let (st, all) = create(&s, json!(items)).await;
    assert_eq!(st, 201);
    assert_eq!(all.as_array().unwrap().len(), 1000);
    let (st, again) = create(&s, json!(items)).await;
    assert_eq!(st, 200);
    assert_eq!(all, again.clone(), "same ids, same records");
    let (st, mixed) = create(
        &s,
        json!([{"url": "https://cdn.example.com/p/1.jpg"}, {"url": "gopher://x"}]),
    )
    .await;
    assert_eq!(st, 207);
    assert_eq!(mixed[0]["id"], all[1]["id"]);
    assert_eq!(mixed[1]["code"], "unsupported_scheme");
    let too_many: Vec<_> = (0..1001)
        .map(|i| json!({"url": format!("https://c.example/{i}")}))
        .collect();
    let (st, b) = create(&s, json!(too_many)).await;
    assert_problem(st, &b, 413, "payload_too_large");
}

#[tokio::test]
async fn delete_then_everything_answers_404() {
    let s = Server::start(&[]);
    let (_, link) = create(&s, json!({"url": "https://cdn.example.com/del.jpg"})).await;
    let id = link["id"].as_str().unwrap();
    let res = http()
        .delete(s.url(&format!("/api/v1/links/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (st, b) = get_json(&s, &format!("/api/v1/links/{id}")).await;
    assert_problem(st, &b, 404, "not_found");
    let res = http()
        .get(s.url(&format!("/m/{id}.jpg")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = http()
        .delete(s.url(&format!("/api/v1/links/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn concurrent_creates_of_one_url_give_one_id() {
    let s = Server::start(&[]);
    let (ids, created) = common::create_same_url_concurrently(
        std::slice::from_ref(&s.base),
        "https://cdn.example.com/race.jpg",
        32,
    )
    .await;
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1, "exactly one 201, the rest 200");
}

/// Every link that got a 201 survives a SIGKILL mid-load, with the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_concurrent_creates_loses_no_acknowledged_link() {
    let mut s = Server::start(&[]);
    let load = common::CreateLoad::start(std::slice::from_ref(&s.base), 8);
    // Kill mid-load once enough links were acknowledged.
    load.wait_for(200).await;
    s.kill();
    let acked = load.stop().await;
    assert!(
        acked.len() > 50,
        "the load made links before the kill ({})",
        acked.len()
    );

    let s2 = s.restart();
    for (url, id) in &acked {
        let (st, got) = get_json(&s2, &format!("/api/v1/links/{id}")).await;
        assert_eq!(st, 200, "acknowledged link {id} lost after SIGKILL");
        assert_eq!(&got["url"], url);
    }
    for (url, id) in acked.iter().step_by(7) {
        let (st, again) = create(&s2, json!({"url": url})).await;
        assert_eq!(st, 200);
        assert_eq!(&again["id"], id, "same URL, same id after restart");
    }
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    let mut s = Server::start(&[]);
    let (st, _) = create(&s, json!({"url": "https://cdn.example.com/a.jpg"})).await;
    assert_eq!(st, 201);
    let status = s.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(s.log().contains("medialink stopped"));
}

#[test]
fn shorten_on_the_local_store_prints_the_short_url_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |url: &str| {
        std::process::Command::new(common::bin())
            .args(["shorten", url, "--data-dir"])
            .arg(tmp.path())
            .args(["--public-url", "https://m.example.com"])
            .output()
            .unwrap()
    };
    let a = run("https://cdn.example.com/x.png?sig=1");
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let line = String::from_utf8(a.stdout).unwrap();
    assert!(
        line.starts_with("https://m.example.com/m/") && line.trim_end().ends_with(".png"),
        "{line}"
    );
    let b = run("https://cdn.example.com/x.png?sig=1");
    assert_eq!(String::from_utf8(b.stdout).unwrap(), line);
    let bad = run("ftp://x.example/");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
}

#[test]
fn port_env_sets_the_listener_like_hosting_platforms_do() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Server::spawn(
        vec![
            "serve".into(),
            "--data-dir".into(),
            tmp.path().display().to_string(),
        ],
        tmp.path().to_owned(),
        &[("PORT", &port.to_string())],
    );
    assert_eq!(s.addr.port(), port);
    assert!(s.addr.ip().is_unspecified());
}
