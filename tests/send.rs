//! Delivery end to end through the real binary: `POST /api/v1/send` and `medialink
//! send` against the fake ChatFlow (tests/common/gateway.rs), whose own media GET
//! fetches medialink's short URL. Issue "Sender", DESIGN §8-§10.

mod common;

use common::gateway::{self as fake, FakeGateway};
use common::upstream::{Reply, Upstream, fixture};
use common::{Server, TOKEN, http, signed_url};
use serde_json::{Value, json};

async fn setup(extra: &[&str]) -> (FakeGateway, Upstream, Server) {
    let gw = FakeGateway::start().await;
    let up = Upstream::start().await;
    let base = gw.base_url().to_string();
    let mut args = vec!["--allow-upstream-cidr", "127.0.0.1/32"];
    args.extend_from_slice(extra);
    let s = Server::start_env(
        &args,
        &[
            ("CHATFLOW_BASE_URL", base.as_str()),
            ("CHATFLOW_TOKEN", fake::TOKEN),
            ("CHATFLOW_INSTANCE_ID", fake::INSTANCE_ID),
        ],
    );
    (gw, up, s)
}

async fn api_send(s: &Server, body: Value) -> (u16, Value) {
    let res = http()
        .post(s.url("/api/v1/send"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = res.status().as_u16();
    (st, res.json().await.unwrap())
}

async fn cli_send(s: &Server, gw: &FakeGateway, args: &[&str]) -> (i32, Value, String) {
    let out = tokio::process::Command::new(common::bin())
        .arg("send")
        .args(args)
        .args(["--server", &s.base, "--token", TOKEN])
        .env("CHATFLOW_BASE_URL", gw.base_url().as_str())
        .env("CHATFLOW_TOKEN", fake::TOKEN)
        .env("CHATFLOW_INSTANCE_ID", fake::INSTANCE_ID)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn a_photo_behind_a_long_signed_url_arrives_as_an_image_through_one_short_query() {
    let (gw, up, s) = setup(&[]).await;
    up.set(
        "/media/photo.jpg",
        Reply::Bytes(200, "binary/octet-stream", fixture("photo.jpg")),
    );
    let long = signed_url(&up.url("/media/photo.jpg"), 1024);
    assert!(long.contains("token=") && long.contains("caption="));

    let (code, out, err) = cli_send(
        &s,
        &gw,
        &["image", "--to", "+7 (701) 570-55-55", "--url", &long],
    )
    .await;
    assert_eq!(code, 0, "stderr: {err}\nstdout: {out}");
    assert_eq!(out["delivered_as"], "image");
    assert_eq!(out["jid"], "77015705555@s.whatsapp.net");
    assert_eq!(out["attempts"], 1);
    let calls = gw.requests();
    assert_eq!(calls.len(), 1, "one send-image call");
    let call = &calls[0];
    assert_eq!(call.endpoint(), "send-image");
    assert!(
        call.raw_query.len() < 400,
        "query is {} chars",
        call.raw_query.len()
    );
    assert_eq!(call.param("imageurl"), out["short_url"].as_str());
    assert_eq!(
        call.param("caption"),
        Some(" "),
        "an empty caption goes as a space"
    );
    assert_eq!(call.param("token"), Some(fake::TOKEN));
    assert_eq!(
        call.media.as_deref(),
        Some(fixture("photo.jpg").as_slice()),
        "gateway got the exact bytes"
    );
}

#[tokio::test]
async fn captions_arrive_byte_exact_and_voice_notes_go_through_send_audio() {
    let (gw, up, s) = setup(&[]).await;
    up.set(
        "/p.png",
        Reply::Bytes(200, "image/png", fixture("photo.png")),
    );
    up.set(
        "/v.ogg",
        Reply::Bytes(200, "audio/ogg", fixture("voice.ogg")),
    );
    let caption = "Привет & = % # + 🙂 welcome";
    let (st, out) = api_send(
        &s,
        json!({"to": "77015705555", "kind": "image", "url": up.url("/p.png"), "caption": caption}),
    )
    .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(out["delivered_as"], "image");
    assert_eq!(gw.requests()[0].param("caption"), Some(caption));

    let (st, out) = api_send(
        &s,
        json!({"to": "+7 701 570 55 55", "kind": "audio", "url": up.url("/v.ogg")}),
    )
    .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(out["delivered_as"], "audio");
    let call = gw.requests().pop().unwrap();
    assert_eq!(call.endpoint(), "send-audio");
    assert_eq!(call.media.as_deref(), Some(fixture("voice.ogg").as_slice()));
}

#[tokio::test]
async fn a_disconnected_instance_is_exit_1_with_the_gateways_message() {
    let (gw, up, s) = setup(&[]).await;
    up.set(
        "/a.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    gw.script(|sc| sc.disconnected = true);
    let (code, out, _) = cli_send(
        &s,
        &gw,
        &["image", "--to", "77015705555", "--url", &up.url("/a.jpg")],
    )
    .await;
    assert_eq!(code, 1);
    assert_eq!(out["delivered_as"], "none");
    assert_eq!(out["gateway"]["message"], fake::DISCONNECTED);

    let (st, p) = api_send(
        &s,
        json!({"to": "77015705555", "kind": "image", "url": up.url("/a.jpg")}),
    )
    .await;
    assert_eq!(st, 502);
    assert_eq!(p["code"], "gateway_error");
    assert_eq!(p["outcome"]["gateway"]["message"], fake::DISCONNECTED);
}

#[tokio::test]
async fn media_the_gateway_rejects_falls_back_to_text_with_the_short_link_only_when_asked() {
    // Under the `any` profile a GIF is served as a GIF, which the gateway refuses.
    let (gw, up, s) = setup(&["--profile", "any"]).await;
    up.set(
        "/anim.gif",
        Reply::Bytes(200, "image/gif", fixture("photo.gif")),
    );
    let (code, out, _) = cli_send(
        &s,
        &gw,
        &[
            "image",
            "--to",
            "77015705555",
            "--url",
            &up.url("/anim.gif"),
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["gateway"]["message"], fake::INVALID_URL);

    let (code, out, _) = cli_send(
        &s,
        &gw,
        &[
            "image",
            "--to",
            "77015705555",
            "--url",
            &up.url("/anim.gif"),
            "--fallback-text",
        ],
    )
    .await;
    assert_eq!(code, 3, "{out}");
    assert_eq!(out["delivered_as"], "text_fallback");
    let text = gw.requests().pop().unwrap();
    assert_eq!(text.endpoint(), "send-text");
    assert!(
        text.param("msg")
            .unwrap()
            .contains(out["short_url"].as_str().unwrap())
    );

    let (st, out) = api_send(
        &s,
        json!({"to": "77015705555", "kind": "image", "url": up.url("/anim.gif"), "fallback_text": true}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(out["delivered_as"], "text_fallback");
}

#[tokio::test]
async fn a_bad_phone_is_a_usage_error_and_calls_nobody() {
    let (gw, up, s) = setup(&[]).await;
    up.set(
        "/a.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    let (code, _, err) = cli_send(
        &s,
        &gw,
        &["image", "--to", "12345", "--url", &up.url("/a.jpg")],
    )
    .await;
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    let (st, p) = api_send(
        &s,
        json!({"to": "call me", "kind": "image", "url": up.url("/a.jpg")}),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(p["code"], "invalid_phone");
    assert_eq!(gw.calls(), 0);
    assert_eq!(up.total_hits(), 0, "nothing fetched either");
}

#[tokio::test]
async fn html_instead_of_a_photo_is_refused_before_the_gateway_is_called() {
    let (gw, up, s) = setup(&[]).await;
    up.set(
        "/photo.jpg",
        Reply::Bytes(200, "image/jpeg", b"<html>please log in</html>".to_vec()),
    );
    let (st, p) = api_send(
        &s,
        json!({"to": "77015705555", "kind": "image", "url": up.url("/photo.jpg")}),
    )
    .await;
    assert_eq!(st, 422, "{p}");
    assert_eq!(p["code"], "upstream_not_media");
    assert_eq!(p["outcome"]["delivered_as"], "none");
    assert_eq!(gw.calls(), 0);
}
