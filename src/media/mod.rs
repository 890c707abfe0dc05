//! `GET`/`HEAD /m/{id}[.ext]`: the proxy. A hit is served from the cache without
//! touching the store or the upstream; a miss looks the link up, runs the pipeline
//! in `verify` once for all concurrent requests, and caches only whole, verified
//! bytes. Responses carry exactly the headers of DESIGN §3, never an upstream's.
//! Every answer for a stored link is written down in memory for its trace (`trace`),
//! never in the store on this path.

pub mod range;
pub mod verify;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::problem::{Code, Context, Problem};
use crate::cache::Media;
use crate::ids::LinkId;
use crate::state::SharedState;
use crate::store::now_unix;
use crate::trace::{self, Event, FetchEvent, Source};
use range::RangeReq;
use verify::MediaError;

pub fn routes() -> Router<SharedState> {
    Router::new().route("/m/{file}", get(serve))
}

static CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, max-age=86400");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static CSP: HeaderValue = HeaderValue::from_static("default-src 'none'; sandbox");
static BYTES: HeaderValue = HeaderValue::from_static("bytes");

pub fn media_problem(e: &MediaError, ctx: Context) -> Problem {
    let p = Problem::media(e.code(), e.to_string(), ctx);
    if ctx == Context::Proxy {
        // The operator's first question when a phone shows a broken image.
        tracing::warn!(
            code = p.code.as_str(),
            error = %e,
            request_id = crate::api::request_id::current().as_deref(),
            "upstream media refused"
        );
    }
    p
}

/// Takes the request whole: extractors for the path and headers would copy them,
/// on the one route where every microsecond is multiplied by every hit.
async fn serve(State(state): State<SharedState>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, _) = req.into_parts();
    // The router matched `/m/{file}`; `{id}` or `{id}.{anything}`: the extension
    // is cosmetic (DESIGN §2). An id is plain ASCII, so an escaped path is no id.
    let file = parts.uri.path().strip_prefix("/m/").unwrap_or_default();
    let raw = file.split_once('.').map_or(file, |(id, _)| id);
    let Some(id) = LinkId::parse(raw) else {
        return Problem::not_found().into_response();
    };
    let (method, headers) = (&parts.method, &parts.headers);
    let answer = answer(&state, &id, method, headers).await;
    if answer.known {
        record(&state, &id, method, headers, &answer, started);
    }
    answer.response
}

/// A `/m/` answer and what the trace needs to know of it.
struct Answer {
    response: Response,
    /// Body bytes sent: 0 for HEAD, 304 and errors.
    bytes: u64,
    source: Source,
    /// The problem code, when the answer is one.
    code: Option<Code>,
    /// Whether the id names a stored link; only those get a trace (an unknown id
    /// must not make a row, or anyone could fill the store).
    known: bool,
}

async fn answer(state: &SharedState, id: &LinkId, method: &Method, headers: &HeaderMap) -> Answer {
    let failed = |p: Problem, known: bool| Answer {
        code: Some(p.code),
        response: p.into_response(),
        bytes: 0,
        source: Source::None,
        known,
    };
    let (media, source) = match lookup(state, id).await {
        Ok(m) => m,
        Err((p, known)) => return failed(p, known),
    };
    if media.expires_at.is_some_and(|t| t <= now_unix()) {
        return failed(Problem::new(Code::Expired, "this link has expired"), true);
    }
    let (response, bytes) = respond(&media, method, headers);
    let code = (response.status() == StatusCode::RANGE_NOT_SATISFIABLE)
        .then_some(Code::RangeNotSatisfiable);
    Answer {
        response,
        bytes,
        source,
        code,
        known: true,
    }
}

/// The trace event and the metrics of one answer: memory only, no I/O.
fn record(
    state: &SharedState,
    id: &LinkId,
    method: &Method,
    headers: &HeaderMap,
    a: &Answer,
    started: Instant,
) {
    let status = a.response.status();
    let bytes = a.bytes;
    match a.source {
        Source::Cache => crate::metrics::CACHE_HITS.increment(1),
        Source::None => {}
        _ => crate::metrics::CACHE_MISSES.increment(1),
    }
    crate::metrics::MEDIA_BYTES_SERVED.increment(bytes);
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| trace::clip(v, trace::MAX_AGENT));
    let (client, agent) = trace::agent::classify(ua.as_deref());
    state.trace.record(
        id,
        Event::Fetch(FetchEvent {
            at: trace::now(),
            method: match *method {
                Method::GET => "GET".into(),
                Method::HEAD => "HEAD".into(),
                ref other => other.as_str().to_owned().into(),
            },
            status: status.as_u16(),
            bytes,
            source: a.source,
            client,
            agent: agent.map(str::to_owned),
            user_agent: ua,
            code: a.code.map(|c| c.as_str().to_owned()),
            ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            request_id: crate::api::request_id::current(),
        }),
    );
}

/// The media of a link and where it came from; on failure the problem, and whether
/// the link exists.
async fn lookup(state: &SharedState, id: &LinkId) -> Result<(Arc<Media>, Source), (Problem, bool)> {
    if let Some(hit) = state.cache.get(id).await {
        return Ok((hit, Source::Cache));
    }
    // A miss holds a store read, a fetch through hyper's client and a conversion in
    // its future: kilobytes, which every request's future would carry (and which
    // axum and hyper copy as they move it) if they sat inline. Boxed, only a miss
    // allocates them.
    Box::pin(miss(state, id)).await
}

/// [`lookup`] past the cache: the store, then one verified load for all concurrent
/// requests of the id.
async fn miss(state: &SharedState, id: &LinkId) -> Result<(Arc<Media>, Source), (Problem, bool)> {
    let record = match state.links.get(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err((Problem::not_found(), false)),
        Err(e) => return Err((e.into(), false)),
    };
    if record.is_expired(now_unix()) {
        return Err((Problem::new(Code::Expired, "this link has expired"), true));
    }
    // Whether this request ran the load, or waited for a concurrent one's.
    let (media, ran) = state
        .cache
        .get_or_fetch(id, verify::load(state, &record))
        .await
        .map_err(|e| (media_problem(&e, Context::Proxy), true))?;
    let source = match (ran, record.blob.is_some()) {
        (false, _) => Source::Shared,
        (true, true) => Source::Pinned,
        (true, false) => Source::Upstream,
    };
    // Remember what the bytes turned out to be, so the record (and the short URL's
    // extension) says it; only when it changed, to keep the store out of the way.
    let info = media.info();
    if record.media.as_ref() != Some(&info)
        && let Err(e) = state.links.set_media(id, &info).await
    {
        tracing::warn!(error = %e, %id, "could not record the verified media type");
    }
    Ok((media, source))
}

/// The response, and how many body bytes it carries (for the trace and metrics).
fn respond(media: &Media, method: &Method, req: &HeaderMap) -> (Response, u64) {
    let mut res = Response::new(Body::empty());
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, media.content_type.clone());
    h.insert(header::ETAG, media.etag.clone());
    h.insert(header::CACHE_CONTROL, CACHE_CONTROL.clone());
    h.insert(header::ACCEPT_RANGES, BYTES.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());

    if let Some(inm) = req.get(header::IF_NONE_MATCH)
        && etag_matches(inm, &media.etag)
    {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        return (res, 0);
    }
    let len = media.bytes.len() as u64;
    // If-Range with a different validator means: send the whole, fresh body.
    let range_header = match req.get(header::IF_RANGE) {
        Some(v) if v != media.etag => None,
        _ => req.get(header::RANGE).and_then(|v| v.to_str().ok()),
    };
    let (status, body) = match range::parse(range_header, len) {
        RangeReq::Full => {
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, media.content_length.clone());
            (StatusCode::OK, media.bytes.clone())
        }
        RangeReq::Partial { start, end } => {
            let h = res.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
                    .unwrap_or(BYTES.clone()),
            );
            // `Bytes::slice` shares the cached buffer: no copy.
            (
                StatusCode::PARTIAL_CONTENT,
                media.bytes.slice(start as usize..=end as usize),
            )
        }
        RangeReq::Unsatisfiable => {
            let mut p = Problem::new(
                Code::RangeNotSatisfiable,
                format!("the media is {len} bytes long"),
            )
            .into_response();
            p.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).unwrap_or(BYTES.clone()),
            );
            return (p, 0);
        }
    };
    *res.status_mut() = status;
    if method == Method::HEAD {
        return (res, 0);
    }
    let sent = body.len() as u64;
    *res.body_mut() = Body::from(body);
    (res, sent)
}

fn etag_matches(header: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(s) = header.to_str() else { return false };
    let ours = etag.as_bytes();
    s.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").as_bytes() == ours)
}
