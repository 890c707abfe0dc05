//! Request ids: made (or taken from a sane incoming `X-Request-Id`) per request, set
//! on the response, and readable from any code running inside the request's task
//! so problem bodies can repeat it without threading it through every function.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};
use tracing::instrument::{Instrument, Instrumented};

tokio::task_local! {
    static CURRENT: HeaderValue;
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn fresh() -> HeaderValue {
    // A per-process random prefix and a counter: unique, cheap, and sortable in logs.
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `{prefix:08x}-{n:012x}` written by hand: this runs on every request.
    let mut buf = [0u8; 21];
    let hex = |v: u64, out: &mut [u8]| {
        let digits = out.len();
        for (i, b) in out.iter_mut().enumerate() {
            let nibble = (v >> (4 * (digits - 1 - i))) & 0xF;
            *b = b"0123456789abcdef"[nibble as usize];
        }
    };
    hex(u64::from(prefix), &mut buf[..8]);
    buf[8] = b'-';
    hex(n, &mut buf[9..]);
    // Hex digits and a dash only: always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=64).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// The layer that gives every request its id: in scope while the request is
/// handled, and on the response as `X-Request-Id`. Written as a plain tower
/// service (no boxed future) because it wraps every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S> Service<Request> for RequestId<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let id = req
            .headers()
            .get("x-request-id")
            .filter(|v| acceptable(v))
            // A copy, not a slice of the connection's read buffer: the id lives on in
            // the trace.
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
            .unwrap_or_else(fresh);
        // A debug span: at the default `info` filter it costs nothing on the hot
        // path; warnings that need the id carry it themselves (see `current`).
        let span = tracing::debug_span!("request", request_id = ?id, method = %req.method(), path = %req.uri().path());
        let inner = CURRENT.scope(id.clone(), self.inner.call(req).instrument(span));
        RequestIdFuture {
            inner,
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    /// Sets the id on the response once the inner service has answered.
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: TaskLocalFuture<HeaderValue, Instrumented<F>>,
        id: Option<HeaderValue>,
    }
}

impl<F, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take() {
            res.headers_mut().insert("x-request-id", id);
        }
        Poll::Ready(Ok(res))
    }
}

/// The current request's id, when called inside a request.
pub fn current() -> Option<String> {
    CURRENT
        .try_with(|v| v.to_str().ok().map(str::to_owned))
        .ok()
        .flatten()
}
