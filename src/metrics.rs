//! Prometheus metrics (DESIGN §7, §11): the recorder (the one allowed global), the
//! `/metrics` handler, and the middleware that counts requests by route and status.
//!
//! The metrics themselves are recorded where things happen: `media` (cache hits and
//! misses, bytes served), `fetch` (upstream latency, errors by code), `store::hot`
//! (store latency by operation), `api::send` (gateway sends by outcome). The handles of
//! those recorded on every answer are kept here, found once.
//!
//! Labels are bounded: the route is axum's matched path (`/m/{file}`), never the raw
//! path, so ids cannot explode the series count.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use tower::{Layer, Service};

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

// The unlabelled metrics recorded on every `/m/` answer and every upstream fetch,
// found in the registry once (at first use, after `install`) rather than by name
// each time: the lookup cost a warm hit more CPU than the counting. The route
// handles below do the same for the labelled request metrics.
pub static CACHE_HITS: LazyLock<Counter> =
    LazyLock::new(|| metrics::counter!("medialink_cache_hits_total"));
pub static CACHE_MISSES: LazyLock<Counter> =
    LazyLock::new(|| metrics::counter!("medialink_cache_misses_total"));
pub static MEDIA_BYTES_SERVED: LazyLock<Counter> =
    LazyLock::new(|| metrics::counter!("medialink_media_bytes_served_total"));
pub static UPSTREAM_FETCH_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| metrics::histogram!("medialink_upstream_fetch_seconds"));

/// The layer that counts every answer by matched route and status and times it.
/// A plain tower service with its handles cached per route and status: building a
/// labelled key and finding it in the registry on every request cost more than
/// the counting.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;
    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Track<S> {
    inner: S,
}

/// One route's handles: its latency histogram and a counter per status seen.
struct RouteHandles {
    route: Box<str>,
    seconds: Histogram,
    by_status: RwLock<HashMap<u16, Counter>>,
}

/// Route -> handles. Routes are axum's matched paths, a fixed small set.
static HANDLES: LazyLock<RwLock<HashMap<Box<str>, Arc<RouteHandles>>>> =
    LazyLock::new(Default::default);

fn route_handles(route: &str) -> Arc<RouteHandles> {
    if let Some(h) = HANDLES.read().unwrap_or_else(|e| e.into_inner()).get(route) {
        return Arc::clone(h);
    }
    let mut map = HANDLES.write().unwrap_or_else(|e| e.into_inner());
    let h = map.entry(route.into()).or_insert_with(|| {
        Arc::new(RouteHandles {
            route: route.into(),
            seconds: metrics::histogram!("medialink_http_request_seconds", "route" => route.to_owned()),
            by_status: RwLock::default(),
        })
    });
    Arc::clone(h)
}

impl RouteHandles {
    fn answered(&self, status: u16) {
        if let Some(c) = self
            .by_status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&status)
        {
            c.increment(1);
            return;
        }
        self.by_status
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_insert_with(|| {
                metrics::counter!("medialink_http_requests_total", "route" => self.route.to_string(), "status" => status.to_string())
            })
            .increment(1);
    }
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        let handles = route_handles(route);
        TrackFuture {
            inner: self.inner.call(req),
            handles,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        handles: Arc<RouteHandles>,
        started: Instant,
    }
}

impl<F, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx))?;
        this.handles.seconds.record(this.started.elapsed());
        this.handles.answered(res.status().as_u16());
        Poll::Ready(Ok(res))
    }
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
