//! Delivery of one message to a lead (DESIGN §9): validate, shorten, send, classify,
//! retry, and fall back to a text link only when asked.
//!
//! Owns the rules; the HTTP call itself is `gateway`'s, the short link the
//! [`Shortener`]'s (medialink's own link service, or its API from the CLI).
//!
//! Rules chosen (each a lesson of the seed incident, DESIGN §8):
//! - Usage errors (bad phone, missing or non-http(s) `url` for image/audio, blank
//!   `text` for text) are a [`SendError`] returned before any shorten or gateway call.
//! - The media URL always goes through the shortener, so the gateway sees a short,
//!   verified URL and never the long signed one. A shortener failure is "not
//!   delivered" with the shortener's code (e.g. `upstream_not_media`); no fallback,
//!   since there is no short link to send and the media itself is the problem.
//! - A failed answer is classified by its message first (`outcome::classify`); only
//!   when the message is unknown does the status matter (5xx: `gateway_unreachable`).
//! - Retried: timeouts, connection failures and unknown 5xx only, at most
//!   [`RetryPolicy::max_attempts`] (3) calls, backoff `base * 2^(n-1)` (1 s, 2 s). A
//!   known message is never retried, whatever its status: it would fail the same way.
//!   A retried timeout may duplicate a message the gateway sent late: DESIGN §9 asks
//!   for it, and a 90 s timeout makes that rare.
//! - Text fallback ("🖼 Photo: {short_url}") only with `fallback_text`, and only after
//!   `bad_request`, `media_rejected`, `gateway_error` or `gateway_unreachable`. Never
//!   after `instance_disconnected` or `not_on_whatsapp` (a text fails the same way),
//!   nor after `gateway_timeout` (the media may still arrive: a text would duplicate it).

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::gateway::{Gateway, GatewayAnswer, GatewayError};
use super::jid::{Jid, JidError, normalize};
use super::outcome::{
    DeliveredAs, Failure, GatewaySummary, Outcome, OutcomeError, classify, detail,
};

/// What is sent. `Audio` is always a voice note (the gateway's `send-audio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    #[serde(alias = "voice")]
    Audio,
    Text,
}

impl MediaKind {
    /// The `kind` to ask medialink for (DESIGN §3): a voice note must be OGG/Opus.
    pub fn link_kind(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Audio => "voice",
            MediaKind::Text => "any",
        }
    }
}

/// Why a short link could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShortenError {
    /// medialink refused the URL or its media; `code` is a DESIGN §3 problem code.
    #[error("{code}: {detail}")]
    Rejected { code: String, detail: String },
    /// medialink itself could not be reached or failed.
    #[error("the shortener is unavailable: {0}")]
    Unavailable(String),
}

impl ShortenError {
    pub fn code(&self) -> &str {
        match self {
            ShortenError::Rejected { code, .. } => code,
            ShortenError::Unavailable(_) => "shortener_unavailable",
        }
    }
}

/// Makes the short (and, in medialink, verified) URL the gateway will fetch.
#[async_trait]
pub trait Shortener: Send + Sync {
    async fn shorten(&self, url: &str, kind: MediaKind) -> Result<String, ShortenError>;
}

/// The body of `POST /api/v1/send` (DESIGN §9; the OpenAPI document states it per kind
/// as `api::openapi::SendBody`). Unknown fields are refused so that a typo such as
/// `fallbackText` is not silently ignored. `caption` is used by image (and by the
/// fallback text); `text` only by kind text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub to: String,
    pub kind: MediaKind,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
    #[serde(default)]
    pub fallback_text: bool,
}

/// A usage error, found before any call (CLI exit 2, API 400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    #[error("invalid phone number: {0}")]
    BadPhone(#[from] JidError),
    #[error("kind {0} needs a url")]
    MissingUrl(&'static str),
    #[error("the media url must be an absolute http(s) URL: {0}")]
    InvalidUrl(String),
    #[error("kind text needs a non-empty text")]
    MissingText,
}

/// How often and how patiently to retry. Tests shrink `backoff_base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Gateway calls per message, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the 2nd call; doubled before each later one.
    pub backoff_base: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_base: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed call number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.backoff_base
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
    }
}

/// [`deliver_with`] and the default [`RetryPolicy`].
pub async fn deliver(
    gw: &Gateway,
    shortener: &dyn Shortener,
    req: &SendRequest,
) -> Result<Outcome, SendError> {
    deliver_with(gw, shortener, req, &RetryPolicy::default()).await
}

/// Delivers `req` as the module doc describes.
pub async fn deliver_with(
    gw: &Gateway,
    shortener: &dyn Shortener,
    req: &SendRequest,
    policy: &RetryPolicy,
) -> Result<Outcome, SendError> {
    let valid = validate(req)?;
    let jid = valid.jid;
    let mut outcome = Outcome {
        delivered_as: DeliveredAs::None,
        short_url: None,
        jid: Some(jid.as_str().to_owned()),
        gateway: None,
        attempts: 0,
        fallback: None,
        error: None,
    };
    let caption = req.caption.as_deref().unwrap_or("");

    let (main, media) = match valid.payload {
        Payload::Text(text) => (with_retry(policy, || gw.send_text(&jid, text)).await, None),
        Payload::Media(url) => {
            let short = match shortener.shorten(url, req.kind).await {
                Ok(short) => short,
                Err(e) => {
                    outcome.error = Some(OutcomeError {
                        code: e.code().to_owned(),
                        detail: e.to_string(),
                    });
                    return Ok(finish(outcome));
                }
            };
            outcome.short_url = Some(short.clone());
            let sent = match req.kind {
                MediaKind::Audio => with_retry(policy, || gw.send_audio(&jid, &short)).await,
                _ => with_retry(policy, || gw.send_image(&jid, caption, &short)).await,
            };
            (sent, Some(short))
        }
    };

    outcome.attempts = main.attempts;
    outcome.gateway = main.result.as_ref().ok().map(GatewaySummary::from);
    let Some(failure) = main.failure else {
        outcome.delivered_as = match req.kind {
            MediaKind::Image => DeliveredAs::Image,
            MediaKind::Audio => DeliveredAs::Audio,
            MediaKind::Text => DeliveredAs::Text,
        };
        return Ok(finish(outcome));
    };
    outcome.error = Some(OutcomeError {
        code: failure.as_str().to_owned(),
        detail: detail(&main.result),
    });

    if let Some(short) = media.filter(|_| req.fallback_text && failure.allows_text_fallback()) {
        let text = fallback_message(req.kind, &short, caption);
        let fallback = with_retry(policy, || gw.send_text(&jid, &text)).await;
        outcome.fallback = fallback.result.as_ref().ok().map(GatewaySummary::from);
        if fallback.failure.is_none() {
            outcome.delivered_as = DeliveredAs::TextFallback;
        }
    }
    Ok(finish(outcome))
}

/// The text sent instead of the media: the short link, then the caption if any.
pub fn fallback_message(kind: MediaKind, short_url: &str, caption: &str) -> String {
    let label = match kind {
        MediaKind::Audio => "🔊 Voice message",
        MediaKind::Image | MediaKind::Text => "🖼 Photo",
    };
    let caption = caption.trim();
    if caption.is_empty() {
        format!("{label}: {short_url}")
    } else {
        format!("{label}: {short_url}\n{caption}")
    }
}

struct Valid<'a> {
    jid: Jid,
    payload: Payload<'a>,
}

enum Payload<'a> {
    Text(&'a str),
    Media(&'a str),
}

fn validate(req: &SendRequest) -> Result<Valid<'_>, SendError> {
    let jid = normalize(&req.to)?;
    let payload = match req.kind {
        MediaKind::Text => match req.text.as_deref() {
            Some(text) if !text.trim().is_empty() => Payload::Text(text),
            _ => return Err(SendError::MissingText),
        },
        kind => {
            let name = if kind == MediaKind::Audio {
                "audio"
            } else {
                "image"
            };
            let url = req
                .url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .ok_or(SendError::MissingUrl(name))?;
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Payload::Media(url),
                _ => return Err(SendError::InvalidUrl(url.chars().take(200).collect())),
            }
        }
    };
    Ok(Valid { jid, payload })
}

struct Attempted {
    result: Result<GatewayAnswer, GatewayError>,
    attempts: u32,
    failure: Option<Failure>,
}

async fn with_retry<F, Fut>(policy: &RetryPolicy, mut call: F) -> Attempted
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<GatewayAnswer, GatewayError>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = call().await;
        let failure = classify(&result);
        match failure {
            Some(f) if f.retryable() && attempts < policy.max_attempts => {
                let delay = policy.delay_after(attempts);
                tracing::info!(
                    attempt = attempts,
                    code = f.as_str(),
                    delay_ms = delay.as_millis() as u64,
                    "retrying gateway call"
                );
                tokio::time::sleep(delay).await;
            }
            _ => {
                return Attempted {
                    result,
                    attempts,
                    failure,
                };
            }
        }
    }
}

fn finish(outcome: Outcome) -> Outcome {
    tracing::info!(
        delivered_as = ?outcome.delivered_as,
        attempts = outcome.attempts,
        code = outcome.error.as_ref().map_or("", |e| e.code.as_str()),
        "delivery finished"
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base() {
        let p = RetryPolicy::default();
        assert_eq!([1, 2, 3].map(|n| p.delay_after(n).as_secs()), [1, 2, 4]);
        assert_eq!(p.delay_after(1000), Duration::from_secs(1 << 16));
    }

    #[test]
    fn request_body_matches_design_section_9() {
        let req: SendRequest = serde_json::from_str(
            r#"{"to":"+7 701 570 55 55","kind":"image","url":"https://a/b.jpg","caption":"hi","fallback_text":true}"#,
        )
        .unwrap();
        assert_eq!(req.kind, MediaKind::Image);
        assert!(req.fallback_text);
        let min: SendRequest =
            serde_json::from_str(r#"{"to":"77015705555","kind":"text","text":"hello"}"#).unwrap();
        assert!(!min.fallback_text);
        assert!(
            serde_json::from_str::<SendRequest>(r#"{"to":"1","kind":"image","fallbackText":true}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<SendRequest>(r#"{"to":"1","kind":"video"}"#).is_err());
    }

    #[test]
    fn validation_refuses_before_any_call() {
        let base = SendRequest {
            to: "77015705555".into(),
            kind: MediaKind::Image,
            url: None,
            text: None,
            caption: None,
            fallback_text: false,
        };
        assert_eq!(validate(&base).err(), Some(SendError::MissingUrl("image")));
        let audio = SendRequest {
            kind: MediaKind::Audio,
            url: Some("  ".into()),
            ..base.clone()
        };
        assert_eq!(validate(&audio).err(), Some(SendError::MissingUrl("audio")));
        let ftp = SendRequest {
            url: Some("ftp://a/b.jpg".into()),
            ..base.clone()
        };
        assert!(matches!(validate(&ftp), Err(SendError::InvalidUrl(_))));
        let text = SendRequest {
            kind: MediaKind::Text,
            text: Some(" ".into()),
            ..base.clone()
        };
        assert_eq!(validate(&text).err(), Some(SendError::MissingText));
        let phone = SendRequest {
            to: "abc".into(),
            url: Some("https://a/b".into()),
            ..base
        };
        assert!(matches!(validate(&phone), Err(SendError::BadPhone(_))));
    }

    #[test]
    fn fallback_text_carries_the_link_and_caption() {
        assert_eq!(
            fallback_message(MediaKind::Image, "https://s/m/a.jpg", ""),
            "🖼 Photo: https://s/m/a.jpg"
        );
        assert_eq!(
            fallback_message(MediaKind::Audio, "https://s/m/b.ogg", " hi "),
            "🔊 Voice message: https://s/m/b.ogg\nhi"
        );
    }
}
