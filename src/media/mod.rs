//! `/m/{id}[.ext]`: serves a link's media (interim: answers for unknown ids only).
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;

use crate::api::problem::Problem;
use crate::ids::LinkId;
use crate::state::SharedState;

pub fn routes() -> Router<SharedState> {
    Router::new().route("/m/{file}", get(serve))
}

async fn serve(
    State(state): State<SharedState>,
    Path(file): Path<String>,
) -> Result<&'static str, Problem> {
    let id = file.split_once('.').map_or(file.as_str(), |(id, _)| id);
    let id = LinkId::parse(id).ok_or_else(Problem::not_found)?;
    state.links.get(&id).await?.ok_or_else(Problem::not_found)?;
    Err(Problem::not_found())
}
