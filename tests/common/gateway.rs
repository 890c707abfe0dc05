//! A fake ChatFlow gateway on 127.0.0.1 that behaves as DESIGN §8 describes, with
//! scripted faults and a record of every request for assertions.
//!
//! What it copies from the real one (and why a test needs it):
//! - GET only; any other method gets Express's 404 page "Cannot POST /api/v1/send-image".
//! - The query is read like Express's `qs`: `+` is a space, a repeated key becomes an
//!   array. A token that arrives as an array (an unencoded inner `&token=`) matches no
//!   instance: "Either your instance_id is invalid or your instance is not longer
//!   connected". An array passes `!param`, as in JavaScript.
//! - `!param` checks per endpoint with the exact "Parameter [...] are required!"
//!   message: a missing or empty parameter (an empty caption!) fails.
//! - A request line + headers larger than [`Options::header_limit`] (8 KiB, nginx) is
//!   answered 431 before anything else.
//! - For media endpoints it fetches the URL itself like Baileys: one plain GET,
//!   redirects followed, no HEAD or Range, Content-Type ignored; send-image wants
//!   JPEG/PNG bytes and send-audio OGG/Opus, else "Invalid URL found".
//!
//! What it does not copy: qs bracket syntax (`a[b]=`), its 1,000-parameter limit, and
//! the real HTTP statuses of failures (unknown; it answers 200 with `success: false`,
//! and 500 for the catch-all).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use medialink::sender::{Gateway, GatewayConfig};
use serde_json::{Value, json};
use url::Url;

pub const TOKEN: &str = "fake-token-Zq9";
pub const INSTANCE_ID: &str = "fake-instance-1";
pub const REQUIRED_IMAGE: &str =
    "Parameter [token, instance_id, caption, jid, imageurl] are required!";
pub const DISCONNECTED: &str =
    "Either your instance_id is invalid or your instance is not longer connected";
pub const NOT_ON_WHATSAPP: &str = "This number is not found on WhatsApp";
pub const INVALID_URL: &str = "Invalid URL found";
pub const SENT: &str = "Message sent successfully!";
pub const BAILEYS_USER_AGENT: &str = "axios/1.7.9";

/// Fixed at start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Request line + headers, in bytes, above which the answer is 431.
    pub header_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            header_limit: 8 * 1024,
        }
    }
}

/// Faults, changeable while running with [`FakeGateway::script`].
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Every call with a right token answers as a disconnected instance.
    pub disconnected: bool,
    /// Jids answered "This number is not found on WhatsApp".
    pub not_on_whatsapp: HashSet<String>,
    /// The next N GETs to an endpoint answer 502 (an nginx page), then normal again.
    pub fail_5xx: u32,
    /// Wait this long before answering (to trip the client's timeout).
    pub delay: Duration,
    /// Answer the catch-all `{"success": false, "msg": "something went wrong"}` (500).
    pub something_went_wrong: bool,
}

/// One request as the gateway saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// e.g. `/api/v1/send-image`.
    pub path: String,
    pub raw_query: String,
    /// Decoded as qs would, in order, repeats kept.
    pub params: Vec<(String, String)>,
    /// The bytes of the gateway's own media GET, when it made one and it answered.
    pub media: Option<Vec<u8>>,
    pub status: u16,
    pub body: String,
}

impl Recorded {
    /// The last path segment, e.g. `send-image`.
    pub fn endpoint(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    /// The first value of `name`, decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

struct Shared {
    options: Options,
    script: Mutex<Script>,
    log: Mutex<Vec<Recorded>>,
    http: reqwest::Client,
}

pub struct FakeGateway {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGateway {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            // Baileys downloads media through axios, with axios's default user agent.
            .user_agent(BAILEYS_USER_AGENT)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let shared = Arc::new(Shared {
            options,
            script: Mutex::default(),
            log: Mutex::default(),
            http,
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT/api/v1`, the real base's shape.
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}/api/v1", self.addr)).unwrap()
    }

    /// Right token and instance, a 10 s timeout.
    pub fn config(&self) -> GatewayConfig {
        GatewayConfig {
            timeout: Duration::from_secs(10),
            ..GatewayConfig::new(self.base_url(), TOKEN, INSTANCE_ID)
        }
    }

    pub fn gateway(&self) -> Gateway {
        Gateway::new(self.config()).unwrap()
    }

    pub fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut lock(&self.shared.script));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.log).clone()
    }

    pub fn calls(&self) -> usize {
        lock(&self.shared.log).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    // Only the head matters (GET), and `Body` is not `Sync`: keep the parts.
    let (req, _body) = req.into_parts();
    let path = req.uri.path().to_owned();
    let raw_query = req.uri.query().unwrap_or("").to_owned();
    let mut rec = Recorded {
        method: req.method.to_string(),
        path: path.clone(),
        raw_query: raw_query.clone(),
        params: parse_qs(&raw_query),
        media: None,
        status: 0,
        body: String::new(),
    };
    let (status, content_type, body) = answer(&shared, &req, &mut rec).await;
    rec.status = status.as_u16();
    rec.body = body.clone();
    lock(&shared.log).push(rec);
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

type Answer = (StatusCode, &'static str, String);

fn json_answer(status: StatusCode, v: Value) -> Answer {
    (status, "application/json; charset=utf-8", v.to_string())
}

fn failure(message: &str) -> Answer {
    json_answer(
        StatusCode::OK,
        json!({"success": false, "message": message}),
    )
}

async fn answer(shared: &Shared, req: &Parts, rec: &mut Recorded) -> Answer {
    if head_size(req) > shared.options.header_limit {
        let page = "<html><head><title>431 Request Header Fields Too Large</title></head></html>";
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "text/html",
            page.into(),
        );
    }
    let endpoint = rec.endpoint().to_owned();
    let known = rec.path.starts_with("/api/v1/") && required(&endpoint).is_some();
    if req.method != Method::GET || !known {
        // Express's finalhandler page.
        let page = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>Cannot {} {}</pre>\n</body>\n</html>\n",
            req.method, rec.path
        );
        return (StatusCode::NOT_FOUND, "text/html; charset=utf-8", page);
    }

    let script = lock(&shared.script).clone();
    if !script.delay.is_zero() {
        tokio::time::sleep(script.delay).await;
    }
    if script.fail_5xx > 0 {
        lock(&shared.script).fail_5xx -= 1;
        let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
        return (StatusCode::BAD_GATEWAY, "text/html", page.into());
    }

    let q = QsView::new(&rec.params);
    let names = required(&endpoint).unwrap_or(&[]);
    if names.iter().any(|n| !q.truthy(n)) {
        return failure(&format!("Parameter [{}] are required!", names.join(", ")));
    }
    if script.disconnected
        || q.single("token") != Some(TOKEN)
        || q.single("instance_id") != Some(INSTANCE_ID)
    {
        return failure(DISCONNECTED);
    }
    let jid = q.single("jid").unwrap_or("");
    let well_formed = jid
        .strip_suffix("@s.whatsapp.net")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed || script.not_on_whatsapp.contains(jid) {
        return failure(NOT_ON_WHATSAPP);
    }
    if script.something_went_wrong {
        return json_answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"success": false, "msg": "something went wrong", "err": {"name": "Error"}}),
        );
    }
    if let Some(url_param) = names.last().filter(|n| n.ends_with("url")) {
        // An array URL (repeated key) is not a URL Baileys can fetch.
        let Some(url) = q.single(url_param) else {
            return failure(INVALID_URL);
        };
        rec.media = fetch_media(&shared.http, url).await;
        let acceptable = match (&rec.media, endpoint.as_str()) {
            (Some(b), "send-image") => is_jpeg(b) || is_png(b),
            (Some(b), "send-audio") => is_ogg_opus(b),
            (Some(b), _) => !b.is_empty(),
            (None, _) => false,
        };
        if !acceptable {
            return failure(INVALID_URL);
        }
    }
    let id = format!("3EB0{:016X}", lock(&shared.log).len());
    json_answer(
        StatusCode::OK,
        json!({"success": true, "message": SENT,
               "response": {"key": {"remoteJid": jid, "fromMe": true, "id": id}, "status": "PENDING"}}),
    )
}

/// The parameter list each endpoint checks with `!param`, in its message's order.
fn required(endpoint: &str) -> Option<&'static [&'static str]> {
    Some(match endpoint {
        "send-text" => &["token", "instance_id", "jid", "msg"],
        "send-image" => &["token", "instance_id", "caption", "jid", "imageurl"],
        "send-audio" => &["token", "instance_id", "jid", "audiourl"],
        "send-video" => &["token", "instance_id", "caption", "jid", "videourl"],
        "send-doc" => &["token", "instance_id", "caption", "jid", "docurl"],
        _ => return None,
    })
}

/// Bytes of the request line and headers as they went over the wire (HTTP/1.1).
fn head_size(req: &Parts) -> usize {
    let target = req.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let line = req.method.as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let headers: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum();
    line + headers + 2
}

/// Baileys: one plain GET, redirects followed, Content-Type ignored.
async fn fetch_media(http: &reqwest::Client, url: &str) -> Option<Vec<u8>> {
    let response = http.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.bytes().await.ok().map(|b| b.to_vec())
}

fn is_jpeg(b: &[u8]) -> bool {
    b.starts_with(&[0xFF, 0xD8, 0xFF])
}

fn is_png(b: &[u8]) -> bool {
    b.starts_with(b"\x89PNG\r\n\x1a\n")
}

fn is_ogg_opus(b: &[u8]) -> bool {
    b.starts_with(b"OggS") && b.windows(8).any(|w| w == b"OpusHead")
}

/// The query as `qs` sees it: a key once is a string, a repeated key an array.
struct QsView<'a> {
    params: &'a [(String, String)],
}

impl<'a> QsView<'a> {
    fn new(params: &'a [(String, String)]) -> Self {
        Self { params }
    }

    fn values(&self, name: &str) -> Vec<&'a str> {
        self.params
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// JavaScript truthiness: a non-empty string, or any array.
    fn truthy(&self, name: &str) -> bool {
        match self.values(name).as_slice() {
            [] => false,
            [one] => !one.is_empty(),
            _ => true,
        }
    }

    /// The value when the key came once (a string in qs), else `None`.
    fn single(&self, name: &str) -> Option<&'a str> {
        match self.values(name).as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// `qs.parse` without brackets: split on `&`, key and value at the first `=`, `+` is a
/// space, `%XX` decoded, a malformed escape kept as is, empty parts skipped.
pub fn parse_qs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
