//! What an operator runs the service with (issue 10): `/metrics` after traffic, on the
//! main listener or its own; the OpenAPI document; the web page's headers; shell
//! completions and the man page.

mod common;

use common::gateway::{self as fake, FakeGateway};
use common::upstream::{Reply, Upstream, fixture};
use common::{Server, TOKEN, http};
use serde_json::json;

/// The value of the first sample line starting with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn metrics_after_a_short_load_show_every_family_with_the_traffic_it_saw() {
    let gw = FakeGateway::start().await;
    let up = Upstream::start().await;
    up.set(
        "/p.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    up.set(
        "/page",
        Reply::Bytes(200, "image/jpeg", b"<html></html>".to_vec()),
    );
    let base = gw.base_url().to_string();
    let s = Server::start_env(
        &["--allow-upstream-cidr", "127.0.0.1/32"],
        &[
            ("CHATFLOW_BASE_URL", base.as_str()),
            ("CHATFLOW_TOKEN", fake::TOKEN),
            ("CHATFLOW_INSTANCE_ID", fake::INSTANCE_ID),
        ],
    );
    let (_, a) = common::create(&s, json!({"url": up.url("/p.jpg"), "kind": "image"})).await;
    let (_, b) = common::create(&s, json!({"url": up.url("/page")})).await;
    let short = a["short_url"].as_str().unwrap();
    for _ in 0..20 {
        assert_eq!(http().get(short).send().await.unwrap().status(), 200);
    }
    let r = http()
        .get(b["short_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let r = http()
        .post(s.url("/api/v1/send"))
        .bearer_auth(TOKEN)
        .json(&json!({"to": "77015705555", "kind": "image", "url": up.url("/p.jpg")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let res = http().get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    let must = |prefix: &str| {
        let v = sample(&text, prefix).unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        assert!(v > 0.0, "{prefix} is {v}\n{text}");
        v
    };
    assert!(must(r#"medialink_http_requests_total{route="/m/{file}",status="200"}"#) >= 20.0);
    must(r#"medialink_http_requests_total{route="/m/{file}",status="502"}"#);
    must(r#"medialink_http_requests_total{route="/api/v1/links",status="201"}"#);
    assert!(must("medialink_cache_hits_total") >= 19.0);
    must("medialink_cache_misses_total");
    must("medialink_cache_bytes");
    must("medialink_media_bytes_served_total");
    must(r#"medialink_upstream_fetch_seconds_bucket{le="+Inf"}"#);
    must("medialink_upstream_fetch_seconds_count");
    must(r#"medialink_upstream_errors_total{code="upstream_not_media"}"#);
    must(r#"medialink_store_seconds_count{op="put"}"#);
    must(r#"medialink_store_seconds_count{op="set_media"}"#);
    must(r#"medialink_gateway_sends_total{outcome="image"}"#);
    must(r#"medialink_http_request_seconds_count{route="/m/{file}"}"#);
    // Raw paths never become labels.
    assert!(!text.contains(a["id"].as_str().unwrap()), "{text}");
}

#[tokio::test]
async fn metrics_can_live_on_their_own_listener() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let s = Server::start(&["--metrics-listen", &addr]);
    let r = http().get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404, "not on the main listener");
    let r = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("medialink_http_requests_total"), "{text}");
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_describes_the_api() {
    let s = Server::start(&[]);
    let r = http()
        .get(s.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["openapi"], "3.1.0");
    assert!(v["paths"]["/api/v1/links/{id}/events"]["get"].is_object());
    assert!(v["components"]["securitySchemes"]["bearer"].is_object());
    assert!(v["components"]["schemas"]["Verdict"].is_object());
}

#[tokio::test]
async fn the_page_is_html_with_a_nonce_csp_and_no_outside_resources() {
    let s = Server::start(&[]);
    let r = http().get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|n| n.split('\'').next())
        .unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(html.contains(&format!("<script nonce=\"{nonce}\">")));
    // Nothing loaded from elsewhere, and no HTML built from data.
    assert!(!html.contains("src=\"http") && !html.contains("<link") && !html.contains("innerHTML"));
    let again = http().get(s.url("/")).send().await.unwrap();
    let csp2 = again.headers()["content-security-policy"].to_str().unwrap();
    assert_ne!(csp, csp2, "a fresh nonce per response");
}

#[tokio::test]
async fn completions_and_the_man_page_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(common::bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("inspect") && text.contains("check"),
            "{shell}"
        );
    }
    let out = std::process::Command::new(common::bin())
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success());
    let roff = String::from_utf8_lossy(&out.stdout);
    assert!(
        roff.contains(".TH medialink") && roff.contains("inspect"),
        "{roff}"
    );
}

/// One process writes a SQLite store: `import` (or a second server) on the data dir of
/// a running server stops with a one-line reason and changes nothing, while `export`
/// (which only reads) runs beside it; once the server has stopped, `import` runs.
#[tokio::test]
async fn a_second_process_cannot_write_a_store_a_server_is_using() {
    let mut s = Server::start(&[]);
    let dir = s.data_dir.clone();
    let file = dir.join("in.jsonl");
    std::fs::write(
        &file,
        "{\"id\":\"AAAAAAAAAA\",\"url\":\"https://127.0.0.1/a.jpg\",\"kind\":\"image\",\"created_at\":1700000000}\n",
    )
    .unwrap();
    let import = || {
        std::process::Command::new(common::bin())
            .args(["import", "--data-dir"])
            .arg(&dir)
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = import();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "import ran beside the server: {err}");
    assert!(
        err.contains("in use by another medialink process") && err.trim().lines().count() == 1,
        "{err}"
    );
    let (st, _) = common::get_json(&s, "/api/v1/links/AAAAAAAAAA").await;
    assert_eq!(st, 404, "nothing was imported");
    // Commands that only read run beside the server.
    let (st, made) = common::create(&s, json!({"url": "https://cdn.example.com/b.jpg"})).await;
    assert_eq!(st, 201);
    let out = std::process::Command::new(common::bin())
        .args(["export", "--data-dir"])
        .arg(&dir)
        .arg(dir.join("out.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
    assert!(
        exported.contains(made["id"].as_str().unwrap()),
        "{exported}"
    );

    s.kill();
    let out = import();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
