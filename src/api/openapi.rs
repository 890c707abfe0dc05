//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers'
//! `#[utoipa::path]` annotations and the JSON types' `ToSchema` derives, served at
//! `GET /api/v1/openapi.json`. CI runs schemathesis against it (`.ci/run`), so a
//! documented shape that the code does not answer fails the build.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::links::{CreateLink, LinkView};

/// An RFC 9457 problem, as every error answers (DESIGN §3). Members beyond these
/// may appear (e.g. `outcome` on a failed send).
#[derive(Serialize, ToSchema)]
pub struct ProblemDoc {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// A stable code from DESIGN §3, e.g. `upstream_not_media`.
    pub code: String,
    /// The request's `X-Request-Id`.
    pub request_id: Option<String>,
}

/// One link to create, or up to 1,000 in an array.
#[derive(serde::Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CreateBody {
    One(CreateLink),
    Many(Vec<CreateLink>),
}

/// One item of a batch answer: the link, or the problem that refused it.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchItem {
    Link(LinkView),
    Problem(ProblemDoc),
}

/// A create's answer: the link for one object, an array for an array.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreateAnswer {
    One(LinkView),
    Many(Vec<BatchItem>),
}

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "medialink",
        description = "Short links that serve verified image and audio bytes, a sender for the ChatFlow gateway, and each link's delivery trace."
    ),
    paths(
        crate::api::links::create,
        crate::api::links::get,
        crate::api::links::delete,
        crate::api::events::recent,
        crate::api::events::list_events,
        crate::api::events::report_send,
        crate::api::send::send,
        crate::api::check::check,
        crate::api::healthz,
        crate::api::readyz,
    ),
    components(schemas(ProblemDoc, CreateBody, CreateAnswer, BatchItem, Health)),
    modifiers(&Bearer),
    tags(
        (name = "links", description = "Short links and their delivery traces"),
        (name = "send", description = "Delivery through the gateway"),
        (name = "media", description = "Media verdicts"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_default());

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Response {
    let mut res = DOCUMENT.as_str().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_names_every_route() {
        let v: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        assert_eq!(v["openapi"], "3.1.0");
        for path in [
            "/api/v1/links",
            "/api/v1/links/{id}",
            "/api/v1/links/{id}/events",
            "/api/v1/send",
            "/api/v1/check",
            "/healthz",
            "/readyz",
        ] {
            assert!(v["paths"][path].is_object(), "{path} missing");
        }
    }
}
