//! A fake media origin and a test [`Shortener`] on one loopback port, plus the
//! request helpers the sender tests share.
//!
//! The origin serves `/origin/{photo.jpg,voice.ogg,login.html}` (any query, so a
//! signed-URL lookalike works); the shortener stores the long URL and serves it back
//! at `/m/N.ext` by fetching it, as medialink does, so the fake gateway's own media GET
//! goes end to end. It verifies nothing: a test that wants a shortener refusal scripts
//! one with [`MediaHost::refuse_with`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use medialink::sender::{
    MediaKind, Outcome, RetryPolicy, SendRequest, ShortenError, Shortener, deliver_with,
};

use super::gateway::FakeGateway;

pub const PHOTO: &[u8] = include_bytes!("../fixtures/photo.jpg");
pub const VOICE: &[u8] = include_bytes!("../fixtures/voice.ogg");
pub const LEAD: &str = "+7 (701) 570-55-55";
pub const LEAD_JID: &str = "77015705555@s.whatsapp.net";

/// A media origin (`/origin/...`, any query) and a shortener whose links (`/m/N.ext`)
/// proxy the long URL, on one loopback port.
pub struct MediaHost {
    pub addr: SocketAddr,
    state: Arc<HostState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct HostState {
    links: Mutex<Vec<(String, MediaKind)>>,
    refuse: Mutex<Option<ShortenError>>,
    shorten_calls: AtomicUsize,
}

impl Drop for MediaHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MediaHost {
    pub async fn start() -> Self {
        let state = Arc::new(HostState::default());
        let app = Router::new()
            .route("/origin/{name}", get(origin))
            .route("/m/{file}", get(short_link))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state, task }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/origin/{name}", self.addr)
    }

    /// A signed-CDN-style URL of at least `len` bytes whose query holds its own
    /// `token=` and `caption=`: what broke the naive gateway call.
    pub fn signed_url(&self, name: &str, len: usize) -> String {
        let mut u = format!(
            "{}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261124%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20261124T120000Z&X-Amz-Expires=900&token=cdn-session-token&caption=from=cdn\
             &X-Amz-SignedHeaders=host&X-Amz-Signature=",
            self.url(name)
        );
        while u.len() < len {
            u.push_str("0123456789abcdef");
        }
        u
    }

    pub fn links(&self) -> Vec<(String, MediaKind)> {
        self.state.links.lock().unwrap().clone()
    }

    pub fn shorten_calls(&self) -> usize {
        self.state.shorten_calls.load(Ordering::SeqCst)
    }

    /// Every later `shorten` fails with `e`.
    pub fn refuse_with(&self, e: ShortenError) {
        *self.state.refuse.lock().unwrap() = Some(e);
    }
}

#[async_trait]
impl Shortener for MediaHost {
    async fn shorten(&self, url: &str, kind: MediaKind) -> Result<String, ShortenError> {
        self.state.shorten_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.state.refuse.lock().unwrap().clone() {
            return Err(e);
        }
        let mut links = self.state.links.lock().unwrap();
        links.push((url.to_owned(), kind));
        let ext = if kind == MediaKind::Audio {
            "ogg"
        } else {
            "jpg"
        };
        Ok(format!("http://{}/m/{}.{ext}", self.addr, links.len() - 1))
    }
}

async fn origin(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "photo.jpg" => ([(header::CONTENT_TYPE, "image/jpeg")], PHOTO).into_response(),
        "voice.ogg" => ([(header::CONTENT_TYPE, "audio/ogg")], VOICE).into_response(),
        // A host that answers a login page instead of the picture (seed).
        "login.html" => (
            [(header::CONTENT_TYPE, "image/jpeg")],
            "<html>Please log in</html>",
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn short_link(State(state): State<Arc<HostState>>, Path(file): Path<String>) -> Response {
    let id: Option<usize> = file.split('.').next().and_then(|s| s.parse().ok());
    let long = id.and_then(|i| state.links.lock().unwrap().get(i).map(|(u, _)| u.clone()));
    let Some(long) = long else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    match client.get(long).send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.unwrap().into_response(),
        _ => StatusCode::BAD_GATEWAY.into_response(),
    }
}

pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        backoff_base: Duration::from_millis(10),
    }
}

pub fn request(kind: MediaKind, url: &str) -> SendRequest {
    SendRequest {
        to: LEAD.into(),
        kind,
        url: Some(url.into()),
        text: None,
        caption: None,
        fallback_text: false,
    }
}

pub async fn send(gw: &FakeGateway, media: &MediaHost, req: &SendRequest) -> Outcome {
    deliver_with(&gw.gateway(), media, req, &fast_retries())
        .await
        .unwrap()
}

pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
