//! `AppState`: everything a request handler shares, built once from the parsed
//! configuration and passed to handlers behind one `Arc` (no globals but the
//! metrics recorder).

use std::sync::Arc;

use crate::api::auth::Tokens;
use crate::blobs::BlobStore;
use crate::cache::MediaCache;
use crate::fetch::Fetcher;
use crate::policy::Policy;
use crate::store::HotStore;

pub type SharedState = Arc<AppState>;

pub struct AppState {
    /// Links, through the hot map.
    pub links: HotStore,
    pub tokens: Tokens,
    /// Per-token and failed-auth rate limits (`api::limits`).
    pub limits: crate::api::limits::Limits,
    /// `{public_url}` without a trailing slash; short URLs start with it.
    pub public_base: String,
    pub policy: Policy,
    pub fetcher: Fetcher,
    pub cache: MediaCache,
    /// Pinned bytes, content-addressed.
    pub blobs: Arc<dyn BlobStore>,
    /// Held while pinning (blob put through link insert) and while collecting a blob,
    /// so a blob is never deleted between its write and its first reference.
    pub blob_gc: tokio::sync::Mutex<()>,
    /// The messaging gateway for `POST /api/v1/send`, when configured.
    pub gateway: Option<crate::sender::Gateway>,
    /// Delivery traces not yet in the store (flushed by the server's task).
    pub trace: crate::trace::Recorder,
    /// Renders `/metrics`; `None` outside `serve` (the recorder is the one global).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}
