//! Handlers of `/api/v1/links`: parse, call `links`, answer. Nothing else.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::auth::Authorized;
use crate::api::problem::{Code, Context, Problem};
use crate::ids::LinkId;
use crate::links::{self, CreateLink, LinkError, LinkView};
use crate::state::SharedState;

/// Most links in one array request (DESIGN §3).
pub const MAX_BATCH: usize = 1000;

impl From<LinkError> for Problem {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Url(e) => e.into(),
            LinkError::BadExpiry => Problem::new(Code::InvalidJson, e.to_string()),
            LinkError::Store(e) => e.into(),
            LinkError::IdConflict(_) => Problem::new(Code::InvalidUrl, e.to_string()),
            LinkError::Forbidden(e) => Problem::new(Code::ForbiddenUpstream, e.to_string()),
            LinkError::Media(e) => crate::media::media_problem(&e, Context::Create),
            LinkError::Blob(e) => Problem::new(Code::StoreUnavailable, e.to_string()),
        }
    }
}

/// Reads the body ourselves so every failure is a problem with DESIGN's code.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                Code::PayloadTooLarge,
                "the request body is larger than --max-body",
            )
        } else {
            Problem::new(Code::InvalidJson, r.body_text())
        }
    })
}

/// A URL longer than DESIGN's limit is a 413 whatever else the item says. Only the
/// length: `links` canonicalizes once, later (and catches a URL that
/// re-serialization makes too long).
fn check_url_len(url: &str) -> Result<(), Problem> {
    if url.len() > crate::canon::MAX_URL_LEN {
        return Err(crate::canon::CanonError::TooLong { len: url.len() }.into());
    }
    Ok(())
}

/// An array holds 1 to `MAX_BATCH` links.
fn check_batch_len(n: usize) -> Result<(), Problem> {
    match n {
        0 => Err(Problem::new(Code::InvalidJson, "the array is empty")),
        n if n > MAX_BATCH => Err(Problem::new(
            Code::PayloadTooLarge,
            format!("{n} links in one request; at most {MAX_BATCH}"),
        )),
        _ => Ok(()),
    }
}

fn parse_one(v: serde_json::Value) -> Result<CreateLink, Problem> {
    // The length before serde sees it, so a huge URL is a 413 even when the body
    // has other faults.
    if let Some(u) = v.get("url").and_then(|u| u.as_str()) {
        check_url_len(u)?;
    }
    serde_json::from_value(v).map_err(|e| Problem::new(Code::InvalidJson, e.to_string()))
}

/// Creates a link (201), or returns the existing one for a known URL (200). An array
/// of up to 1,000 answers an array (207 when some items failed).
#[utoipa::path(
    post, path = "/api/v1/links", tag = "links",
    request_body = crate::api::openapi::CreateBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Already known", body = crate::api::openapi::CreateAnswer),
        (status = 201, description = "Created", body = crate::api::openapi::CreateAnswer),
        (status = 207, description = "Some items of an array failed", body = Vec<crate::api::openapi::BatchItem>),
        (status = 400, description = "Bad JSON or URL", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "URL or body too long", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "verify: the media is not acceptable", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    _: Authorized,
    State(state): State<SharedState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body_bytes(body)?;
    // The common cases, one well-formed object or an array of them, parse straight
    // into their structs; anything else goes through a `Value` first, which is what
    // lets a huge URL be a 413 even when the body has other faults.
    match body.first().copied() {
        Some(b'{') => {
            if let Ok(req) = serde_json::from_slice::<CreateLink>(&body) {
                check_url_len(&req.url)?;
                return create_one(&state, &req).await;
            }
        }
        Some(b'[') => {
            if let Ok(reqs) = serde_json::from_slice::<Vec<CreateLink>>(&body) {
                check_batch_len(reqs.len())?;
                let parsed = reqs
                    .into_iter()
                    .map(|r| check_url_len(&r.url).map(|()| r))
                    .collect();
                return create_batch(&state, parsed).await;
            }
        }
        _ => {}
    }
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Problem::new(Code::InvalidJson, e.to_string()))?;
    match value {
        serde_json::Value::Array(items) => {
            check_batch_len(items.len())?;
            create_batch(&state, items.into_iter().map(parse_one).collect()).await
        }
        v @ serde_json::Value::Object(_) => create_one(&state, &parse_one(v)?).await,
        _ => Err(Problem::new(
            Code::InvalidJson,
            "the body must be a JSON object or an array of objects",
        )),
    }
}

async fn create_one(state: &SharedState, req: &CreateLink) -> Result<Response, Problem> {
    let c = links::create(state, req).await?;
    let status = if c.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(links::view(&state.public_base, &c.record))).into_response())
}

/// One item of an array's answer, serialized as it is (no `Value` in between).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum BatchItem<'a> {
    Link(links::ViewRef<'a>),
    Problem(serde_json::Value),
}

/// An array answers an array: each item a link or a problem. 201 when every item
/// succeeded and one was new, 200 when all already existed, 207 when any failed.
/// `parsed` holds 1 to `MAX_BATCH` items.
async fn create_batch(
    state: &SharedState,
    parsed: Vec<Result<CreateLink, Problem>>,
) -> Result<Response, Problem> {
    // The valid items move on to be created; each place keeps only its problem, if any.
    let mut valid: Vec<CreateLink> = Vec::with_capacity(parsed.len());
    let rejected: Vec<Option<Problem>> = parsed
        .into_iter()
        .map(|p| match p {
            Ok(req) => {
                valid.push(req);
                None
            }
            Err(problem) => Some(problem),
        })
        .collect();
    let mut outcomes = links::create_many(state, &valid).await.into_iter();
    let results: Vec<Result<links::Created, Problem>> = rejected
        .into_iter()
        .map(|bad| match bad {
            Some(p) => Err(p),
            // One outcome per valid item, in order.
            None => outcomes
                .next()
                .unwrap_or_else(|| {
                    Err(LinkError::Store(crate::store::StoreError::Unavailable(
                        "no answer".into(),
                    )))
                })
                .map_err(Problem::from),
        })
        .collect();
    let (mut any_failed, mut any_created) = (false, false);
    let out: Vec<BatchItem<'_>> = results
        .iter()
        .map(|r| match r {
            Ok(c) => {
                any_created |= c.created;
                BatchItem::Link(links::ViewRef {
                    public_base: &state.public_base,
                    record: &c.record,
                })
            }
            Err(p) => {
                any_failed = true;
                BatchItem::Problem(p.to_json())
            }
        })
        .collect();
    let status = match (any_failed, any_created) {
        (true, _) => StatusCode::MULTI_STATUS,
        (false, true) => StatusCode::CREATED,
        (false, false) => StatusCode::OK,
    };
    Ok((status, Json(out)).into_response())
}

fn parse_id(id: &str) -> Result<LinkId, Problem> {
    LinkId::parse(id).ok_or_else(Problem::not_found)
}

/// The link's record.
#[utoipa::path(
    get, path = "/api/v1/links/{id}", tag = "links",
    params(("id" = String, Path, description = "The link id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The link", body = LinkView),
        (status = 401, description = "No or bad token", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    _: Authorized,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let record = state.links.get(&id).await?.ok_or_else(Problem::not_found)?;
    Ok(Json(links::view(&state.public_base, &record)).into_response())
}

/// Deletes the link; `/m/{id}` answers 404 after.
#[utoipa::path(
    delete, path = "/api/v1/links/{id}", tag = "links",
    params(("id" = String, Path, description = "The link id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or bad token", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    _: Authorized,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let id = parse_id(&id)?;
    if links::delete(&state, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found())
    }
}
