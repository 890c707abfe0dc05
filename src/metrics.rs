//! Prometheus metrics (DESIGN §7, §11): the recorder (the one allowed global), the
//! `/metrics` handler, and the middleware that counts requests by route and status.
//!
//! The metrics themselves are recorded where things happen: `media` (cache hits and
//! misses, bytes served), `fetch` (upstream latency, errors by code), `store::hot`
//! (store latency by operation), `api::send` (gateway sends by outcome).
//!
//! Labels are bounded: the route is axum's matched path (`/m/{file}`), never the raw
//! path, so ids cannot explode the series count.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::SharedState;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const STORE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
];

/// Installs the process-wide recorder and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("medialink_upstream_fetch_seconds".into()),
            LATENCY_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("medialink_http_request_seconds".into()),
                LATENCY_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("medialink_store_seconds".into()),
                STORE_BUCKETS,
            )
        })
        .and_then(|b| b.install_recorder())
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "medialink_http_requests_total",
        "HTTP requests answered, by matched route and status"
    );
    describe_histogram!(
        "medialink_http_request_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by matched route"
    );
    describe_counter!(
        "medialink_cache_hits_total",
        "/m/ answers served from the media cache"
    );
    describe_counter!(
        "medialink_cache_misses_total",
        "/m/ answers that needed the upstream or pinned bytes"
    );
    describe_gauge!(
        "medialink_cache_bytes",
        Unit::Bytes,
        "Bytes held by the media cache (approximate)"
    );
    describe_counter!(
        "medialink_media_bytes_served_total",
        Unit::Bytes,
        "Media body bytes sent by /m/"
    );
    describe_histogram!(
        "medialink_upstream_fetch_seconds",
        Unit::Seconds,
        "Upstream fetches, whole body included, failures too"
    );
    describe_counter!(
        "medialink_upstream_errors_total",
        "Upstream fetches that did not give acceptable media, by problem code"
    );
    describe_histogram!(
        "medialink_store_seconds",
        Unit::Seconds,
        "Store calls, by operation"
    );
    describe_counter!(
        "medialink_gateway_sends_total",
        "Deliveries through the gateway, by outcome (delivered_as)"
    );
}

/// Counts every answer by matched route and status. A request no route matched is
/// `unmatched`, whatever its path.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("medialink_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("medialink_http_request_seconds", "route" => route)
        .record(started.elapsed());
    res
}

/// `GET /metrics`: Prometheus text format.
pub async fn render(State(state): State<SharedState>) -> Response {
    metrics::gauge!("medialink_cache_bytes").set(state.cache.weighted_size() as f64);
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// The router of `--metrics-listen`: `/metrics` alone.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(state)
}
