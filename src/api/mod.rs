//! The HTTP surface: the router, health checks, and the API handlers. Handlers are
//! thin: extractors parse, one domain call, the result becomes a response.

pub mod auth;
pub mod check;
pub mod events;
pub mod limits;
pub mod links;
pub mod openapi;
pub mod page;
pub mod problem;
pub mod request_id;
pub mod send;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::state::SharedState;
use problem::{Code, Problem};

/// The whole HTTP surface; `/metrics` too unless it has its own listener.
pub fn router(state: SharedState, max_body: usize, metrics_here: bool) -> Router {
    let mut r = Router::new()
        .route("/", get(page::page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/links", post(links::create).get(events::recent))
        .route("/api/v1/links/{id}", get(links::get).delete(links::delete))
        .route(
            "/api/v1/links/{id}/events",
            get(events::list_events).post(events::report_send),
        )
        .route("/api/v1/send", post(send::send))
        .route("/api/v1/check", post(check::check))
        .merge(crate::media::routes());
    if metrics_here {
        r = r.route("/metrics", get(crate::metrics::render));
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        // Inside the request id layer, outside routing: it sees the matched route.
        .layer(crate::metrics::TrackLayer)
        .layer(request_id::RequestIdLayer)
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::new(Code::NotFound, "no such route")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        Code::MethodNotAllowed,
        "this route does not take that method",
    )
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = openapi::Health)))]
pub async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
}

/// The store is reachable.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = openapi::Health),
        (status = 503, description = "Store unavailable", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<SharedState>) -> Result<impl IntoResponse, Problem> {
    state.links.inner().ping().await?;
    Ok((
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ready"})),
    ))
}
