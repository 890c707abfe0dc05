//! `POST /api/v1/send`: shorten (verified, through this very service) and deliver
//! through the gateway (DESIGN §9). The delivery logic is `sender`'s; this only
//! adapts it to HTTP.

use async_trait::async_trait;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};

use crate::api::auth::Authorized;
use crate::api::problem::{Code, Context, Problem};
use crate::links::{self, CreateLink};
use crate::policy::Kind;
use crate::sender::{
    self, DeliveredAs, MediaKind, SendError, SendRequest, ShortenError, Shortener,
};
use crate::state::{AppState, SharedState};

/// Shortens through this process's own link service: verified (the gateway must get
/// real media) and, under the whatsapp profile, converted to what the phone plays.
pub struct LocalShortener<'a>(pub &'a AppState);

#[async_trait]
impl Shortener for LocalShortener<'_> {
    async fn shorten(&self, url: &str, kind: MediaKind) -> Result<String, ShortenError> {
        let req = CreateLink {
            url: url.to_owned(),
            kind: match kind {
                MediaKind::Image => Kind::Image,
                MediaKind::Audio => Kind::Voice,
                MediaKind::Text => Kind::Any,
            },
            verify: true,
            convert: None,
            pin: Some(true),
            expires_in: None,
        };
        match links::create(self.0, &req).await {
            Ok(c) => Ok(links::short_url(&self.0.public_base, &c.record)),
            Err(e) => {
                let p = Problem::from(e);
                Err(ShortenError::Rejected {
                    code: p.code.as_str().to_owned(),
                    detail: p.detail.into_owned(),
                })
            }
        }
    }
}

impl From<SendError> for Problem {
    fn from(e: SendError) -> Self {
        let code = match &e {
            SendError::BadPhone(_) => Code::InvalidPhone,
            SendError::MissingUrl(_) | SendError::InvalidUrl(_) => Code::InvalidUrl,
            SendError::MissingText => Code::InvalidJson,
        };
        Problem::new(code, e.to_string())
    }
}

/// Shortens (verified) and delivers through the gateway; one outcome back.
#[utoipa::path(
    post, path = "/api/v1/send", tag = "send",
    request_body = crate::api::openapi::SendBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Delivered (as asked, or as the text fallback)", body = crate::sender::Outcome),
        (status = 400, description = "Bad JSON, phone or URL", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "The media is not acceptable (the problem's outcome says more)", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 502, description = "The gateway did not deliver (the problem's outcome says what it answered)", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = crate::api::openapi::ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn send(
    _: Authorized,
    State(state): State<SharedState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = super::links::body_bytes(body)?;
    let req: SendRequest = serde_json::from_slice(&body)
        .map_err(|e| Problem::new(Code::InvalidJson, e.to_string()))?;
    let gateway = state.gateway.as_ref().ok_or_else(|| {
        Problem::new(
            Code::GatewayError,
            "no gateway is configured on this server (CHATFLOW_TOKEN and CHATFLOW_INSTANCE_ID)",
        )
    })?;
    let outcome = sender::deliver(gateway, &LocalShortener(&state), &req).await?;
    let link = outcome
        .short_url
        .as_deref()
        .and_then(links::id_in_short_url);
    super::events::record_send(&state, link.as_ref(), &outcome, req.kind, "api");
    if outcome.delivered_as != DeliveredAs::None {
        return Ok(Json(outcome).into_response());
    }
    // Not delivered: a problem (so clients that only check the status see it), with
    // the whole outcome as an extension member.
    let (code, detail) = match &outcome.error {
        Some(e) => (
            Code::from_name(&e.code).unwrap_or(Code::GatewayError),
            e.detail.clone(),
        ),
        None => (
            Code::GatewayError,
            "the gateway did not deliver the message".to_owned(),
        ),
    };
    let outcome_json = serde_json::to_value(&outcome).unwrap_or_default();
    // A refused media URL is the caller's (422, as a verified create); anything the
    // gateway did is a gateway error (502).
    let problem = match code {
        Code::GatewayError => Problem::new(code, detail),
        _ => Problem::media(code, detail, Context::Create),
    };
    Err(problem.with_extra("outcome", outcome_json))
}
