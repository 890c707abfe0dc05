//! `medialink check URL` on every sample file, served by a loopback origin: one
//! verdict each, exit 0 when the gateway would take it (as is or converted), 1 when
//! not, with why (issue 10).

mod common;

use common::upstream::{Reply, Upstream, fixture};
use serde_json::Value;

async fn check(url: &str, extra: &[&str]) -> (i32, String, Value) {
    let run = |json: bool| {
        let mut cmd = tokio::process::Command::new(common::bin());
        cmd.args(["check", url, "--allow-private"]).args(extra);
        if json {
            cmd.arg("--json");
        }
        cmd.stdin(std::process::Stdio::null()).output()
    };
    let text = run(false).await.unwrap();
    let json = run(true).await.unwrap();
    assert_eq!(text.status.code(), json.status.code());
    let v: Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json.stdout)));
    (
        text.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&text.stdout).to_string(),
        v,
    )
}

#[tokio::test]
async fn every_sample_gets_the_verdict_the_whatsapp_profile_gives_it() {
    let up = Upstream::start().await;
    // (file, kind, accepted, action, converted_to, media_type found)
    type Case<'a> = (&'a str, &'a str, bool, &'a str, Option<&'a str>, &'a str);
    let cases: &[Case] = &[
        ("photo.jpg", "image", true, "as_is", None, "image/jpeg"),
        ("photo.png", "image", true, "as_is", None, "image/png"),
        (
            "photo.webp",
            "image",
            true,
            "convert",
            Some("image/jpeg"),
            "image/webp",
        ),
        (
            "photo.gif",
            "image",
            true,
            "convert",
            Some("image/jpeg"),
            "image/gif",
        ),
        (
            "voice.ogg",
            "voice",
            true,
            "as_is",
            None,
            "audio/ogg; codecs=opus",
        ),
        (
            "voice.mp3",
            "voice",
            true,
            "convert",
            Some("audio/ogg; codecs=opus"),
            "audio/mpeg",
        ),
        (
            "voice.m4a",
            "voice",
            true,
            "convert",
            Some("audio/ogg; codecs=opus"),
            "audio/mp4",
        ),
        (
            "voice.aac",
            "voice",
            true,
            "convert",
            Some("audio/ogg; codecs=opus"),
            "audio/aac",
        ),
        (
            "voice.wav",
            "voice",
            true,
            "convert",
            Some("audio/ogg; codecs=opus"),
            "audio/wav",
        ),
        (
            "voice-vorbis.ogg",
            "voice",
            true,
            "convert",
            Some("audio/ogg; codecs=opus"),
            "audio/ogg",
        ),
        ("voice.amr", "voice", false, "refuse", None, "audio/amr"),
        // An image where a voice note is expected is refused by the policy itself.
        ("photo.jpg", "voice", false, "refuse", None, "image/jpeg"),
    ];
    for &(file, kind, accepted, action, converted_to, found) in cases {
        // A lying header: the verdict goes by the bytes.
        up.set(
            &format!("/{file}"),
            Reply::Bytes(200, "application/octet-stream", fixture(file)),
        );
        let (code, text, v) = check(&up.url(&format!("/{file}")), &["--kind", kind]).await;
        let ctx = format!("{file} as {kind}: {text}\n{v}");
        assert_eq!(code, if accepted { 0 } else { 1 }, "{ctx}");
        assert_eq!(v["accepted"], accepted, "{ctx}");
        assert_eq!(v["action"], action, "{ctx}");
        assert_eq!(v["media_type"], found, "{ctx}");
        assert_eq!(v["bytes"], fixture(file).len(), "{ctx}");
        assert_eq!(
            v["upstream_content_type"], "application/octet-stream",
            "{ctx}"
        );
        assert_eq!(v["converted_to"].as_str(), converted_to, "{ctx}");
        let first = text.lines().next().unwrap_or_default();
        if accepted {
            assert!(first.starts_with("ACCEPTED"), "{ctx}");
            assert!(v.get("reason").is_none(), "{ctx}");
        } else {
            assert!(first.starts_with("REFUSED"), "{ctx}");
            assert!(text.contains("why not"), "{ctx}");
            assert_eq!(v["code"], "media_not_accepted", "{ctx}");
        }
    }
}

#[tokio::test]
async fn the_verdicts_say_what_and_why_in_words() {
    let up = Upstream::start().await;
    up.set(
        "/w.webp",
        Reply::Bytes(200, "image/webp", fixture("photo.webp")),
    );
    up.set(
        "/v.amr",
        Reply::Bytes(200, "audio/amr", fixture("voice.amr")),
    );
    up.set(
        "/page",
        Reply::Bytes(200, "image/jpeg", b"<html>log in</html>".to_vec()),
    );

    let (code, text, _) = check(&up.url("/w.webp"), &["--kind", "image"]).await;
    assert_eq!(code, 0);
    assert!(
        text.starts_with("ACCEPTED after conversion: WebP would be converted to JPEG"),
        "{text}"
    );

    let (code, text, v) = check(&up.url("/v.amr"), &["--kind", "voice"]).await;
    assert_eq!(code, 1);
    assert!(text.starts_with("REFUSED: AMR-NB for kind voice"), "{text}");
    let why = v["reason"].as_str().unwrap();
    assert!(why.contains("AMR-NB cannot be decoded"), "{why}");
    // Under the default kind, AMR-NB is audio WhatsApp plays, with a warning about voice.
    let (code, _, v) = check(&up.url("/v.amr"), &[]).await;
    assert_eq!(code, 0, "{v}");
    assert!(v["note"].as_str().unwrap().contains("--kind voice"), "{v}");
    // The `any` profile serves WebP as it is.
    let (code, _, v) = check(&up.url("/w.webp"), &["--profile", "any"]).await;
    assert_eq!((code, v["action"].as_str()), (0, Some("as_is")));

    let (code, text, v) = check(&up.url("/page"), &[]).await;
    assert_eq!(code, 1);
    assert_eq!(v["code"], "upstream_not_media", "{text}");
    let (code, _, v) = check(&up.url("/missing"), &[]).await;
    assert_eq!((code, v["code"].as_str()), (1, Some("upstream_status")));
}

#[tokio::test]
async fn check_keeps_the_fetch_guard_and_refuses_bad_input_as_usage() {
    let up = Upstream::start().await;
    up.set(
        "/p.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    let out = tokio::process::Command::new(common::bin())
        .args(["check", &up.url("/p.jpg"), "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "forbidden_upstream", "{v}");
    assert_eq!(
        up.total_hits(),
        0,
        "the guard refused before any connection"
    );

    let out = tokio::process::Command::new(common::bin())
        .args(["check", "ftp://example.com/a.jpg"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
