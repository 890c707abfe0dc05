//! WhatsApp-ready media through the real binary: conversion of what phones cannot
//! show or play, pinning that outlives the upstream, expiry. Issue "WhatsApp-ready".

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::upstream::{Reply, Upstream, fixture};
use common::{Server, TOKEN, create, get_json, http};
use serde_json::json;

const ALLOW: &[&str] = &["--allow-upstream-cidr", "127.0.0.1/32"];

async fn fetch(s: &Server, short_url: &str) -> reqwest::Response {
    http()
        .get(short_url.replace("http://127.0.0.1:0", &s.base))
        .send()
        .await
        .unwrap()
}

/// Duration of the sample voice, from the WAV header: PCM bytes / byte rate.
fn wav_duration_ms() -> u64 {
    let wav = fixture("voice.wav");
    let byte_rate = u32::from_le_bytes(wav[28..32].try_into().unwrap()) as u64;
    let pos = wav.windows(4).position(|w| w == b"data").unwrap();
    let len = u32::from_le_bytes(wav[pos + 4..pos + 8].try_into().unwrap()) as u64;
    len * 1000 / byte_rate
}

#[tokio::test]
async fn webp_and_gif_photos_are_served_as_jpeg_of_the_same_size() {
    let up = Upstream::start().await;
    let s = Server::start(ALLOW);
    for name in ["photo.webp", "photo.gif"] {
        up.set(
            &format!("/{name}"),
            Reply::Bytes(200, "application/octet-stream", fixture(name)),
        );
        let (st, link) = create(
            &s,
            json!({"url": up.url(&format!("/{name}")), "kind": "image", "verify": true}),
        )
        .await;
        assert_eq!(st, 201, "{link}");
        let short = link["short_url"].as_str().unwrap();
        assert!(short.ends_with(".jpg"), "{short}");
        assert_eq!(link["media"]["content_type"], "image/jpeg");
        assert_eq!(
            link["media"]["converted_from"],
            if name.ends_with("webp") {
                "image/webp"
            } else {
                "image/gif"
            }
        );
        let res = fetch(&s, short).await;
        assert_eq!(res.headers()["content-type"], "image/jpeg");
        let img = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (640, 480), "{name}");
    }
}

#[tokio::test]
async fn voice_notes_become_ogg_opus_of_the_same_length_and_opus_passes_through() {
    let up = Upstream::start().await;
    let s = Server::start(ALLOW);
    let want = wav_duration_ms() as i64;
    for name in ["voice.mp3", "voice.m4a", "voice.wav", "voice-vorbis.ogg"] {
        up.set(
            &format!("/{name}"),
            Reply::Bytes(200, "audio/whatever", fixture(name)),
        );
        let (st, link) = create(
            &s,
            json!({"url": up.url(&format!("/{name}")), "kind": "voice"}),
        )
        .await;
        assert_eq!(st, 201);
        let res = fetch(
            &s,
            &format!("{}/m/{}", s.base, link["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(res.status(), 200, "{name}");
        assert_eq!(
            res.headers()["content-type"],
            "audio/ogg; codecs=opus",
            "{name}"
        );
        let body = res.bytes().await.unwrap();
        assert!(
            body.starts_with(b"OggS") && body.windows(8).any(|w| w == b"OpusHead"),
            "{name}"
        );
        let got = medialink::convert::ogg_opus_duration_ms(&body).unwrap() as i64;
        assert!((got - want).abs() <= 200, "{name}: {got} ms vs {want} ms");
        let (_, rec) = get_json(
            &s,
            &format!("/api/v1/links/{}", link["id"].as_str().unwrap()),
        )
        .await;
        assert!(
            rec["media"]["converted_from"].is_string(),
            "the record says what was converted: {rec}"
        );
    }
    up.set(
        "/voice.ogg",
        Reply::Bytes(200, "audio/ogg", fixture("voice.ogg")),
    );
    let (_, link) = create(&s, json!({"url": up.url("/voice.ogg"), "kind": "voice"})).await;
    let res = fetch(
        &s,
        &format!("{}/m/{}", s.base, link["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        fixture("voice.ogg").as_slice(),
        "Opus passes through"
    );

    up.set(
        "/voice.amr",
        Reply::Bytes(200, "audio/amr", fixture("voice.amr")),
    );
    let (st, p) = create(
        &s,
        json!({"url": up.url("/voice.amr"), "kind": "voice", "verify": true}),
    )
    .await;
    assert_eq!(st, 422);
    assert_eq!(p["code"], "media_not_accepted");
    assert!(
        p["detail"].as_str().unwrap().to_lowercase().contains("amr"),
        "{p}"
    );
}

fn blob_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(data_dir.join("blobs")) else {
        return out;
    };
    for d in dirs.flatten() {
        if let Ok(files) = std::fs::read_dir(d.path()) {
            out.extend(
                files
                    .flatten()
                    .map(|f| f.path())
                    .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_link_outlives_its_upstream_and_a_restart() {
    let up = Upstream::start().await;
    let jpg = fixture("photo.jpg");
    up.set("/signed.jpg", Reply::Bytes(200, "image/jpeg", jpg.clone()));
    let mut s = Server::start(ALLOW);
    let (st, link) = create(
        &s,
        json!({"url": up.url("/signed.jpg"), "kind": "image", "pin": true}),
    )
    .await;
    assert_eq!(st, 201, "{link}");
    let short = link["short_url"].as_str().unwrap().to_owned();
    up.set(
        "/signed.jpg",
        Reply::Bytes(403, "text/html", b"<html>expired</html>".to_vec()),
    );
    assert_eq!(
        fetch(&s, &short).await.bytes().await.unwrap().as_ref(),
        jpg.as_slice()
    );
    up.stop();
    let mut s2 = s.restart();
    let res = fetch(&s2, &short.replace(&s.base, &s2.base)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        jpg.as_slice(),
        "served from the blob after restart"
    );
    s2.kill();
    s.kill();
}

#[tokio::test]
async fn identical_bytes_share_one_blob_which_goes_with_the_last_link() {
    let up = Upstream::start().await;
    up.set(
        "/a.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    up.set(
        "/b.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    let s = Server::start(ALLOW);
    let (_, a) = create(&s, json!({"url": up.url("/a.jpg"), "pin": true})).await;
    let (_, b) = create(&s, json!({"url": up.url("/b.jpg"), "pin": true})).await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(
        blob_files(&s.data_dir).len(),
        1,
        "one blob for identical bytes"
    );
    let del = |id: &str| {
        http()
            .delete(s.url(&format!("/api/v1/links/{id}")))
            .bearer_auth(TOKEN)
            .send()
    };
    assert_eq!(del(a["id"].as_str().unwrap()).await.unwrap().status(), 204);
    assert_eq!(
        blob_files(&s.data_dir).len(),
        1,
        "still pinned by the other link"
    );
    assert_eq!(del(b["id"].as_str().unwrap()).await.unwrap().status(), 204);
    assert!(
        blob_files(&s.data_dir).is_empty(),
        "gone with the last link"
    );
}

#[tokio::test]
async fn an_expired_link_answers_410_and_its_blob_is_swept() {
    let up = Upstream::start().await;
    up.set(
        "/e.png",
        Reply::Bytes(200, "image/png", fixture("photo.png")),
    );
    let s = Server::start(&[
        "--allow-upstream-cidr",
        "127.0.0.1/32",
        "--sweep-interval",
        "1s",
    ]);
    let (st, link) = create(
        &s,
        json!({"url": up.url("/e.png"), "pin": true, "expires_in": 2}),
    )
    .await;
    assert_eq!(st, 201, "{link}");
    assert!(link["expires_at"].is_string());
    let id = link["id"].as_str().unwrap();
    assert_eq!(
        http()
            .get(s.url(&format!("/m/{id}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(blob_files(&s.data_dir).len(), 1);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let res = http().get(s.url(&format!("/m/{id}"))).send().await.unwrap();
    assert!(
        res.status() == 410 || res.status() == 404,
        "expired: {}",
        res.status()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !blob_files(&s.data_dir).is_empty() {
        assert!(std::time::Instant::now() < deadline, "blob not swept");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (st, _) = get_json(&s, &format!("/api/v1/links/{id}")).await;
    assert_eq!(st, 404, "the sweep deleted the link");
}
