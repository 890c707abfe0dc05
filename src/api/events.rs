//! The delivery trace over HTTP: `GET /api/v1/links/{id}/events` (the link and its
//! trace), `POST /api/v1/links/{id}/events` (a send made elsewhere, reported by
//! `medialink send`), and `GET /api/v1/links` (recent links with their last fetch and
//! last send, for the web page).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::auth::Authorized;
use crate::api::problem::{Code, Problem};
use crate::ids::LinkId;
use crate::links::{self, LinkView};
use crate::sender::{MediaKind, Outcome};
use crate::state::SharedState;
use crate::trace::{Counters, Event, FetchEvent, SendEvent, Trace};

/// Most links `GET /api/v1/links` lists.
pub const MAX_RECENT: usize = 100;

/// A link and its delivery trace.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkTrace {
    pub link: LinkView,
    pub trace: Trace,
}

/// A link with its counters and its last fetch and last send.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkSummary {
    pub link: LinkView,
    pub counters: Counters,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch: Option<FetchEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_send: Option<SendEvent>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecentLinks {
    /// Newest first.
    pub links: Vec<LinkSummary>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecentParams {
    /// How many links, newest first (1 to 100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// A delivery made outside this server (by `medialink send`), for the link's trace.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendReport {
    /// What was sent: image or audio.
    pub kind: MediaKind,
    /// The outcome `medialink send` printed.
    pub outcome: Outcome,
}

fn parse_id(id: &str) -> Result<LinkId, Problem> {
    LinkId::parse(id).ok_or_else(Problem::not_found)
}

async fn trace_of(state: &SharedState, id: &LinkId) -> Result<(LinkView, Trace), Problem> {
    let record = state.links.get(id).await?.ok_or_else(Problem::not_found)?;
    let trace = state.trace.trace(state.links.inner().as_ref(), id).await?;
    Ok((links::view(&state.public_base, &record), trace))
}

/// The link's delivery trace: its last 50 fetches and sends (oldest first) and
/// counters of everything recorded.
#[utoipa::path(
    get, path = "/api/v1/links/{id}/events", tag = "links",
    params(("id" = String, Path, description = "The link id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The link and its trace", body = LinkTrace),
        (status = 401, description = "No or bad token", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn list_events(
    _: Authorized,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<LinkTrace>, Problem> {
    let id = parse_id(&id)?;
    let (link, trace) = trace_of(&state, &id).await?;
    Ok(Json(LinkTrace { link, trace }))
}

/// Records a delivery made by `medialink send` on the link it sent.
#[utoipa::path(
    post, path = "/api/v1/links/{id}/events", tag = "links",
    params(("id" = String, Path, description = "The link id")),
    request_body = SendReport,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, description = "Not a send report", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn report_send(
    _: Authorized,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let id = parse_id(&id)?;
    let body = super::links::body_bytes(body)?;
    let report: SendReport = serde_json::from_slice(&body)
        .map_err(|e| Problem::new(Code::InvalidJson, e.to_string()))?;
    state.links.get(&id).await?.ok_or_else(Problem::not_found)?;
    record_send(&state, Some(&id), &report.outcome, report.kind, "cli");
    Ok(StatusCode::NO_CONTENT)
}

/// A send's metric and, when it sent a link, its trace event; the one place both
/// API and CLI sends pass.
pub fn record_send(
    state: &SharedState,
    link: Option<&LinkId>,
    o: &Outcome,
    kind: MediaKind,
    via: &str,
) {
    let event = SendEvent::from_outcome(o, kind, via);
    metrics::counter!("medialink_gateway_sends_total", "outcome" => event.delivered_as.clone())
        .increment(1);
    if let Some(id) = link {
        state.trace.record(id, Event::Send(event));
    }
}

/// The most recently created links, each with its counters, last fetch and last send.
#[utoipa::path(
    get, path = "/api/v1/links", tag = "links",
    params(RecentParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Recent links, newest first", body = RecentLinks),
        (status = 400, description = "Bad limit", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn recent(
    _: Authorized,
    State(state): State<SharedState>,
    params: Result<Query<RecentParams>, QueryRejection>,
) -> Result<Json<RecentLinks>, Problem> {
    let Query(params) = params.map_err(|e| Problem::new(Code::InvalidJson, e.body_text()))?;
    let limit = params.limit.unwrap_or(20) as usize;
    if !(1..=MAX_RECENT).contains(&limit) {
        return Err(Problem::new(
            Code::InvalidJson,
            format!("limit must be between 1 and {MAX_RECENT}"),
        ));
    }
    let mut out = Vec::new();
    for record in state.links.recent(limit).await? {
        let trace = state
            .trace
            .trace(state.links.inner().as_ref(), &record.id)
            .await?;
        out.push(LinkSummary {
            link: links::view(&state.public_base, &record),
            counters: trace.counters,
            last_fetch: trace.last_fetch,
            last_send: trace.last_send,
        });
    }
    Ok(Json(RecentLinks { links: out }))
}
