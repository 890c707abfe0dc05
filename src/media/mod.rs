//! `GET`/`HEAD /m/{id}[.ext]`: the proxy. A hit is served from the cache without
//! touching the store or the upstream; a miss looks the link up, runs the pipeline
//! in `verify` once for all concurrent requests, and caches only whole, verified
//! bytes. Responses carry exactly the headers of DESIGN §3, never an upstream's.

pub mod range;
pub mod verify;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::problem::{Code, Context, Problem};
use crate::cache::Media;
use crate::ids::LinkId;
use crate::state::SharedState;
use crate::store::now_unix;
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

async fn serve(
    State(state): State<SharedState>,
    Path(file): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    // `{id}` or `{id}.{anything}`: the extension is cosmetic (DESIGN §2).
    let raw = file.split_once('.').map_or(file.as_str(), |(id, _)| id);
    let Some(id) = LinkId::parse(raw) else {
        return Problem::not_found().into_response();
    };
    let media = match lookup(&state, &id).await {
        Ok(m) => m,
        Err(p) => return p.into_response(),
    };
    if media.expires_at.is_some_and(|t| t <= now_unix()) {
        return Problem::new(Code::Expired, "this link has expired").into_response();
    }
    respond(&media, &method, &headers)
}

async fn lookup(state: &SharedState, id: &LinkId) -> Result<Arc<Media>, Problem> {
    if let Some(hit) = state.cache.get(id).await {
        return Ok(hit);
    }
    let record = state.links.get(id).await?.ok_or_else(Problem::not_found)?;
    if record.is_expired(now_unix()) {
        return Err(Problem::new(Code::Expired, "this link has expired"));
    }
    let media = state
        .cache
        .get_or_fetch(id, verify::load(state, &record))
        .await
        .map_err(|e| media_problem(&e, Context::Proxy))?;
    // Remember what the bytes turned out to be, so the record (and the short URL's
    // extension) says it; only when it changed, to keep the store out of the way.
    let info = media.info();
    if record.media.as_ref() != Some(&info)
        && let Err(e) = state.links.set_media(id, &info).await
    {
        tracing::warn!(error = %e, %id, "could not record the verified media type");
    }
    Ok(media)
}

fn respond(media: &Media, method: &Method, req: &HeaderMap) -> Response {
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
        return res;
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
            return p;
        }
    };
    *res.status_mut() = status;
    if method != Method::HEAD {
        *res.body_mut() = Body::from(body);
    }
    res
}

fn etag_matches(header: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(s) = header.to_str() else { return false };
    let ours = etag.as_bytes();
    s.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").as_bytes() == ours)
}
