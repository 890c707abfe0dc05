//! RFC 9457 problem responses: the one place where every layer's error becomes an
//! HTTP status and a `code` from DESIGN §3.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::request_id;

/// The `code` member of a problem; the public names of DESIGN §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    InvalidJson,
    InvalidUrl,
    /// Not in DESIGN's list: a phone number that is not one (400). See docs/DESIGN.md.
    InvalidPhone,
    UrlTooLong,
    UnsupportedScheme,
    ForbiddenUpstream,
    Unauthorized,
    NotFound,
    /// Not in DESIGN's list: a link past its `expires_at` (410). See docs/DESIGN.md.
    Expired,
    /// Not in DESIGN's list: a `Range` outside the media (416). See docs/DESIGN.md.
    RangeNotSatisfiable,
    /// Not in DESIGN's list: a method the route does not take (405).
    MethodNotAllowed,
    UpstreamUnreachable,
    UpstreamTimeout,
    UpstreamStatus,
    UpstreamNotMedia,
    UpstreamTooLarge,
    MediaNotAccepted,
    RateLimited,
    PayloadTooLarge,
    StoreUnavailable,
    GatewayError,
    /// Not in DESIGN's list: a bug on our side (500); the detail says no more.
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidJson => "invalid_json",
            Code::InvalidUrl => "invalid_url",
            Code::InvalidPhone => "invalid_phone",
            Code::UrlTooLong => "url_too_long",
            Code::UnsupportedScheme => "unsupported_scheme",
            Code::ForbiddenUpstream => "forbidden_upstream",
            Code::Unauthorized => "unauthorized",
            Code::NotFound => "not_found",
            Code::Expired => "expired",
            Code::RangeNotSatisfiable => "range_not_satisfiable",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::UpstreamUnreachable => "upstream_unreachable",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::UpstreamStatus => "upstream_status",
            Code::UpstreamNotMedia => "upstream_not_media",
            Code::UpstreamTooLarge => "upstream_too_large",
            Code::MediaNotAccepted => "media_not_accepted",
            Code::RateLimited => "rate_limited",
            Code::PayloadTooLarge => "payload_too_large",
            Code::StoreUnavailable => "store_unavailable",
            Code::GatewayError => "gateway_error",
            Code::Internal => "internal",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Code::InvalidJson => "The request body is not the JSON this endpoint takes",
            Code::InvalidUrl => "Not a valid URL",
            Code::InvalidPhone => "Not a phone number or WhatsApp jid",
            Code::UrlTooLong => "The URL is too long",
            Code::UnsupportedScheme => "Only http and https URLs can be shortened",
            Code::ForbiddenUpstream => "The upstream address is not allowed",
            Code::Unauthorized => "A valid bearer token is required",
            Code::NotFound => "No such link",
            Code::Expired => "The link has expired",
            Code::RangeNotSatisfiable => "The range is outside the media",
            Code::MethodNotAllowed => "Method not allowed",
            Code::UpstreamUnreachable => "The upstream could not be fetched",
            Code::UpstreamTimeout => "The upstream took too long",
            Code::UpstreamStatus => "The upstream answered with an error status",
            Code::UpstreamNotMedia => "The upstream did not send image or audio bytes",
            Code::UpstreamTooLarge => "The upstream media is too large",
            Code::MediaNotAccepted => "The media is not accepted for this link",
            Code::RateLimited => "Too many requests",
            Code::PayloadTooLarge => "The request body is too large",
            Code::StoreUnavailable => "The link store is unavailable",
            Code::GatewayError => "The messaging gateway failed",
            Code::Internal => "Internal error",
        }
    }
}

/// Where a media error happened: on `/m/` it is the upstream's fault (502/504); at
/// creation with `verify: true` the sender's input is unacceptable (422).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Proxy,
    Create,
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: Code,
    pub detail: Cow<'static, str>,
    pub retry_after: Option<u64>,
    /// Extension members (RFC 9457 §3.2), e.g. the send outcome.
    pub extra: Option<(&'static str, serde_json::Value)>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<std::collections::BTreeMap<&'static str, &'a serde_json::Value>>,
}

impl Problem {
    pub fn new(code: Code, detail: impl Into<Cow<'static, str>>) -> Self {
        let status = match code {
            Code::InvalidJson
            | Code::InvalidUrl
            | Code::InvalidPhone
            | Code::UnsupportedScheme
            | Code::ForbiddenUpstream => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Expired => StatusCode::GONE,
            Code::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::UrlTooLong | Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Code::UpstreamUnreachable
            | Code::UpstreamStatus
            | Code::UpstreamNotMedia
            | Code::UpstreamTooLarge
            | Code::MediaNotAccepted
            | Code::GatewayError => StatusCode::BAD_GATEWAY,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after = match code {
            Code::StoreUnavailable => Some(1),
            _ => None,
        };
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after,
            extra: None,
        }
    }

    /// A media-pipeline error, with the status its context gives it (DESIGN §3).
    pub fn media(code: Code, detail: impl Into<Cow<'static, str>>, ctx: Context) -> Self {
        let mut p = Self::new(code, detail);
        if ctx == Context::Create && p.status.is_server_error() && code != Code::StoreUnavailable {
            p.status = StatusCode::UNPROCESSABLE_ENTITY;
        }
        if ctx == Context::Create && code == Code::ForbiddenUpstream {
            p.status = StatusCode::BAD_REQUEST;
        }
        if ctx == Context::Proxy && code == Code::ForbiddenUpstream {
            p.status = StatusCode::BAD_GATEWAY;
        }
        p
    }

    pub fn with_extra(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.extra = Some((name, value));
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn not_found() -> Self {
        Self::new(Code::NotFound, "no link has this id")
    }

    /// The JSON object, as an array item of a batch answer.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).unwrap_or(serde_json::Value::Null)
    }

    fn body(&self) -> Body<'_> {
        Body {
            kind: format!(
                "https://medialink.dev/problems/{}",
                self.code.as_str().replace('_', "-")
            ),
            title: self.code.title(),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code.as_str(),
            request_id: request_id::current(),
            extra: self
                .extra
                .as_ref()
                .map(|(k, v)| std::iter::once((*k, v)).collect()),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        // Serializing a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut res = (self.status, json).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == Code::Unauthorized {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // These refuse before (or while) reading the body, and hyper then closes the
        // connection instead of draining it: say so, or a client that reuses the
        // connection for its next request races the close (IncompleteMessage).
        if matches!(self.code, Code::Unauthorized | Code::PayloadTooLarge) {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::warn!(error = %e, request_id = request_id::current().as_deref(), "store error");
        Problem::new(Code::StoreUnavailable, e.to_string())
    }
}

impl From<crate::canon::CanonError> for Problem {
    fn from(e: crate::canon::CanonError) -> Self {
        use crate::canon::CanonError as E;
        let code = match &e {
            E::TooLong { .. } => Code::UrlTooLong,
            E::Invalid(_) | E::Userinfo => Code::InvalidUrl,
            E::UnsupportedScheme(_) => Code::UnsupportedScheme,
        };
        Problem::new(code, e.to_string())
    }
}

impl Code {
    /// The code a DESIGN code name stands for (used to pass problems through layers
    /// that carry them as strings, such as the sender's outcome).
    pub fn from_name(name: &str) -> Option<Code> {
        ALL.iter().copied().find(|c| c.as_str() == name)
    }
}

const ALL: &[Code] = &[
    Code::InvalidJson,
    Code::InvalidUrl,
    Code::InvalidPhone,
    Code::UrlTooLong,
    Code::UnsupportedScheme,
    Code::ForbiddenUpstream,
    Code::Unauthorized,
    Code::NotFound,
    Code::Expired,
    Code::RangeNotSatisfiable,
    Code::MethodNotAllowed,
    Code::UpstreamUnreachable,
    Code::UpstreamTimeout,
    Code::UpstreamStatus,
    Code::UpstreamNotMedia,
    Code::UpstreamTooLarge,
    Code::MediaNotAccepted,
    Code::RateLimited,
    Code::PayloadTooLarge,
    Code::StoreUnavailable,
    Code::GatewayError,
    Code::Internal,
];
