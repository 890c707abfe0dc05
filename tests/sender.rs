//! The sender against a fake ChatFlow (tests/common/gateway.rs), a fake media origin
//! and a test shortener whose short links are served on loopback, so the gateway's
//! own media GET goes end to end. Contract: DESIGN §8 and §9.

mod common;

use std::time::Duration;

use common::gateway::{self as fake, FakeGateway};
use common::media::{
    LEAD, LEAD_JID, MediaHost, PHOTO, VOICE, fast_retries, plain_client, request, send,
};
use medialink::sender::deliver::fallback_message;
use medialink::sender::{
    DeliveredAs, Gateway, GatewayConfig, GatewayError, MediaKind, SendError, SendRequest,
    ShortenError, deliver_with, normalize,
};
use url::Url;

#[tokio::test]
async fn naive_concatenated_query_fails_but_deliver_sends_one_short_image_call() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    let long = media.signed_url("photo.jpg", 1024);
    assert!(long.len() >= 1024 && long.contains("&token=") && long.contains("&caption="));

    // The CRM's old way: parameters glued into the URL unencoded.
    let naive = |caption: &str, url: &str| {
        format!(
            "{}/send-image?token={}&instance_id={}&jid={LEAD_JID}&caption={caption}&imageurl={url}",
            gw.base_url(),
            fake::TOKEN,
            fake::INSTANCE_ID
        )
    };
    let http = plain_client();
    let get = |url: String| {
        let http = http.clone();
        async move {
            serde_json::from_str::<serde_json::Value>(
                &http.get(url).send().await.unwrap().text().await.unwrap(),
            )
            .unwrap()
        }
    };
    let answer = get(naive("", &long)).await;
    assert_eq!(answer["success"], false);
    // The inner `&token=` turned token into an array.
    assert_eq!(answer["message"], fake::DISCONNECTED);
    let answer = get(naive("", &media.url("photo.jpg"))).await;
    assert_eq!(answer["message"], fake::REQUIRED_IMAGE);
    let before = gw.calls();

    let outcome = send(&gw, &media, &request(MediaKind::Image, &long)).await;

    let calls = &gw.requests()[before..];
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    assert_eq!(call.endpoint(), "send-image");
    assert!(
        call.raw_query.len() < 400,
        "query of {} bytes",
        call.raw_query.len()
    );
    assert_eq!(call.param("imageurl"), outcome.short_url.as_deref());
    assert_eq!(call.param("caption"), Some(" "));
    assert_eq!(call.param("jid"), Some(LEAD_JID));
    assert_eq!(
        call.media.as_deref(),
        Some(PHOTO),
        "the gateway fetched other bytes"
    );
    assert_eq!(media.links(), [(long, MediaKind::Image)]);
    assert_eq!(outcome.delivered_as, DeliveredAs::Image);
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(outcome.attempts, 1);
    assert_eq!(outcome.jid.as_deref(), Some(LEAD_JID));
    let summary = outcome.gateway.unwrap();
    assert!(summary.success);
    assert_eq!(summary.message.as_deref(), Some(fake::SENT));
}

#[tokio::test]
async fn caption_with_reserved_characters_and_cyrillic_arrives_byte_exact() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    let caption = "Скидка 10% & подарок = 🎁 #акция +1 a+b %41 ?x=y";
    let req = SendRequest {
        caption: Some(caption.into()),
        ..request(MediaKind::Image, &media.url("photo.jpg"))
    };

    let outcome = send(&gw, &media, &req).await;

    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    let call = &gw.requests()[0];
    assert_eq!(call.param("caption"), Some(caption));
    assert_eq!(
        call.params.iter().filter(|(k, _)| k == "caption").count(),
        1
    );
}

#[tokio::test]
async fn empty_caption_is_sent_as_a_space() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    for caption in [None, Some(String::new())] {
        let req = SendRequest {
            caption,
            ..request(MediaKind::Image, &media.url("photo.jpg"))
        };
        assert_eq!(
            send(&gw, &media, &req).await.delivered_as,
            DeliveredAs::Image
        );
    }
    let captions: Vec<_> = gw
        .requests()
        .iter()
        .map(|r| r.param("caption").map(str::to_owned))
        .collect();
    assert_eq!(captions, [Some(" ".to_owned()), Some(" ".to_owned())]);
}

#[tokio::test]
async fn voice_note_goes_through_send_audio() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);

    let outcome = send(
        &gw,
        &media,
        &request(MediaKind::Audio, &media.url("voice.ogg")),
    )
    .await;

    assert_eq!(
        (outcome.delivered_as, outcome.exit_code()),
        (DeliveredAs::Audio, 0)
    );
    let call = &gw.requests()[0];
    assert_eq!(call.endpoint(), "send-audio");
    assert_eq!(call.param("audiourl"), outcome.short_url.as_deref());
    assert_eq!(call.media.as_deref(), Some(VOICE));
    assert_eq!(media.links()[0].1, MediaKind::Audio);
}

#[tokio::test]
async fn text_goes_through_send_text_without_shortening() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    let text = "Здравствуйте! a&b=c #1 + 100%";
    let req = SendRequest {
        text: Some(text.into()),
        url: None,
        ..request(MediaKind::Text, "")
    };

    let outcome = send(&gw, &media, &req).await;

    assert_eq!(
        (outcome.delivered_as, outcome.exit_code()),
        (DeliveredAs::Text, 0)
    );
    assert_eq!(gw.requests()[0].endpoint(), "send-text");
    assert_eq!(gw.requests()[0].param("msg"), Some(text));
    assert_eq!(media.shorten_calls(), 0);
}

#[tokio::test]
async fn disconnected_instance_is_not_delivered_retried_or_fallen_back() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    gw.script(|s| s.disconnected = true);
    let req = SendRequest {
        fallback_text: true,
        ..request(MediaKind::Image, &media.url("photo.jpg"))
    };

    let outcome = send(&gw, &media, &req).await;

    assert_eq!(
        (outcome.delivered_as, outcome.exit_code(), outcome.attempts),
        (DeliveredAs::None, 1, 1)
    );
    assert_eq!(
        outcome.gateway.unwrap().message.as_deref(),
        Some(fake::DISCONNECTED)
    );
    let error = outcome.error.unwrap();
    assert_eq!(error.code, "instance_disconnected");
    assert_eq!(error.detail, fake::DISCONNECTED);
    assert_eq!(gw.calls(), 1, "no retry, no text fallback");
}

#[tokio::test]
async fn number_not_on_whatsapp_is_not_delivered_nor_fallen_back() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    gw.script(|s| {
        s.not_on_whatsapp.insert(LEAD_JID.into());
    });
    let req = SendRequest {
        fallback_text: true,
        ..request(MediaKind::Image, &media.url("photo.jpg"))
    };

    let outcome = send(&gw, &media, &req).await;

    assert_eq!(
        (outcome.exit_code(), outcome.error.unwrap().code.as_str()),
        (1, "not_on_whatsapp")
    );
    assert_eq!(gw.calls(), 1);
}

#[tokio::test]
async fn two_5xx_then_ok_is_delivered_on_the_third_attempt() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    gw.script(|s| s.fail_5xx = 2);

    let outcome = send(
        &gw,
        &media,
        &request(MediaKind::Image, &media.url("photo.jpg")),
    )
    .await;

    assert_eq!(
        (outcome.delivered_as, outcome.attempts, outcome.exit_code()),
        (DeliveredAs::Image, 3, 0)
    );
    let statuses: Vec<u16> = gw.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [502, 502, 200]);
    assert_eq!(media.shorten_calls(), 1, "retries reuse the short link");
}

#[tokio::test]
async fn three_5xx_are_not_delivered_after_three_attempts() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    gw.script(|s| s.fail_5xx = 5);

    let outcome = send(
        &gw,
        &media,
        &request(MediaKind::Image, &media.url("photo.jpg")),
    )
    .await;

    assert_eq!((outcome.exit_code(), outcome.attempts), (1, 3));
    assert_eq!(outcome.error.unwrap().code, "gateway_unreachable");
    assert_eq!(gw.calls(), 3);
}

#[tokio::test]
async fn catch_all_500_is_retried_and_reported_with_its_msg() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    gw.script(|s| s.something_went_wrong = true);

    let outcome = send(
        &gw,
        &media,
        &request(MediaKind::Image, &media.url("photo.jpg")),
    )
    .await;

    assert_eq!((outcome.exit_code(), outcome.attempts), (1, 3));
    let error = outcome.error.unwrap();
    assert_eq!(error.code, "gateway_unreachable");
    assert!(
        error.detail.starts_with("something went wrong"),
        "{}",
        error.detail
    );
}

#[tokio::test]
async fn media_rejected_falls_back_to_a_text_link_only_when_asked() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    let url = media.url("login.html");

    let plain = send(&gw, &media, &request(MediaKind::Image, &url)).await;
    assert_eq!(
        (plain.delivered_as, plain.exit_code()),
        (DeliveredAs::None, 1)
    );
    assert_eq!(plain.error.unwrap().code, "media_rejected");
    assert_eq!(gw.calls(), 1);

    let req = SendRequest {
        fallback_text: true,
        caption: Some("Welcome!".into()),
        ..request(MediaKind::Image, &url)
    };
    let outcome = send(&gw, &media, &req).await;

    assert_eq!(
        (outcome.delivered_as, outcome.exit_code(), outcome.attempts),
        (DeliveredAs::TextFallback, 3, 1)
    );
    assert_eq!(outcome.error.as_ref().unwrap().code, "media_rejected");
    assert_eq!(
        outcome.gateway.unwrap().message.as_deref(),
        Some(fake::INVALID_URL)
    );
    assert!(outcome.fallback.unwrap().success);
    let calls = gw.requests();
    let endpoints: Vec<&str> = calls[1..].iter().map(|r| r.endpoint()).collect();
    assert_eq!(endpoints, ["send-image", "send-text"]);
    let short = outcome.short_url.unwrap();
    let msg = calls[2].param("msg").unwrap();
    assert!(msg.contains(&short), "{msg}");
    assert_eq!(msg, fallback_message(MediaKind::Image, &short, "Welcome!"));
}

#[tokio::test]
async fn bad_phone_or_missing_url_is_a_usage_error_and_calls_nothing() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    let url = media.url("photo.jpg");
    for to in ["", "not a phone", "+7 701 570", "8 701 570 55 55 55 55 55"] {
        let req = SendRequest {
            to: to.into(),
            ..request(MediaKind::Image, &url)
        };
        let err = deliver_with(&gw.gateway(), &media, &req, &fast_retries())
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::BadPhone(_)), "{to:?}: {err}");
    }
    let no_url = SendRequest {
        url: None,
        ..request(MediaKind::Audio, "")
    };
    let err = deliver_with(&gw.gateway(), &media, &no_url, &fast_retries())
        .await
        .unwrap_err();
    assert_eq!(err, SendError::MissingUrl("audio"));
    assert_eq!((gw.calls(), media.shorten_calls()), (0, 0));
}

#[tokio::test]
async fn shortener_refusal_is_not_delivered_and_calls_no_gateway() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    media.refuse_with(ShortenError::Rejected {
        code: "upstream_not_media".into(),
        detail: "text/html".into(),
    });
    let req = SendRequest {
        fallback_text: true,
        ..request(MediaKind::Image, &media.url("login.html"))
    };

    let outcome = send(&gw, &media, &req).await;

    assert_eq!(
        (
            outcome.exit_code(),
            outcome.attempts,
            outcome.short_url.as_deref()
        ),
        (1, 0, None)
    );
    assert_eq!(outcome.error.unwrap().code, "upstream_not_media");
    assert_eq!(gw.calls(), 0);
}

#[tokio::test]
async fn slow_gateway_times_out_three_times_without_fallback() {
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    gw.script(|s| s.delay = Duration::from_secs(2));
    let config = GatewayConfig {
        timeout: Duration::from_millis(200),
        ..gw.config()
    };
    let req = SendRequest {
        fallback_text: true,
        ..request(MediaKind::Image, &media.url("photo.jpg"))
    };

    let outcome = deliver_with(
        &Gateway::new(config).unwrap(),
        &media,
        &req,
        &fast_retries(),
    )
    .await
    .unwrap();

    assert_eq!((outcome.exit_code(), outcome.attempts), (1, 3));
    assert_eq!(outcome.error.unwrap().code, "gateway_timeout");
    assert_eq!((outcome.gateway, outcome.fallback), (None, None));
}

#[tokio::test]
async fn unreachable_gateway_is_an_error_not_an_answer() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let base = Url::parse(&format!("http://{closed}/api/v1")).unwrap();
    let gw = Gateway::new(GatewayConfig::new(base, fake::TOKEN, fake::INSTANCE_ID)).unwrap();
    let jid = normalize(LEAD).unwrap();

    let err = gw.send_text(&jid, "hi").await.unwrap_err();
    assert!(matches!(err, GatewayError::Unreachable(_)), "{err}");
    assert!(!err.to_string().contains(fake::TOKEN));

    let media = MediaHost::start().await;
    let outcome = deliver_with(
        &gw,
        &media,
        &request(MediaKind::Image, &media.url("photo.jpg")),
        &fast_retries(),
    )
    .await
    .unwrap();
    assert_eq!((outcome.exit_code(), outcome.attempts), (1, 3));
    assert_eq!(outcome.error.unwrap().code, "gateway_unreachable");
}

#[tokio::test]
async fn fake_gateway_refuses_post_and_oversized_requests_like_the_real_stack() {
    let gw = FakeGateway::start().await;
    let http = plain_client();
    let post = http
        .post(format!("{}/send-image", gw.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);
    assert!(
        post.text()
            .await
            .unwrap()
            .contains("<pre>Cannot POST /api/v1/send-image</pre>")
    );

    // A long media URL sent directly (no short link) trips nginx's 8 KiB limit.
    let jid = normalize(LEAD).unwrap();
    let huge = format!("https://cdn.example/a.jpg?sig={}", "a".repeat(9000));
    let answer = gw.gateway().send_image(&jid, "", &huge).await.unwrap();
    assert_eq!((answer.status, answer.success), (431, false));
    assert!(answer.query_len > 9000);
    assert_eq!(gw.calls(), 2);
}

#[test]
fn fake_gateway_reads_queries_like_qs() {
    let parsed = fake::parse_qs("a=1&a=2&b=x+y%2B&c=%ZZ%4&d&&e=f=g&%D0%96=%F0%9F%8E%81");
    let want = [
        ("a", "1"),
        ("a", "2"),
        ("b", "x y+"),
        ("c", "%ZZ%4"),
        ("d", ""),
        ("e", "f=g"),
        ("Ж", "🎁"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(parsed, want);
}
