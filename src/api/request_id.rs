//! Request ids: made (or taken from a sane incoming `X-Request-Id`) per request, set
//! on the response, and readable from any code running inside the request's task
//! so problem bodies can repeat it without threading it through every function.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static CURRENT: HeaderValue;
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn fresh() -> HeaderValue {
    // A per-process random prefix and a counter: unique, cheap, and sortable in logs.
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Hex digits only: always a valid header value.
    HeaderValue::from_str(&format!("{prefix:08x}-{n:012x}"))
        .unwrap_or(HeaderValue::from_static("0"))
}

fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=64).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

pub async fn layer(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .filter(|v| acceptable(v))
        .cloned()
        .unwrap_or_else(fresh);
    // A debug span: at the default `info` filter it costs nothing on the hot path;
    // warnings that need the id carry it themselves (see `current`).
    let span = tracing::debug_span!("request", request_id = ?id, method = %req.method(), path = %req.uri().path());
    let mut res = CURRENT
        .scope(
            id.clone(),
            tracing::Instrument::instrument(next.run(req), span),
        )
        .await;
    res.headers_mut().insert("x-request-id", id);
    res
}

/// The current request's id, when called inside a request.
pub fn current() -> Option<String> {
    CURRENT
        .try_with(|v| v.to_str().ok().map(str::to_owned))
        .ok()
        .flatten()
}
