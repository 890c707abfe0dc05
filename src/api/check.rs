//! `POST /api/v1/check`: the verdict of `medialink check`, run by this server (its
//! fetch guard, its profile unless the body names another). Nothing is stored.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::auth::Authorized;
use crate::api::problem::{Code, Problem};
use crate::check::{self, Verdict};
use crate::policy::{Kind, Policy, Profile};
use crate::state::SharedState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub url: String,
    #[serde(default)]
    pub kind: Kind,
    /// `whatsapp` or `any`; the server's profile when absent.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "whatsapp")]
    pub profile: Option<String>,
}

/// Fetches the URL as the gateway would and says whether the gateway would take it.
#[utoipa::path(
    post, path = "/api/v1/check", tag = "media",
    request_body = CheckRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The verdict (accepted or not)", body = Verdict),
        (status = 400, description = "Not a check request, or not an http(s) URL", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "URL or body too long", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn check(
    _: Authorized,
    State(state): State<SharedState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Verdict>, Problem> {
    let body = super::links::body_bytes(body)?;
    let req: CheckRequest = serde_json::from_slice(&body)
        .map_err(|e| Problem::new(Code::InvalidJson, e.to_string()))?;
    let policy = match req.profile.as_deref() {
        None => state.policy.clone(),
        Some(p) => Policy {
            profile: p
                .parse::<Profile>()
                .map_err(|e| Problem::new(Code::InvalidJson, e.to_string()))?,
            ..state.policy.clone()
        },
    };
    let verdict = check::check(&state.fetcher, &policy, &req.url, req.kind).await?;
    Ok(Json(verdict))
}
