//! The delivery trace through the real binary (issue 10): after a `send image` through
//! the fake gateway, `medialink inspect ID` and `GET /api/v1/links/{id}/events` show
//! the gateway's fetch of the short URL (status, bytes, user agent) and its answer.

mod common;

use std::time::Duration;

use common::gateway::{self as fake, FakeGateway};
use common::upstream::{Reply, Upstream, fixture};
use common::{Server, TOKEN, get_json, http};
use serde_json::{Value, json};

async fn setup() -> (FakeGateway, Upstream, Server) {
    let gw = FakeGateway::start().await;
    let up = Upstream::start().await;
    let base = gw.base_url().to_string();
    let s = Server::start_env(
        &["--allow-upstream-cidr", "127.0.0.1/32"],
        &[
            ("CHATFLOW_BASE_URL", base.as_str()),
            ("CHATFLOW_TOKEN", fake::TOKEN),
            ("CHATFLOW_INSTANCE_ID", fake::INSTANCE_ID),
        ],
    );
    (gw, up, s)
}

async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = tokio::process::Command::new(common::bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("MEDIALINK_SERVER")
        .env_remove("MEDIALINK_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn id_of(short_url: &str) -> String {
    let file = short_url.rsplit('/').next().unwrap();
    file.split('.').next().unwrap().to_owned()
}

fn events_of(v: &Value) -> Vec<Value> {
    v["trace"]["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_cli_send_shows_the_gateways_fetch_and_answer_in_inspect_and_the_events_endpoint() {
    let (gw, up, s) = setup().await;
    let photo = fixture("photo.jpg");
    up.set("/p.jpg", Reply::Bytes(200, "image/jpeg", photo.clone()));
    let gw_base = gw.base_url().to_string();
    let (code, out, err) = run(
        &[
            "send",
            "image",
            "--to",
            "+7 701 570 55 55",
            "--url",
            &up.url("/p.jpg"),
            "--server",
            &s.base,
            "--token",
            TOKEN,
        ],
        &[
            ("CHATFLOW_BASE_URL", gw_base.as_str()),
            ("CHATFLOW_TOKEN", fake::TOKEN),
            ("CHATFLOW_INSTANCE_ID", fake::INSTANCE_ID),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let outcome: Value = serde_json::from_str(out.trim()).unwrap();
    let id = id_of(outcome["short_url"].as_str().unwrap());
    assert_eq!(gw.calls(), 1);

    // The endpoint merges what is in memory with the store: no wait needed.
    let (st, v) = get_json(&s, &format!("/api/v1/links/{id}/events")).await;
    assert_eq!(st, 200, "{v}");
    let events = events_of(&v);
    let fetch = events
        .iter()
        .find(|e| e["type"] == "fetch" && e["client"] == "gateway")
        .unwrap_or_else(|| panic!("no gateway fetch in {v}"));
    assert_eq!(fetch["status"], 200);
    assert_eq!(fetch["method"], "GET");
    assert_eq!(fetch["bytes"], photo.len());
    assert_eq!(fetch["user_agent"], fake::BAILEYS_USER_AGENT);
    assert_eq!(fetch["agent"], "Baileys (axios)");
    let send = events
        .iter()
        .find(|e| e["type"] == "send")
        .unwrap_or_else(|| panic!("no send in {v}"));
    assert_eq!(send["via"], "cli");
    assert_eq!(send["endpoint"], "send-image");
    assert_eq!(send["status"], 200);
    assert_eq!(send["success"], true);
    assert_eq!(send["message"], fake::SENT);
    assert_eq!(send["delivered_as"], "image");
    assert_eq!(send["to"], "7701***5555@s.whatsapp.net");
    assert_eq!(v["trace"]["counters"]["gateway_fetches"], 1);
    assert_eq!(v["trace"]["counters"]["sends_delivered"], 1);

    // `inspect` through the server, as text and as JSON.
    let (code, text, err) = run(
        &["inspect", &id, "--server", &s.base, "--token", TOKEN],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(text.contains(&format!("link {id}")), "{text}");
    assert!(
        text.contains("fetch  GET 200")
            && text.contains(&format!("{} bytes", photo.len()))
            && text.contains("gateway (Baileys (axios))")
            && text.contains("user-agent: axios/1.7.9"),
        "{text}"
    );
    assert!(
        text.contains("send   send-image via cli")
            && text.contains("gateway 200 success=true \"Message sent successfully!\""),
        "{text}"
    );
    let (code, json_out, _) = run(
        &[
            "inspect", &id, "--server", &s.base, "--token", TOKEN, "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0);
    let j: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(events_of(&j).len(), events.len());

    // `inspect` on the store itself, once the server has flushed (about 1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dir = s.data_dir.display().to_string();
    let (code, text, err) = run(&["inspect", &id, "--data-dir", &dir], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("fetch  GET 200") && text.contains("send   send-image via cli"),
        "{text}"
    );
}

#[tokio::test]
async fn an_api_send_records_the_gateways_answer_even_when_it_refuses() {
    let (gw, up, s) = setup().await;
    up.set(
        "/a.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    gw.script(|sc| sc.disconnected = true);
    let res = http()
        .post(s.url("/api/v1/send"))
        .bearer_auth(TOKEN)
        .json(&json!({"to": "77015705555", "kind": "image", "url": up.url("/a.jpg")}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let p: Value = res.json().await.unwrap();
    let id = id_of(p["outcome"]["short_url"].as_str().unwrap());
    let (_, v) = get_json(&s, &format!("/api/v1/links/{id}/events")).await;
    let send = events_of(&v)
        .into_iter()
        .find(|e| e["type"] == "send")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(send["via"], "api");
    assert_eq!(send["success"], false);
    assert_eq!(send["delivered_as"], "none");
    assert_eq!(send["message"], fake::DISCONNECTED);
    assert_eq!(send["error"], "instance_disconnected");
}

#[tokio::test]
async fn preview_bots_and_browsers_are_told_apart_and_the_trace_survives_a_restart() {
    let (_gw, up, mut s) = setup().await;
    up.set(
        "/p.png",
        Reply::Bytes(200, "image/png", fixture("photo.png")),
    );
    let (st, link) = common::create(&s, json!({"url": up.url("/p.png"), "kind": "image"})).await;
    assert_eq!(st, 201, "{link}");
    let id = link["id"].as_str().unwrap().to_owned();
    let short = link["short_url"].as_str().unwrap().to_owned();
    for ua in [
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "WhatsApp/2.23.20.0 A",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ] {
        let r = http()
            .get(&short)
            .header("user-agent", ua)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http().head(&short).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // An unknown id leaves no trace anywhere.
    let r = http().get(s.url("/m/AAAAAAAAAA.jpg")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let (_, v) = get_json(&s, &format!("/api/v1/links/{id}/events")).await;
    let ev = events_of(&v);
    assert_eq!(ev.len(), 4, "{v}");
    assert_eq!(ev[0]["client"], "preview_bot");
    assert_eq!(ev[0]["agent"], "Facebook");
    assert_eq!(ev[0]["source"], "upstream");
    assert_eq!(ev[1]["client"], "preview_bot");
    assert_eq!(ev[1]["agent"], "WhatsApp link preview");
    assert_eq!(ev[1]["source"], "cache");
    assert_eq!(ev[2]["client"], "browser");
    assert_eq!(ev[3]["method"], "HEAD");
    assert_eq!(ev[3]["bytes"], 0);
    assert_eq!(ev[0]["bytes"], fixture("photo.png").len());
    let c = &v["trace"]["counters"];
    assert_eq!(
        (c["fetches"].as_u64(), c["cache_hits"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(c["preview_fetches"], 2);

    // SIGTERM flushes what is pending; a new process reads it from the store.
    assert!(s.terminate().success());
    let s2 = s.restart();
    let (_, v2) = get_json(&s2, &format!("/api/v1/links/{id}/events")).await;
    assert_eq!(events_of(&v2), ev, "the trace after a restart: {v2}");

    // Deleting the link deletes its trace; the same URL then starts afresh.
    let r = http()
        .delete(s2.url(&format!("/api/v1/links/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (st, _) = get_json(&s2, &format!("/api/v1/links/{id}/events")).await;
    assert_eq!(st, 404);
    let (st, _) = common::create(&s2, json!({"url": up.url("/p.png"), "kind": "image"})).await;
    assert_eq!(st, 201);
    let (_, v3) = get_json(&s2, &format!("/api/v1/links/{id}/events")).await;
    assert!(events_of(&v3).is_empty(), "{v3}");
}

#[tokio::test]
async fn recent_links_carry_their_last_fetch() {
    let (_gw, up, s) = setup().await;
    up.set(
        "/p.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    let (_, a) = common::create(&s, json!({"url": up.url("/p.jpg"), "kind": "image"})).await;
    let (_, b) = common::create(&s, json!({"url": up.url("/other.jpg")})).await;
    http()
        .get(a["short_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let (st, v) = get_json(&s, "/api/v1/links?limit=10").await;
    assert_eq!(st, 200, "{v}");
    let links = v["links"].as_array().unwrap();
    assert_eq!(links.len(), 2);
    let find = |id: &Value| {
        links
            .iter()
            .find(|l| l["link"]["id"] == *id)
            .unwrap()
            .clone()
    };
    assert_eq!(find(&a["id"])["last_fetch"]["status"], 200);
    assert!(find(&b["id"]).get("last_fetch").is_none());
    let (st, p) = get_json(&s, "/api/v1/links?limit=0").await;
    common::assert_problem(st, &p, 400, "invalid_json");
}
