//! Upstream fetch (DESIGN §5): one GET through hyper's pooled client, behind the
//! SSRF guard.
//!
//! Owns: the client and its settings (no proxy, no cookies, no credentials, bounded
//! time; TLS by rustls with the platform's roots; bodies decoded by tower-http;
//! upstream sockets that acknowledge without delay, `quickack`), the
//! redirect loop, the guard's three checkpoints (the literal host of the first URL,
//! every redirect hop, every DNS answer), the creation-time check, the byte limit,
//! and the mapping of every failure to one [`FetchError`].
//!
//! Why not reqwest: it is built from these same crates, and its own layers above them
//! (URL re-parsing, a redirect and timeout stack, response wrapping) cost a cold
//! `/m/` answer about a tenth of its CPU (README, "Performance"). What reqwest gave on
//! top is small and lives here: the redirect loop with the guard at every hop, and
//! the error mapping.
//!
//! Deliberately does not: judge the bytes. `fetch` never decides whether bytes are
//! acceptable (type, size policy, conversion); `policy` does, after `sniff`. The
//! upstream `Content-Type` is passed through as a hint only. Nor does it cache: it
//! returns a body only when the body arrived whole, so the cache can never hold a
//! partial one.

pub mod guard;
mod quickack;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    ACCEPT, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION, USER_AGENT,
};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ipnet::IpNet;
use tower::ServiceExt;
use tower_http::decompression::{Decompression, DecompressionBody};
use url::Url;

pub use guard::{Guard, GuardResolver, HostCheck, NameLookup, Refused, SystemLookup, classify};
use quickack::QuickAckConnector;

/// At most this many redirect hops are followed (DESIGN §5); the sixth is refused.
pub const MAX_REDIRECTS: usize = 5;

const USER_AGENT_VALUE: &str = "medialink/0.1";
const ACCEPT_MEDIA: &str = "image/*, audio/*;q=0.9, */*;q=0.1";

/// Settings for [`Fetcher`] (DESIGN §7 gives their flags and defaults).
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// TCP (and TLS) connect, DNS included.
    pub connect_timeout: Duration,
    /// The whole fetch: connect, redirects, headers and the body to its last byte.
    pub timeout: Duration,
    /// DNS at link creation; a timeout there means "does not resolve now".
    pub resolve_timeout: Duration,
    /// `--allow-private-upstreams`: lifts every guard rule.
    pub allow_private: bool,
    /// `--allow-upstream-cidr`: lifts the guard for these ranges only.
    pub allow_cidrs: Vec<IpNet>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            resolve_timeout: Duration::from_secs(1),
            allow_private: false,
            allow_cidrs: Vec::new(),
        }
    }
}

/// A body that arrived whole and within the limit.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The body, with any `Content-Encoding` already decoded.
    pub bytes: Bytes,
    /// The URL after redirects.
    pub final_url: Url,
    /// What the upstream claimed; a hint only (DESIGN §4 sniffs the bytes).
    pub upstream_content_type: Option<String>,
    pub elapsed: Duration,
}

/// Why a fetch (or a creation-time check) failed. `code()` gives the problem code the
/// API layer reports; the mapping to HTTP statuses lives there, not here.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FetchError {
    #[error("upstream address refused: {reason}")]
    Forbidden { reason: String },
    #[error("upstream unreachable: {detail}")]
    Unreachable { detail: String },
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream answered {status}")]
    Status { status: u16 },
    #[error("upstream body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("upstream redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects,
    #[error("fetch client error: {0}")]
    Client(String),
}

impl FetchError {
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::Forbidden { .. } => "forbidden_upstream",
            // A redirect loop is an upstream that cannot be reached in 5 hops; the
            // Display text says which.
            FetchError::Unreachable { .. } | FetchError::TooManyRedirects => "upstream_unreachable",
            FetchError::Timeout => "upstream_timeout",
            FetchError::Status { .. } => "upstream_status",
            FetchError::TooLarge { .. } => "upstream_too_large",
            FetchError::Client(_) => "internal",
        }
    }
}

impl From<Refused> for FetchError {
    fn from(r: Refused) -> Self {
        FetchError::Forbidden {
            reason: r.to_string(),
        }
    }
}

/// The client: hyper's pool over guarded DNS and rustls. `send` wraps it in tower-http's
/// decoder per request.
type HttpClient = Client<HttpsConnector<QuickAckConnector>, Empty<Bytes>>;

/// The upstream fetcher. Cheap to clone: the client and guard sit behind `Arc`s.
#[derive(Debug, Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: HttpClient,
    guard: Arc<Guard>,
    resolver: GuardResolver,
    cfg: FetchConfig,
    /// Recent creation-time verdicts per host name. Creates of many links on one CDN
    /// would otherwise pay a DNS lookup each (tens of ms, on a blocking thread); the
    /// verdict is advisory anyway, since every fetch checks the addresses again.
    /// Concurrent checks of one name share one lookup.
    creation_checks: moka::future::Cache<String, Result<(), FetchError>>,
}

/// How long a creation-time verdict on a host name is reused.
const CREATION_CHECK_TTL: Duration = Duration::from_secs(30);

impl Fetcher {
    /// A fetcher that resolves names with the system resolver.
    pub fn new(cfg: FetchConfig) -> Result<Self, FetchError> {
        Self::with_resolver(cfg, Arc::new(SystemLookup))
    }

    /// The same, with an injected name lookup (tests map `evil.test` to 127.0.0.2
    /// without real DNS).
    pub fn with_resolver(
        cfg: FetchConfig,
        resolver: Arc<dyn NameLookup>,
    ) -> Result<Self, FetchError> {
        let guard = Arc::new(Guard::new(cfg.allow_private, cfg.allow_cidrs.clone()));
        let resolver = GuardResolver::new(guard.clone(), resolver);

        // Names: the guard sees every answer, and the connector connects only to it.
        // IP literals never reach a resolver: `fetch` checks them, at every hop.
        let mut http = HttpConnector::new_with_resolver(resolver.clone());
        // `https` URLs are this connector's too: the TLS layer below wraps it.
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_platform_verifier(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| FetchError::Client(format!("TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(QuickAckConnector(http));
        // No proxy (it would connect on our behalf to addresses the guard never saw),
        // no cookie store, no Referer: this client has none of them to begin with.
        let client = Client::builder(TokioExecutor::new())
            // The pool closes connections idle past its timeout (90 s) on this timer, as
            // reqwest's pool did; without one they wait for their next checkout.
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(tls);

        Ok(Self {
            inner: Arc::new(Inner {
                client,
                guard,
                resolver,
                cfg,
                creation_checks: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(CREATION_CHECK_TTL)
                    .build(),
            }),
        })
    }

    /// The creation-time check (DESIGN §5). A refused IP literal, or a name that
    /// resolves within `resolve_timeout` to any refused address, is `Forbidden`. A
    /// name that does not resolve now, or not in time, is accepted: DNS can be down,
    /// and every fetch checks again.
    pub async fn check_at_creation(&self, url: &Url) -> Result<(), FetchError> {
        let Some(name) = self.name_to_resolve(url)? else {
            return Ok(());
        };
        let check = async {
            let resolving = self.inner.resolver.resolve_checked(&name);
            match tokio::time::timeout(self.inner.cfg.resolve_timeout, resolving).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(guard::ResolveError::Refused(r))) => Err(r.into()),
                Ok(Err(guard::ResolveError::Lookup(e))) => {
                    tracing::debug!(host = %name, error = %e, "accepting a name that does not resolve now");
                    Ok(())
                }
                Err(_) => {
                    tracing::debug!(host = %name, "accepting a name whose resolution timed out");
                    Ok(())
                }
            }
        };
        self.inner
            .creation_checks
            .get_with(name.clone(), check)
            .await
    }

    /// The creation-time check when no DNS answer is needed (an IP literal, a refused
    /// scheme or a name refused as such); `None` when the name must be resolved.
    pub fn check_at_creation_now(&self, url: &Url) -> Option<Result<(), FetchError>> {
        match self.name_to_resolve(url) {
            Ok(Some(_)) => None,
            Ok(None) => Some(Ok(())),
            Err(e) => Some(Err(e)),
        }
    }

    /// The part of the creation-time check that needs no DNS: an error for a refused
    /// scheme or host, `None` for an allowed literal, else the name to resolve.
    fn name_to_resolve(&self, url: &Url) -> Result<Option<String>, FetchError> {
        check_scheme(url)?;
        Ok(match self.inner.guard.check_url_host(url)? {
            HostCheck::Allowed(_) => None,
            HostCheck::NeedsResolve(name) => Some(name),
        })
    }

    /// GETs `url` and returns the decoded body, only if it arrived whole and within
    /// `max_bytes`. Never a partial body: a cut or stalled upstream is an error.
    pub async fn fetch(&self, url: &Url, max_bytes: u64) -> Result<Fetched, FetchError> {
        let started = Instant::now();
        // The one bound on the whole fetch: connect, every hop, headers and the body to
        // its last byte end by `timeout`.
        let result =
            match tokio::time::timeout(self.inner.cfg.timeout, self.fetch_inner(url, max_bytes))
                .await
            {
                Ok(Ok(mut fetched)) => {
                    fetched.elapsed = started.elapsed();
                    Ok(fetched)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(FetchError::Timeout),
            };
        // Failures are timed too: a slow refusal is as telling as a slow success.
        crate::metrics::UPSTREAM_FETCH_SECONDS.record(started.elapsed());
        if let Err(e) = &result {
            metrics::counter!("medialink_upstream_errors_total", "code" => e.code()).increment(1);
        }
        result
    }

    async fn fetch_inner(&self, url: &Url, max_bytes: u64) -> Result<Fetched, FetchError> {
        check_scheme(url)?;
        // The known trap (DESIGN §5): the connector connects to an IP literal without
        // asking the resolver, so the literal host is judged here, at every hop.
        self.inner.guard.check_url_host(url)?;
        let mut url = url.clone();
        // Userinfo would become an `Authorization` header somewhere; never forward it.
        // Both setters fail only for cannot-be-a-base URLs, which http(s) never are.
        if !url.username().is_empty() || url.password().is_some() {
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        url.set_fragment(None);

        let mut hops = 0;
        let resp = loop {
            let resp = self.send(&url).await?;
            if !is_redirect(resp.status()) {
                break resp;
            }
            // A redirect without a target is an answer like any other non-2xx.
            let Some(location) = resp.headers().get(LOCATION) else {
                break resp;
            };
            if hops == MAX_REDIRECTS {
                return Err(FetchError::TooManyRedirects);
            }
            hops += 1;
            url = self.next_hop(&url, location)?;
            // Dropping `resp` closes or frees its connection without our reading the
            // (normally empty) body.
        };

        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                status: status.as_u16(),
            });
        }
        let upstream_content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // The decoder removes Content-Encoding (and Content-Length) for the encodings
        // it decodes; a length left beside an encoding is the encoded size, not ours.
        let announced = if resp.headers().contains_key(CONTENT_ENCODING) {
            None
        } else {
            resp.headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(len) = announced
            && len > max_bytes
        {
            return Err(FetchError::TooLarge { limit: max_bytes });
        }

        // The chunks as hyper hands them over (slices of its read buffer, no copy),
        // joined once at the end: a body that arrived in one read is served as it is.
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut got: u64 = 0;
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| cut_short(got as usize, &error_chain(&*e)))?;
            // Trailers carry no bytes of the body.
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            // Fits: `got` never passes `max_bytes`, and every chunk is in memory.
            got = got.saturating_add(chunk.len() as u64);
            if got > max_bytes {
                return Err(FetchError::TooLarge { limit: max_bytes });
            }
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
        }
        // hyper already errors when a Content-Length body ends early; this is the
        // belt to its braces, so a short body is never mistaken for a whole one.
        if let Some(len) = announced
            && got != len
        {
            return Err(cut_short(
                got as usize,
                "length differs from Content-Length",
            ));
        }
        // `concat` sizes its one allocation from the chunks' lengths first.
        let body = match chunks.len() {
            1 => chunks.pop().unwrap_or_default(),
            _ => Bytes::from(chunks.concat()),
        };

        Ok(Fetched {
            bytes: body,
            final_url: url,
            upstream_content_type,
            elapsed: Duration::ZERO,
        })
    }

    /// One GET of `url` (already judged by the guard), up to its response head.
    async fn send(
        &self,
        url: &Url,
    ) -> Result<http::Response<DecompressionBody<hyper::body::Incoming>>, FetchError> {
        // `Url` serializes percent-encoded, so a URL the url crate accepts is a `Uri`
        // too; one that is not is our bug, not the upstream's.
        let uri = Uri::try_from(url.as_str())
            .map_err(|e| FetchError::Client(format!("{url} is not a request URI: {e}")))?;
        let req = Request::get(uri)
            .header(ACCEPT, HeaderValue::from_static(ACCEPT_MEDIA))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .body(Empty::new())
            .map_err(|e| FetchError::Client(e.to_string()))?;
        // The body is decoded before we count it, so the limit applies to what is
        // sniffed and a compression bomb stops at `max_bytes` (DESIGN §5); the decoder
        // also sends `Accept-Encoding` for what it decodes. It wraps a borrow: the
        // client already clones itself into each request's future, once is enough.
        Decompression::new(&self.inner.client)
            .oneshot(req)
            .await
            .map_err(map_error)
    }

    /// The URL a redirect points to, once it has passed every rule a first URL must
    /// pass, and a few of its own (DESIGN §5).
    fn next_hop(&self, from: &Url, location: &HeaderValue) -> Result<Url, FetchError> {
        let bad = |why: String| FetchError::Unreachable {
            detail: format!("bad redirect: {why}"),
        };
        let location = location
            .to_str()
            .map_err(|_| bad("Location is not text".into()))?;
        let mut next = from
            .join(location)
            .map_err(|e| bad(format!("Location {location:?}: {e}")))?;
        if !matches!(next.scheme(), "http" | "https") {
            return Err(Refused::new(&next, "redirect to a non-http(s) scheme").into());
        }
        if !next.username().is_empty() || next.password().is_some() {
            return Err(
                Refused::new(next.host_str().unwrap_or(""), "credentials in redirect").into(),
            );
        }
        self.inner.guard.check_url_host(&next)?;
        next.set_fragment(None);
        Ok(next)
    }
}

/// The statuses a browser follows with a GET (RFC 9110 §15.4); 300, 304 and 305 are
/// answers, not redirects.
fn is_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

fn check_scheme(url: &Url) -> Result<(), FetchError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        _ => Err(Refused::new(url, "only http and https upstreams").into()),
    }
}

/// Finds an error of type `T` anywhere in `err`'s source chain, looking inside
/// `io::Error`s too (their `source()` skips the error they wrap).
fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(t) = find_in_chain::<T>(inner)
        {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// Every message in the chain, for logs and `Unreachable` details.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let msg = e.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = e.source();
    }
    out
}

fn map_error(err: hyper_util::client::legacy::Error) -> FetchError {
    let connect = err.is_connect();
    let err: &(dyn StdError + 'static) = &err;
    // Our own marker first: a refusal wrapped in a connect error is still a refusal,
    // and must not read as "unreachable".
    if let Some(refused) = find_in_chain::<Refused>(err) {
        return refused.clone().into();
    }
    // `connect_timeout` ends a connect with an I/O timeout; the whole-fetch bound is
    // `fetch`'s own and never reaches here.
    if find_in_chain::<std::io::Error>(err)
        .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
    {
        return FetchError::Timeout;
    }
    let what = if connect {
        "connect failed"
    } else {
        "request failed"
    };
    FetchError::Unreachable {
        detail: format!("{what}: {}", error_chain(err)),
    }
}

fn cut_short(got: usize, why: &str) -> FetchError {
    FetchError::Unreachable {
        detail: format!("upstream body cut short after {got} bytes ({why})"),
    }
}
