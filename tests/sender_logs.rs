//! The gateway token never reaches the logs (DESIGN §9: log every call, but the
//! request URL carries the token).
//!
//! Its own test binary on purpose: `tracing` caches a callsite's interest globally,
//! and with a single live dispatcher a callsite first hit on another test's thread
//! (no subscriber there) is cached as "never", so a scoped capture beside other tests
//! misses events at random.

mod common;

use std::sync::{Arc, Mutex};

use common::gateway::{self as fake, FakeGateway};
use common::media::{LEAD, MediaHost, request, send};
use medialink::sender::{Gateway, GatewayConfig, MediaKind, normalize};
use url::Url;

/// A `tracing` writer into memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test]
async fn the_token_is_never_logged() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (gw, media) = (FakeGateway::start().await, MediaHost::start().await);
    let jid = normalize(LEAD).unwrap();

    // An answer, a refusal, and a transport failure.
    let outcome = send(
        &gw,
        &media,
        &request(MediaKind::Image, &media.url("photo.jpg")),
    )
    .await;
    assert_eq!(outcome.exit_code(), 0);
    gw.script(|s| s.disconnected = true);
    gw.gateway().send_text(&jid, "hi").await.unwrap();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let config = GatewayConfig {
        base_url: Url::parse(&format!("http://{closed}/api/v1")).unwrap(),
        ..gw.config()
    };
    Gateway::new(config)
        .unwrap()
        .send_text(&jid, "hi")
        .await
        .unwrap_err();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("send-image") && logs.contains(fake::SENT),
        "capture saw nothing:\n{logs}"
    );
    assert!(logs.contains("gateway call failed"), "{logs}");
    assert!(!logs.contains(fake::TOKEN), "token leaked:\n{logs}");
    assert!(
        !logs.contains("token="),
        "a request URL was logged:\n{logs}"
    );
}
