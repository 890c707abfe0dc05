//! The listener: our own accept loop (so TLS, connection limits and header timeouts
//! are ours), hyper's auto HTTP/1.1 + HTTP/2 connection builder, and graceful
//! shutdown on SIGTERM/SIGINT: stop accepting, let in-flight requests finish, then
//! flush the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::api;
use crate::api::auth::Tokens;
use crate::blobs::FileBlobs;
use crate::cache::MediaCache;
use crate::config::ServeArgs;
use crate::fetch::{FetchConfig, Fetcher};
use crate::policy::Policy;
use crate::state::{AppState, SharedState};
use crate::store::{self, HotStore, Invalidation};

/// An unfinished request head is dropped after this (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head; past it hyper answers 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Builds the shared state from the configuration.
pub async fn build_state(
    args: &ServeArgs,
    public_base: String,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Result<SharedState, ServeError> {
    let id_key = args.store.id_key().map_err(ServeError::Config)?;
    let store = store::open(&args.store.location(), id_key).await?;
    let store_blobs = store.blobs();
    let tokens = Tokens::new(args.api_tokens.iter().map(String::as_str));
    let fetcher =
        Fetcher::new(fetch_config(args)).map_err(|e| ServeError::Config(e.to_string()))?;
    if args.allow_private_upstreams {
        tracing::warn!(
            "--allow-private-upstreams: upstreams on private and loopback addresses are allowed"
        );
    }
    Ok(Arc::new(AppState {
        links: HotStore::new(store),
        tokens,
        public_base,
        policy: Policy {
            profile: args.profile,
            any_max_bytes: args.any_max_bytes,
        },
        fetcher,
        cache: MediaCache::new(args.cache_bytes),
        gateway: args.gateway.gateway().map_err(ServeError::Config)?,
        blobs: store_blobs
            .unwrap_or_else(|| Arc::new(FileBlobs::new(args.store.data_dir.join("blobs")))),
        blob_gc: tokio::sync::Mutex::new(()),
        trace: crate::trace::Recorder::new(),
        metrics,
    }))
}

pub fn fetch_config(args: &ServeArgs) -> FetchConfig {
    FetchConfig {
        connect_timeout: args.connect_timeout,
        timeout: args.upstream_timeout,
        resolve_timeout: args.resolve_timeout,
        allow_private: args.allow_private_upstreams,
        allow_cidrs: args.allow_upstream_cidrs.clone(),
    }
}

pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let addr = args.listen_addr().map_err(ServeError::Config)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let metrics_listener = match args.metrics_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|source| ServeError::Bind { addr: a, source })?,
        ),
        None => None,
    };
    let handle = crate::metrics::install().map_err(ServeError::Config)?;
    let state = build_state(&args, args.public_base(bound), Some(handle)).await?;
    if state.tokens.is_empty() {
        tracing::warn!(
            "no API token configured (--api-token / MEDIALINK_API_TOKENS): the API refuses every call; /m/ still serves"
        );
    }
    let app = api::router(
        Arc::clone(&state),
        args.max_body as usize,
        metrics_listener.is_none(),
    );
    // The line tests and operators wait for; keep its shape.
    tracing::info!(listen = %bound, public_url = %state.public_base, "medialink listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(sweep_loop(
        Arc::clone(&state),
        args.sweep_interval,
        stop_rx.clone(),
    ));
    let flusher = tokio::spawn(flush_loop(Arc::clone(&state), stop_rx.clone()));
    let metrics_server = metrics_listener.map(|l| {
        let bound = l.local_addr().ok();
        tracing::info!(listen = ?bound, "metrics listening");
        let app = crate::metrics::router(Arc::clone(&state));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.changed().await;
            };
            serve(l, app, stopped, Duration::from_secs(1)).await;
        })
    });
    let invalidator = tokio::spawn(invalidation_loop(Arc::clone(&state), stop_rx));
    serve(listener, app, shutdown_signal(), args.shutdown_grace).await;
    let _ = stop_tx.send(true);
    let _ = sweeper.await;
    let _ = invalidator.await;
    // After the requests in flight finished, so their events are in the last flush.
    let _ = flusher.await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    state.links.inner().close().await;
    tracing::info!("medialink stopped");
    Ok(())
}

/// How often recorded trace events reach the store.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Folds recorded trace events into the store every second, and once more when
/// stopped; also keeps the metrics recorder's histograms bounded.
async fn flush_loop(state: SharedState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.changed() => true,
        };
        if let Err(e) = state.trace.flush(state.links.inner().as_ref()).await {
            tracing::warn!(error = %e, "trace flush failed; keeping the events for the next one");
        }
        if let Some(m) = &state.metrics {
            m.run_upkeep();
        }
        if stopping {
            return;
        }
    }
}

/// Deletes expired links (and blobs only they pinned) every `every`, until stopped.
async fn sweep_loop(
    state: SharedState,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        match crate::links::sweep_expired(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(swept = n, "expired links deleted"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed; retrying at the next tick"),
        }
    }
}

/// Applies deletions made by other replicas to this one's hot map and media cache
/// (DESIGN §6: within 1 s). A lagging or reconnected listener may have missed some,
/// so then everything is dropped: a cold cache is slower, never wrong.
async fn invalidation_loop(state: SharedState, mut stop: tokio::sync::watch::Receiver<bool>) {
    use tokio::sync::broadcast::error::RecvError;
    let Some(mut rx) = state.links.inner().invalidations() else {
        return;
    };
    loop {
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = stop.changed() => return,
        };
        match event {
            Ok(Invalidation::Id(id)) => {
                state.links.forget(&id);
                state.cache.invalidate(&id).await;
            }
            Ok(Invalidation::All) | Err(RecvError::Lagged(_)) => {
                tracing::info!("dropping cached links: invalidations may have been missed");
                state.links.forget_all();
                state.cache.invalidate_all();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Accepts connections until `shutdown` resolves, then waits up to `grace` for the
/// connections in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: waiting for requests in flight"
    );
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing the connections left"),
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
