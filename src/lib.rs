//! medialink: a media proxy and URL shortener for messaging gateways.
//!
//! A sender asks for a short link to a long (often signed) media URL; medialink keeps
//! it under a short keyed id and serves the media at `/m/{id}.{ext}` with a type it
//! verified from the bytes. The map, in the order a request flows (DESIGN §1):
//!
//! - [`config`]: flags and environment, from one clap definition.
//! - [`server`]: the accept loop (hyper, optional rustls), graceful shutdown.
//! - [`api`]: the JSON API handlers, auth, rate limits ([`api::limits`]), request
//!   ids, and the one place errors become RFC 9457 problems ([`api::problem`]); its
//!   OpenAPI document ([`api::openapi`]) and the operator's web page ([`api::page`]).
//! - [`metrics`]: the Prometheus recorder, `/metrics`, requests by route and status.
//! - [`media`]: the `/m/` proxy handler: cache, fetch, verify, serve with ranges.
//! - [`links`]: link creation and presentation; [`ids`] and [`canon`] make the
//!   types (`LinkId`, `CanonicalUrl`) that cannot be wrong.
//! - [`store`]: the `Store` trait (SQLite embedded, PostgreSQL shared) and the map
//!   of hot links in front of it.
//! - [`trace`]: each link's delivery trace (fetches, sends), recorded in memory and
//!   flushed to the store in the background.
//! - [`fetch`]: hyper's pooled client behind the SSRF guard ([`fetch::guard`]).
//! - [`sniff`] + [`policy`]: what the bytes are, and whether the link accepts them.
//! - [`convert`]: into what the phone plays (JPEG, OGG/Opus).
//! - [`cache`]: the bounded media cache with single-flight misses; [`blobs`]: pinned
//!   bytes, content-addressed, kept after the upstream is gone.
//! - `zerocopy` (Linux): cached bodies in sealed memfds, sent with `sendfile` on
//!   plain TCP connections.
//! - [`sender`]: the ChatFlow gateway client and delivery.
//! - [`check`]: one verdict on a URL, as the gateway would fetch it; [`inspect`]: a
//!   link's trace for `medialink inspect`.
//! - [`client`]: medialink's own API, for the CLI; [`cli`]: the command line.
//! - [`tls`]: HTTPS for the listener (rustls, reload on SIGHUP, `dev-cert`); the
//!   threat model is SECURITY.md.

pub mod api;
pub mod blobs;
pub mod cache;
pub mod canon;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod convert;
pub mod fetch;
pub mod ids;
pub mod inspect;
pub mod links;
pub mod media;
pub mod metrics;
pub mod policy;
pub mod sender;
pub mod server;
pub mod sniff;
pub mod state;
pub mod store;
pub mod tls;
pub mod trace;
pub mod transfer;
#[cfg(target_os = "linux")]
pub mod zerocopy;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
