//! What a delivery came to (DESIGN §9): the [`Outcome`] printed and returned, and the
//! classification of a failed gateway call into a [`Failure`] code.
//!
//! Owns the meaning of the gateway's answers (DESIGN §8 lists its messages) and of
//! the exit codes; it makes no calls. `deliver` decides what to do with a class.
//!
//! Classification reads the message first and the status only for unknown messages:
//! the gateway's known failures ("are required", "instance_id is invalid", "not found
//! on WhatsApp", "Invalid URL found") mean the same whatever status carries them, and
//! retrying them would fail the same way.

use serde::{Deserialize, Serialize};

use super::gateway::{GatewayAnswer, GatewayError};

/// Why a gateway call did not deliver; `as_str` is the outcome's `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// "Parameter [...] are required!" (usually an empty caption, DESIGN §8).
    BadRequest,
    /// "Either your instance_id is invalid or your instance is not longer connected".
    InstanceDisconnected,
    /// "This number is not found on WhatsApp".
    NotOnWhatsapp,
    /// "Invalid URL found": the gateway's own media fetch or upload failed.
    MediaRejected,
    GatewayTimeout,
    /// No connection, or a 5xx without a known message.
    GatewayUnreachable,
    /// Anything else: the catch-all "something went wrong", a 4xx page, ...
    GatewayError,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::BadRequest => "bad_request",
            Failure::InstanceDisconnected => "instance_disconnected",
            Failure::NotOnWhatsapp => "not_on_whatsapp",
            Failure::MediaRejected => "media_rejected",
            Failure::GatewayTimeout => "gateway_timeout",
            Failure::GatewayUnreachable => "gateway_unreachable",
            Failure::GatewayError => "gateway_error",
        }
    }

    pub fn retryable(self) -> bool {
        matches!(self, Failure::GatewayTimeout | Failure::GatewayUnreachable)
    }

    pub fn allows_text_fallback(self) -> bool {
        matches!(
            self,
            Failure::BadRequest
                | Failure::MediaRejected
                | Failure::GatewayError
                | Failure::GatewayUnreachable
        )
    }
}

/// `None` when the call delivered.
pub fn classify(result: &Result<GatewayAnswer, GatewayError>) -> Option<Failure> {
    let answer = match result {
        Ok(a) if a.success => return None,
        Ok(a) => a,
        Err(GatewayError::Timeout(_)) => return Some(Failure::GatewayTimeout),
        Err(GatewayError::Unreachable(_)) => return Some(Failure::GatewayUnreachable),
        Err(GatewayError::Config(_)) => return Some(Failure::GatewayError),
    };
    let message = answer.message.as_deref().unwrap_or("").to_lowercase();
    let class = if message.contains("are required") {
        Failure::BadRequest
    } else if message.contains("instance_id is invalid")
        || message.contains("not longer connected")
        || message.contains("no longer connected")
    {
        Failure::InstanceDisconnected
    } else if message.contains("not found on whatsapp") {
        Failure::NotOnWhatsapp
    } else if message.contains("invalid url") {
        Failure::MediaRejected
    } else if answer.status >= 500 {
        Failure::GatewayUnreachable
    } else {
        Failure::GatewayError
    };
    Some(class)
}

/// How the message went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveredAs {
    Image,
    Audio,
    Text,
    TextFallback,
    None,
}

/// The part of a gateway answer an outcome shows (DESIGN §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewaySummary {
    pub status: u16,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl From<&GatewayAnswer> for GatewaySummary {
    fn from(a: &GatewayAnswer) -> Self {
        Self {
            status: a.status,
            success: a.success,
            message: a.message.clone(),
        }
    }
}

/// A classified failure: a [`Failure`] code, or the shortener's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutcomeError {
    pub code: String,
    pub detail: String,
}

/// The one JSON object `medialink send` prints and `POST /api/v1/send` returns.
/// `Deserialize` too, so the CLI can read the API's answer and pick its exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    pub delivered_as: DeliveredAs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jid: Option<String>,
    /// The last answer to the main send (absent when no call answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySummary>,
    /// Gateway calls made for the main send (retries included, fallback excluded).
    pub attempts: u32,
    /// The answer to the text fallback, when one was tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<GatewaySummary>,
    /// Why the message was not delivered as asked (kept after a successful fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OutcomeError>,
}

impl Outcome {
    /// DESIGN §9: 0 delivered as asked, 3 only as the text fallback, 1 not delivered.
    /// (2, usage errors, is the caller's for a [`SendError`].)
    pub fn exit_code(&self) -> i32 {
        match self.delivered_as {
            DeliveredAs::None => 1,
            DeliveredAs::TextFallback => 3,
            DeliveredAs::Image | DeliveredAs::Audio | DeliveredAs::Text => 0,
        }
    }
}

/// The outcome's `error.detail` for a failed call: the gateway's words, or the status
/// and the start of a non-JSON body.
pub(crate) fn detail(result: &Result<GatewayAnswer, GatewayError>) -> String {
    match result {
        Err(e) => e.to_string(),
        Ok(a) => match (&a.message, &a.err, &a.response_start) {
            (Some(m), Some(err), _) => format!("{m}: {err}"),
            (Some(m), None, _) => m.clone(),
            (None, _, Some(body)) => format!("HTTP {}: {body}", a.status),
            (None, _, None) => format!("HTTP {} without a body", a.status),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::gateway::parse_answer;
    use std::time::Duration;

    fn answer(status: u16, body: &str) -> Result<GatewayAnswer, GatewayError> {
        Ok(parse_answer(status, body.as_bytes(), 0))
    }

    #[test]
    fn classification_by_message_then_status() {
        let cases: &[(u16, &str, Option<Failure>)] = &[
            (
                200,
                r#"{"success":true,"message":"Message sent successfully!"}"#,
                None,
            ),
            (
                200,
                r#"{"success":false,"message":"Parameter [token, instance_id, caption, jid, imageurl] are required!"}"#,
                Some(Failure::BadRequest),
            ),
            (
                200,
                r#"{"success":false,"message":"Either your instance_id is invalid or your instance is not longer connected"}"#,
                Some(Failure::InstanceDisconnected),
            ),
            (
                200,
                r#"{"success":false,"message":"This number is not found on WhatsApp"}"#,
                Some(Failure::NotOnWhatsapp),
            ),
            (
                200,
                r#"{"success":false,"message":"Invalid URL found"}"#,
                Some(Failure::MediaRejected),
            ),
            // A known message wins over a 5xx status: retrying would fail the same way.
            (
                500,
                r#"{"success":false,"message":"Invalid URL found"}"#,
                Some(Failure::MediaRejected),
            ),
            (
                500,
                r#"{"success":false,"msg":"something went wrong","err":{}}"#,
                Some(Failure::GatewayUnreachable),
            ),
            (
                200,
                r#"{"success":false,"msg":"something went wrong","err":{}}"#,
                Some(Failure::GatewayError),
            ),
            (
                502,
                "<html>Bad Gateway</html>",
                Some(Failure::GatewayUnreachable),
            ),
            (
                404,
                "Cannot POST /api/v1/send-image",
                Some(Failure::GatewayError),
            ),
            (431, "", Some(Failure::GatewayError)),
        ];
        for (status, body, want) in cases {
            assert_eq!(classify(&answer(*status, body)), *want, "{status} {body}");
        }
        assert_eq!(
            classify(&Err(GatewayError::Timeout(Duration::from_secs(90)))),
            Some(Failure::GatewayTimeout)
        );
        assert_eq!(
            classify(&Err(GatewayError::Unreachable("refused".into()))),
            Some(Failure::GatewayUnreachable)
        );
    }

    #[test]
    fn only_transient_failures_retry_and_only_media_failures_fall_back() {
        use Failure::*;
        let all = [
            BadRequest,
            InstanceDisconnected,
            NotOnWhatsapp,
            MediaRejected,
            GatewayTimeout,
            GatewayUnreachable,
            GatewayError,
        ];
        let retry: Vec<_> = all.iter().filter(|f| f.retryable()).collect();
        assert_eq!(retry, [&GatewayTimeout, &GatewayUnreachable]);
        let fallback: Vec<_> = all.iter().filter(|f| f.allows_text_fallback()).collect();
        assert_eq!(
            fallback,
            [
                &BadRequest,
                &MediaRejected,
                &GatewayUnreachable,
                &GatewayError
            ]
        );
    }

    #[test]
    fn exit_codes() {
        let mut o = Outcome {
            delivered_as: DeliveredAs::Image,
            short_url: None,
            jid: None,
            gateway: None,
            attempts: 1,
            fallback: None,
            error: None,
        };
        assert_eq!(o.exit_code(), 0);
        o.delivered_as = DeliveredAs::TextFallback;
        assert_eq!(o.exit_code(), 3);
        o.delivered_as = DeliveredAs::None;
        assert_eq!(o.exit_code(), 1);
    }

    #[test]
    fn outcome_json_shape() {
        let o = Outcome {
            delivered_as: DeliveredAs::TextFallback,
            short_url: Some("https://m/m/a.jpg".into()),
            jid: Some("77015705555@s.whatsapp.net".into()),
            gateway: Some(GatewaySummary {
                status: 200,
                success: false,
                message: Some("Invalid URL found".into()),
            }),
            attempts: 1,
            fallback: None,
            error: Some(OutcomeError {
                code: "media_rejected".into(),
                detail: "Invalid URL found".into(),
            }),
        };
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["delivered_as"], "text_fallback");
        assert_eq!(v["gateway"]["status"], 200);
        assert_eq!(v["error"]["code"], "media_rejected");
        assert!(v.get("fallback").is_none());
        assert_eq!(serde_json::from_value::<Outcome>(v).unwrap(), o);
    }
}
