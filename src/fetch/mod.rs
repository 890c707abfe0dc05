//! Upstream fetch (DESIGN §5): one GET through reqwest, behind the SSRF guard.
//!
//! Owns: the reqwest client and its settings (no proxy, no cookies, no retries, no
//! credentials, bounded time), the guard's three checkpoints (the literal host of the
//! first URL, every redirect hop, every DNS answer), the creation-time check, the
//! byte limit, and the mapping of every failure to one [`FetchError`].
//!
//! Deliberately does not: judge the bytes. `fetch` never decides whether bytes are
//! acceptable (type, size policy, conversion); `policy` does, after `sniff`. The
//! upstream `Content-Type` is passed through as a hint only. Nor does it cache: it
//! returns a body only when the body arrived whole, so the cache can never hold a
//! partial one.

pub mod guard;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{ACCEPT, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use ipnet::IpNet;
use url::Url;

pub use guard::{Guard, GuardResolver, HostCheck, NameLookup, Refused, SystemLookup, classify};

/// At most this many redirect hops are followed (DESIGN §5); the sixth is refused.
pub const MAX_REDIRECTS: usize = 5;

const USER_AGENT: &str = "medialink/0.1";
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

/// The redirect policy's marker for hop 6+, found again by downcasting.
#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_REDIRECTS} redirects")]
struct RedirectLimit;

/// The upstream fetcher. Cheap to clone: the client and guard sit behind `Arc`s.
#[derive(Debug, Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
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

        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_MEDIA));

        let client = reqwest::Client::builder()
            // A proxy would connect on our behalf to addresses the guard never saw.
            .no_proxy()
            // Names: the guard sees every answer, and reqwest connects only to it.
            .dns_resolver(Arc::new(resolver.clone()))
            // Literal hosts of redirect hops never reach the resolver: check them here.
            .redirect(redirect_policy(guard.clone()))
            // A retry would be a second, unaccounted connection; one attempt only.
            .retry(reqwest::retry::never())
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            // Do not tell one upstream where we came from on another.
            .referer(false)
            .user_agent(USER_AGENT)
            .default_headers(headers)
            // Decoded before we count bytes, so the limit applies to what is sniffed
            // and a compression bomb stops at `max_bytes` (DESIGN §5).
            .gzip(true)
            .brotli(true)
            .deflate(true)
            .zstd(true)
            .build()
            .map_err(|e| FetchError::Client(error_chain(&e)))?;

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
        // reqwest's own timeout covers the response too, but this outer bound is the
        // one we can see: the whole fetch, body included, ends by `timeout`.
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
        // The known trap (DESIGN §5): reqwest connects to an IP literal without asking
        // the resolver, so the first URL's literal host is judged here.
        self.inner.guard.check_url_host(url)?;

        let mut url = url.clone();
        // reqwest turns userinfo into an Authorization header; never forward it.
        // Both setters fail only for cannot-be-a-base URLs, which http(s) never are.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_fragment(None);

        let resp = self.inner.client.get(url).send().await.map_err(map_error)?;

        let status = resp.status();
        if !status.is_success() {
            // Dropping the response closes the connection without reading the body.
            return Err(FetchError::Status {
                status: status.as_u16(),
            });
        }

        let final_url = resp.url().clone();
        let upstream_content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);

        // reqwest removes Content-Encoding (and Content-Length) for encodings it
        // decodes; a length left beside an encoding is the encoded size, not ours.
        let announced = if resp.headers().contains_key(CONTENT_ENCODING) {
            None
        } else {
            resp.content_length()
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
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            // Fits: `got` never passes `max_bytes`, and every chunk is in memory.
            let chunk = chunk.map_err(|e| body_error(&e, got as usize))?;
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
            final_url,
            upstream_content_type,
            elapsed: Duration::ZERO,
        })
    }
}

fn check_scheme(url: &Url) -> Result<(), FetchError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        _ => Err(Refused::new(url, "only http and https upstreams").into()),
    }
}

/// The redirect policy: at most [`MAX_REDIRECTS`] hops, http(s) only, no credentials,
/// and every literal-IP hop judged by the guard before reqwest may connect to it.
/// Named hops go through the guard resolver when connected.
fn redirect_policy(guard: Arc<Guard>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(RedirectLimit);
        }
        let next = attempt.url();
        if !matches!(next.scheme(), "http" | "https") {
            let refused = Refused::new(next, "redirect to a non-http(s) scheme");
            return attempt.error(refused);
        }
        if !next.username().is_empty() || next.password().is_some() {
            let refused = Refused::new(next.host_str().unwrap_or(""), "credentials in redirect");
            return attempt.error(refused);
        }
        match guard.check_url_host(next) {
            Ok(_) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    })
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

fn map_error(err: reqwest::Error) -> FetchError {
    // Our own markers first: a refusal wrapped in a connect or redirect error is
    // still a refusal, and must not read as "unreachable".
    if let Some(refused) = find_in_chain::<Refused>(&err) {
        return refused.clone().into();
    }
    if find_in_chain::<RedirectLimit>(&err).is_some() {
        return FetchError::TooManyRedirects;
    }
    if err.is_timeout() {
        return FetchError::Timeout;
    }
    if err.is_builder() {
        return FetchError::Client(error_chain(&err));
    }
    let what = if err.is_connect() {
        "connect failed"
    } else if err.is_redirect() {
        "bad redirect"
    } else {
        "request failed"
    };
    FetchError::Unreachable {
        detail: format!("{what}: {}", error_chain(&err)),
    }
}

fn body_error(err: &reqwest::Error, got: usize) -> FetchError {
    if err.is_timeout() {
        return FetchError::Timeout;
    }
    cut_short(got, &error_chain(err))
}

fn cut_short(got: usize, why: &str) -> FetchError {
    FetchError::Unreachable {
        detail: format!("upstream body cut short after {got} bytes ({why})"),
    }
}
