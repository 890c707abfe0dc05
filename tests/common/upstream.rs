//! Fake upstreams on loopback: scripted routes served by axum, and raw TCP servers
//! for byte-level faults (cut body, stall, lying length).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// What one path answers.
#[derive(Clone)]
pub enum Reply {
    /// Status, Content-Type header, body.
    Bytes(u16, &'static str, Vec<u8>),
    /// Redirect (302) to this absolute URL.
    Redirect(String),
    /// Headers announce the full length, only `send` bytes come, then the connection drops.
    Cut {
        content_type: &'static str,
        body: Vec<u8>,
        send: usize,
    },
    /// Headers, then nothing for `secs`.
    Stall { secs: u64 },
    /// Body gzip-compressed with Content-Encoding: gzip.
    Gzip(&'static str, Vec<u8>),
    /// Waits `ms` before answering with the inner reply.
    Slow(u64, Box<Reply>),
}

#[derive(Default)]
struct Inner {
    routes: Mutex<HashMap<String, Reply>>,
    hits: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    headers_seen: Mutex<Vec<HeaderMap>>,
}

/// A fake origin on 127.0.0.1 whose routes can be changed while it runs.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    stop: Arc<tokio::sync::Notify>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(bind: &str) -> Upstream {
        let inner = Arc::new(Inner::default());
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(tokio::sync::Notify::new());
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::get(serve))
            .with_state(Arc::clone(&inner));
        let stop2 = Arc::clone(&stop);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop2.notified().await })
                .await;
        });
        Upstream { addr, inner, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.inner
            .routes
            .lock()
            .unwrap()
            .insert(path.trim_start_matches('/').to_owned(), reply);
    }

    pub fn hits(&self, path: &str) -> usize {
        *self
            .inner
            .hits
            .lock()
            .unwrap()
            .get(path.trim_start_matches('/'))
            .unwrap_or(&0)
    }

    pub fn total_hits(&self) -> usize {
        self.inner.total.load(Ordering::SeqCst)
    }

    pub fn headers_seen(&self) -> Vec<HeaderMap> {
        self.inner.headers_seen.lock().unwrap().clone()
    }

    /// Stops accepting; the port then refuses connections.
    pub fn stop(&self) {
        self.stop.notify_waiters();
    }
}

async fn serve(
    State(inner): State<Arc<Inner>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    inner.total.fetch_add(1, Ordering::SeqCst);
    *inner.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    inner.headers_seen.lock().unwrap().push(headers);
    let reply = inner.routes.lock().unwrap().get(&path).cloned();
    match reply {
        Some(r) => render(r).await,
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

fn render(reply: Reply) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
    Box::pin(async move {
        match reply {
            Reply::Bytes(status, ct, body) => {
                let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static(ct));
                r.headers_mut().insert(
                    "set-cookie",
                    HeaderValue::from_static("session=upstream-secret"),
                );
                r
            }
            Reply::Redirect(to) => {
                let mut r = StatusCode::FOUND.into_response();
                r.headers_mut()
                    .insert("location", HeaderValue::from_str(&to).unwrap());
                r
            }
            Reply::Cut {
                content_type,
                body,
                send,
            } => {
                let len = body.len();
                let first = body[..send.min(len)].to_vec();
                let stream = async_stream(first);
                let mut r = Response::new(Body::from_stream(stream));
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static(content_type));
                r.headers_mut()
                    .insert("content-length", HeaderValue::from(len));
                r
            }
            Reply::Stall { secs } => {
                let stream = futures_util::stream::once(async move {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"late"))
                });
                let mut r = Response::new(Body::from_stream(stream));
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static("image/jpeg"));
                r
            }
            Reply::Gzip(ct, body) => {
                use std::io::Write;
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&body).unwrap();
                let mut r = (StatusCode::OK, enc.finish().unwrap()).into_response();
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static(ct));
                r.headers_mut()
                    .insert("content-encoding", HeaderValue::from_static("gzip"));
                r
            }
            Reply::Slow(ms, inner) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                render(*inner).await
            }
        }
    })
}

/// Sends `first`, then fails the stream so hyper closes the connection mid-body.
fn async_stream(
    first: Vec<u8>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::iter(vec![
        Ok(bytes::Bytes::from(first)),
        Err(std::io::Error::other("cut by the test")),
    ])
}

pub fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}
