//! Proxy floor: the least a proxy on this project's own stack (hyper's server,
//! hyper-util's pooled client, tokio, mimalloc) spends on a cold answer, so that
//! medialink's cold path can be put beside it as well as beside nginx without cache.
//!
//! ```text
//! cargo bench --bench proxy_floor -- --listen 127.0.0.1:18093 \
//!     --upstream http://127.0.0.1:18081 --mode collect
//! ```
//! A request for `/PATH` is fetched from `UPSTREAM/PATH` and answered with the
//! upstream's status, `Content-Type` and body. Nothing is looked up, sniffed, hashed or
//! logged. The modes:
//! - `stream`: the body passed through as it arrives, as nginx does;
//! - `collect`: the whole body gathered first, then sent, as medialink must (it
//!   checks every byte before the first one leaves, DESIGN §4);
//! - `fetcher`: medialink's own `Fetcher` (the SSRF guard, the redirect loop, the
//!   decoders, `TCP_QUICKACK`), then the body sent as in `collect`;
//! - `verified`: `fetcher`, then medialink's checks of the bytes as every cold `/m/`
//!   answer runs them (`verify_with` under the `any` profile, as the benchmarks serve:
//!   the sniff, which walks a JPEG to its end marker, the policy, and the XXH3 ETag),
//!   answered with that type and ETag.
//!
//! `scripts/bench-compare.sh` runs all four in its cold cases.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, ETAG};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use medialink::cli::{Cli, Command};
use medialink::fetch::{FetchConfig, Fetcher};
use medialink::media::verify::verify_with;
use medialink::policy::{Kind, Policy};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Stream,
    Collect,
    Fetcher,
    Verified,
}

struct Proxy {
    mode: Mode,
    /// `http://host:port`, no trailing slash.
    upstream: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    fetcher: Fetcher,
    /// `serve --profile any` with its defaults, as the benchmarks run medialink.
    policy: Policy,
}

type Body = Either<Incoming, Full<Bytes>>;

fn bad_gateway() -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

async fn handle(p: Arc<Proxy>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let target = format!("{}{}", p.upstream, path);
    if matches!(p.mode, Mode::Fetcher | Mode::Verified) {
        let Ok(url) = url::Url::parse(&target) else {
            return Ok(bad_gateway());
        };
        let limit = p.policy.fetch_limit(Kind::Any, false);
        let Ok(f) = p.fetcher.fetch(&url, limit).await else {
            return Ok(bad_gateway());
        };
        let (bytes, content_type, etag) = if p.mode == Mode::Fetcher {
            let ct = f.upstream_content_type.and_then(|c| c.parse().ok());
            (f.bytes, ct, None)
        } else {
            match verify_with(&p.policy, Kind::Any, false, f.bytes, None).await {
                Ok(m) => (m.bytes, Some(m.content_type), Some(m.etag)),
                Err(_) => return Ok(bad_gateway()),
            }
        };
        let mut r = Response::new(Either::Right(Full::new(bytes)));
        for (name, value) in [(CONTENT_TYPE, content_type), (ETAG, etag)] {
            if let Some(v) = value {
                r.headers_mut().insert(name, v);
            }
        }
        return Ok(r);
    }
    let Ok(uri) = target.parse::<Uri>() else {
        return Ok(bad_gateway());
    };
    let Ok(up) = p.client.get(uri).await else {
        return Ok(bad_gateway());
    };
    let (parts, body) = up.into_parts();
    let body = if p.mode == Mode::Stream {
        Either::Left(body)
    } else {
        match body.collect().await {
            Ok(c) => Either::Right(Full::new(c.to_bytes())),
            Err(_) => return Ok(bad_gateway()),
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
        r.headers_mut().insert(CONTENT_TYPE, ct.clone());
    }
    Ok(r)
}

/// The policy of `medialink serve --profile any`, parsed as the binary parses it.
fn any_policy() -> Policy {
    use clap::Parser;
    match Cli::try_parse_from(["medialink", "serve", "--profile", "any"]).map(|c| c.command) {
        Ok(Command::Serve(args)) => args.policy(),
        _ => usage("cannot parse `medialink serve --profile any`"),
    }
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "proxy_floor: {msg}\nusage: proxy_floor --listen ADDR --upstream http://HOST:PORT --mode stream|collect|fetcher|verified"
    );
    std::process::exit(2)
}

fn main() {
    let (mut listen, mut upstream, mut mode) = (None, None, None);
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--listen" => listen = Some(val()),
            "--upstream" => upstream = Some(val().trim_end_matches('/').to_owned()),
            "--mode" => {
                mode = Some(match val().as_str() {
                    "stream" => Mode::Stream,
                    "collect" => Mode::Collect,
                    "fetcher" => Mode::Fetcher,
                    "verified" => Mode::Verified,
                    m => usage(&format!("unknown mode {m}")),
                })
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let listen: std::net::SocketAddr = listen
        .unwrap_or_else(|| usage("--listen is required"))
        .parse()
        .unwrap_or_else(|e| usage(&format!("--listen: {e}")));
    let upstream = upstream.unwrap_or_else(|| usage("--upstream is required"));
    let mode = mode.unwrap_or_else(|| usage("--mode is required"));

    // The runtime medialink's `serve` builds (src/cli.rs).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let cfg = FetchConfig {
            allow_cidrs: vec!["127.0.0.0/8".parse().expect("cidr")],
            ..FetchConfig::default()
        };
        let proxy = Arc::new(Proxy {
            mode,
            upstream,
            client: Client::builder(TokioExecutor::new()).build(http),
            fetcher: Fetcher::new(cfg).unwrap_or_else(|e| usage(&format!("fetcher: {e}"))),
            policy: any_policy(),
        });
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| usage(&format!("cannot listen on {listen}: {e}")));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let p = Arc::clone(&proxy);
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(Arc::clone(&p), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
