//! The HTTP surface: the router, health checks, and the API handlers. Handlers are
//! thin: extractors parse, one domain call, the result becomes a response.

pub mod auth;
pub mod limits;
pub mod links;
pub mod problem;
pub mod request_id;
pub mod send;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::SharedState;
use problem::{Code, Problem};

pub fn router(state: SharedState, max_body: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/links", axum::routing::post(links::create))
        .route("/api/v1/links/{id}", get(links::get).delete(links::delete))
        .route("/api/v1/send", axum::routing::post(send::send))
        .merge(crate::media::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(request_id::layer))
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

async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
}

async fn readyz(State(state): State<SharedState>) -> Result<impl IntoResponse, Problem> {
    state.links.inner().ping().await?;
    Ok((
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ready"})),
    ))
}
