//! The ChatFlow gateway client (DESIGN §8): one GET per message, the answer parsed
//! into a [`GatewayAnswer`].
//!
//! Owns how a call is built (endpoint, percent-encoded query, non-empty caption), how
//! it is sent (one attempt, 90 s) and how the answer is read and logged. It does not
//! retry, classify failures or fall back to text: that is `deliver`'s job.
//!
//! Traps avoided, each from the seed incident:
//! - The query is built with `Url::query_pairs_mut()`, never by concatenation: an
//!   unencoded media URL splits at its inner `&` and its own `token=` or `caption=`
//!   overwrites ours (Express's `qs` then sees an array and the call fails).
//! - The gateway checks `!caption`, so an empty caption is refused with "Parameter
//!   [...] are required!". Captions are sent as a single space when empty.
//! - The URL carries the token, so it is never logged, and reqwest errors (whose
//!   `Display` includes the URL) are stripped with `without_url()` before use.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use url::Url;

use super::jid::Jid;

/// The gateway is synchronous (it downloads and uploads the media before answering).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);
/// How much of the `response` field (or of a non-JSON body) is kept and logged.
const RESPONSE_START_CHARS: usize = 200;
/// A gateway answer is small JSON; anything bigger is cut (and is not JSON we trust).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Where and as whom to call the gateway. `Debug` hides the token.
#[derive(Clone)]
pub struct GatewayConfig {
    /// e.g. `https://app.chatflow.kz/api/v1`; endpoints are appended as path segments.
    pub base_url: Url,
    pub token: String,
    pub instance_id: String,
    /// Whole-call timeout; [`DEFAULT_TIMEOUT`] (90 s) unless a test needs less.
    pub timeout: Duration,
}

impl GatewayConfig {
    pub fn new(base_url: Url, token: impl Into<String>, instance_id: impl Into<String>) -> Self {
        Self {
            base_url,
            token: token.into(),
            instance_id: instance_id.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("base_url", &self.base_url.as_str())
            .field("token", &"<redacted>")
            .field("instance_id", &self.instance_id)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The gateway's endpoints (DESIGN §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Text,
    Image,
    Audio,
    Video,
    Doc,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Text => "send-text",
            Endpoint::Image => "send-image",
            Endpoint::Audio => "send-audio",
            Endpoint::Video => "send-video",
            Endpoint::Doc => "send-doc",
        }
    }
}

/// What the gateway said. Every HTTP answer is an answer, whatever its status or body:
/// a 5xx, an nginx 431 page or Express's "Cannot GET" are `success: false` with
/// `message: None` and the body's start in `response_start`; `deliver` decides what
/// they mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAnswer {
    pub status: u16,
    /// True only for a 2xx whose JSON body says `"success": true`.
    pub success: bool,
    /// The body's `message`, or `msg` (the gateway's catch-all uses `msg`).
    pub message: Option<String>,
    /// The catch-all's `err`, as text.
    pub err: Option<String>,
    /// First 200 characters of `response` (as JSON text), or of a non-JSON body.
    pub response_start: Option<String>,
    /// Length of the encoded query we sent: the seed blamed length limits, so it is
    /// kept to show how far from them a call was.
    pub query_len: usize,
}

/// The call produced no HTTP answer. Details never contain the URL (it holds the token).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GatewayError {
    #[error("the gateway did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the gateway is unreachable: {0}")]
    Unreachable(String),
    #[error("invalid gateway configuration: {0}")]
    Config(String),
}

/// A cheap-to-clone gateway client (one connection pool shared by clones).
#[derive(Clone)]
pub struct Gateway {
    client: reqwest::Client,
    config: Arc<GatewayConfig>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish()
    }
}

impl Gateway {
    /// Checks the base URL (http/https, can take path segments) and builds the client.
    pub fn new(config: GatewayConfig) -> Result<Self, GatewayError> {
        if !matches!(config.base_url.scheme(), "http" | "https")
            || config.base_url.cannot_be_a_base()
        {
            return Err(GatewayError::Config(format!(
                "base URL must be http(s): {}",
                config.base_url
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            // A redirect would replay the token-bearing query to wherever it points;
            // a 3xx is reported as an unsuccessful answer instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GatewayError::Config(error_chain(&e.without_url())))?;
        Ok(Self {
            client,
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub async fn send_text(&self, jid: &Jid, msg: &str) -> Result<GatewayAnswer, GatewayError> {
        self.call(Endpoint::Text, jid, &[("msg", msg)]).await
    }

    pub async fn send_image(
        &self,
        jid: &Jid,
        caption: &str,
        url: &str,
    ) -> Result<GatewayAnswer, GatewayError> {
        self.call(
            Endpoint::Image,
            jid,
            &[("caption", non_empty(caption)), ("imageurl", url)],
        )
        .await
    }

    /// Always delivered as a voice note by the gateway; send OGG/Opus (DESIGN §8).
    pub async fn send_audio(&self, jid: &Jid, url: &str) -> Result<GatewayAnswer, GatewayError> {
        self.call(Endpoint::Audio, jid, &[("audiourl", url)]).await
    }

    pub async fn send_video(
        &self,
        jid: &Jid,
        caption: &str,
        url: &str,
    ) -> Result<GatewayAnswer, GatewayError> {
        self.call(
            Endpoint::Video,
            jid,
            &[("caption", non_empty(caption)), ("videourl", url)],
        )
        .await
    }

    pub async fn send_doc(
        &self,
        jid: &Jid,
        caption: &str,
        url: &str,
    ) -> Result<GatewayAnswer, GatewayError> {
        self.call(
            Endpoint::Doc,
            jid,
            &[("caption", non_empty(caption)), ("docurl", url)],
        )
        .await
    }

    /// The full request URL. Holds the token: never log it.
    pub fn request_url(&self, endpoint: Endpoint, jid: &Jid, params: &[(&str, &str)]) -> Url {
        let mut url = self.config.base_url.clone();
        // Invariant: `new` refused cannot-be-a-base URLs, the only case where
        // `path_segments_mut` fails; the `if let` only guards against that.
        if let Ok(mut segments) = url.path_segments_mut() {
            // `Url::join` would replace the base's last segment ("v1") without a
            // trailing slash; pushing a segment keeps it.
            segments.pop_if_empty().push(endpoint.path());
        }
        url.set_query(None);
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("token", &self.config.token)
                .append_pair("instance_id", &self.config.instance_id)
                .append_pair("jid", jid.as_str());
            for (name, value) in params {
                query.append_pair(name, value);
            }
        }
        url
    }

    async fn call(
        &self,
        endpoint: Endpoint,
        jid: &Jid,
        params: &[(&str, &str)],
    ) -> Result<GatewayAnswer, GatewayError> {
        let url = self.request_url(endpoint, jid, params);
        let query_len = url.query().map_or(0, str::len);
        let path = endpoint.path();
        let result = self.fetch(url, query_len).await;
        match &result {
            Ok(a) => tracing::info!(
                endpoint = path,
                status = a.status,
                success = a.success,
                // Not `message`: that name is the event's own text in tracing's formatters.
                gateway_message = a.message.as_deref().unwrap_or(""),
                err = a.err.as_deref().unwrap_or(""),
                response_start = a.response_start.as_deref().unwrap_or(""),
                query_len,
                "gateway answered"
            ),
            Err(e) => tracing::warn!(endpoint = path, error = %e, query_len, "gateway call failed"),
        }
        result
    }

    async fn fetch(&self, url: Url, query_len: usize) -> Result<GatewayAnswer, GatewayError> {
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e))?
        {
            let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        Ok(parse_answer(status, &body, query_len))
    }

    fn transport_error(&self, e: reqwest::Error) -> GatewayError {
        if e.is_timeout() {
            GatewayError::Timeout(self.config.timeout)
        } else {
            // Connect failures, resets, a body cut mid-answer: all "no answer".
            GatewayError::Unreachable(error_chain(&e.without_url()))
        }
    }
}

/// The gateway refuses `!caption`, so an empty caption becomes one space (DESIGN §8).
pub fn non_empty(caption: &str) -> &str {
    if caption.is_empty() { " " } else { caption }
}

/// Reads any HTTP answer; see [`GatewayAnswer`] for what non-JSON bodies become.
pub fn parse_answer(status: u16, body: &[u8], query_len: usize) -> GatewayAnswer {
    let json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .filter(|v| v.is_object());
    let Some(json) = json else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        return GatewayAnswer {
            status,
            success: false,
            message: None,
            err: None,
            response_start: (!text.is_empty()).then(|| start(text)),
            query_len,
        };
    };
    let text_of = |key: &str| match json.get(key) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    GatewayAnswer {
        status,
        success: (200..300).contains(&status)
            && json.get("success") == Some(&serde_json::Value::Bool(true)),
        message: text_of("message").or_else(|| text_of("msg")),
        err: text_of("err").map(|e| start(&e)),
        response_start: text_of("response").map(|r| start(&r)),
        query_len,
    }
}

fn start(text: &str) -> String {
    text.chars().take(RESPONSE_START_CHARS).collect()
}

/// `e` and its sources, joined: reqwest's own `Display` says only "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::jid::normalize;

    fn gateway(base: &str) -> Gateway {
        Gateway::new(GatewayConfig::new(
            Url::parse(base).unwrap(),
            "t&k=n",
            "inst 1",
        ))
        .unwrap()
    }

    #[test]
    fn endpoint_keeps_the_base_path_with_or_without_slash() {
        let jid = normalize("77015705555").unwrap();
        for base in [
            "https://app.chatflow.kz/api/v1",
            "https://app.chatflow.kz/api/v1/",
        ] {
            let url = gateway(base).request_url(Endpoint::Image, &jid, &[("caption", " ")]);
            assert_eq!(url.path(), "/api/v1/send-image", "{base}");
        }
    }

    #[test]
    fn every_parameter_is_percent_encoded() {
        let jid = normalize("77015705555").unwrap();
        let long = "https://cdn.example/a.jpg?X-Sig=a&token=evil&caption=x=y#frag";
        let url = gateway("https://gw.example/api/v1").request_url(
            Endpoint::Image,
            &jid,
            &[("caption", "a&b=c%d#e+f Привет"), ("imageurl", long)],
        );
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["token", "instance_id", "jid", "caption", "imageurl"]
        );
        assert_eq!(pairs[0].1, "t&k=n");
        assert_eq!(pairs[1].1, "inst 1");
        assert_eq!(pairs[3].1, "a&b=c%d#e+f Привет");
        assert_eq!(pairs[4].1, long);
        assert!(url.fragment().is_none());
    }

    #[test]
    fn empty_caption_becomes_a_space() {
        assert_eq!(non_empty(""), " ");
        assert_eq!(non_empty("hi"), "hi");
    }

    #[test]
    fn config_debug_hides_the_token() {
        let gw = gateway("https://gw.example/api/v1");
        assert!(!format!("{gw:?}").contains("t&k=n"));
    }

    #[test]
    fn refuses_a_non_http_base() {
        let cfg = GatewayConfig::new(Url::parse("mailto:a@b.c").unwrap(), "t", "i");
        assert!(matches!(Gateway::new(cfg), Err(GatewayError::Config(_))));
    }

    #[test]
    fn parses_the_gateway_answers() {
        let ok = parse_answer(200, br#"{"success":true,"message":"Message sent successfully!","response":{"key":{"id":"X"}}}"#, 9);
        assert!(ok.success);
        assert_eq!(ok.message.as_deref(), Some("Message sent successfully!"));
        assert_eq!(ok.response_start.as_deref(), Some(r#"{"key":{"id":"X"}}"#));
        assert_eq!(ok.query_len, 9);

        let catch_all = parse_answer(
            200,
            br#"{"success":false,"msg":"something went wrong","err":{"code":1}}"#,
            0,
        );
        assert!(!catch_all.success);
        assert_eq!(catch_all.message.as_deref(), Some("something went wrong"));
        assert_eq!(catch_all.err.as_deref(), Some(r#"{"code":1}"#));

        // A success flag on an error status is not trusted.
        assert!(!parse_answer(500, br#"{"success":true}"#, 0).success);
        // "true" as a string is not `true`.
        assert!(!parse_answer(200, br#"{"success":"true"}"#, 0).success);

        let html = parse_answer(404, b"<pre>Cannot POST /api/v1/send-image</pre>\n", 0);
        assert!(!html.success);
        assert_eq!(html.message, None);
        assert_eq!(
            html.response_start.as_deref(),
            Some("<pre>Cannot POST /api/v1/send-image</pre>")
        );

        assert_eq!(parse_answer(502, b"", 0).response_start, None);
        assert!(!parse_answer(200, b"[true]", 0).success);
    }

    #[test]
    fn response_start_is_cut_at_200_chars_on_a_char_boundary() {
        let body = format!(r#"{{"success":true,"response":"{}"}}"#, "Ж".repeat(300));
        let a = parse_answer(200, body.as_bytes(), 0);
        assert_eq!(a.response_start.map(|s| s.chars().count()), Some(200));
    }
}
