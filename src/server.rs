//! The listener: our own accept loop (so TLS, connection limits and header timeouts
//! are ours), hyper's auto HTTP/1.1 + HTTP/2 connection builder, and graceful
//! shutdown on SIGTERM/SIGINT: stop accepting, let in-flight requests finish, then
//! flush the store. The TLS configuration itself lives in `tls`.

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
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

use crate::api;
use crate::api::auth::Tokens;
use crate::blobs::FileBlobs;
use crate::cache::MediaCache;
use crate::config::ServeArgs;
use crate::fetch::{FetchConfig, Fetcher};
use crate::state::{AppState, SharedState};
use crate::store::{self, HotStore, Invalidation};
use crate::tls;

/// An unfinished request head is dropped after this (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head; past it hyper answers 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A TLS handshake not finished by then is dropped (a slowloris before the head).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the accept loop treats each connection.
#[derive(Clone)]
pub struct Listening {
    /// HTTPS when set; read once per accepted connection, so a reload applies to new
    /// connections and never touches open ones.
    pub tls: Option<Arc<tls::Reloadable>>,
    /// Connections served at once; past it the loop stops accepting (the kernel's
    /// backlog holds the rest) until one closes.
    pub max_connections: usize,
}

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
        limits: crate::api::limits::Limits::new(&args.limits),
        public_base,
        policy: args.policy(),
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
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(
            tls::Reloadable::load(tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .map_err(|e| ServeError::Config(e.to_string()))?,
        )),
        _ => None,
    };
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
    #[cfg(target_os = "linux")]
    {
        // Cached media files go beside the data (see `zerocopy` for why a disk
        // filesystem); an unusable directory only means memfds instead.
        let dir = &args.store.data_dir;
        let dir = std::fs::create_dir_all(dir).is_ok().then(|| dir.clone());
        let budget = crate::zerocopy::init(dir);
        tracing::debug!(files = budget, "cached media may use this many files");
    }
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
    // Before the listening line: from then on a SIGHUP must reload, not kill. Aborted
    // at the end like the limits sweeper (neither holds anything to flush).
    let reloader = tls.clone().map(|t| tokio::spawn(tls::reload_on_sighup(t)));
    // The line tests and operators wait for; keep its shape.
    tracing::info!(listen = %bound, public_url = %state.public_base, "medialink listening");
    if let Some(warning) = args.public_base_warning(bound) {
        tracing::warn!("{warning}");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(sweep_loop(
        Arc::clone(&state),
        args.sweep_interval,
        stop_rx.clone(),
    ));
    let flusher = tokio::spawn(flush_loop(Arc::clone(&state), stop_rx.clone()));
    let max_connections = args.limits.max_connections;
    let metrics_server = metrics_listener.map(|l| {
        let bound = l.local_addr().ok();
        tracing::info!(listen = ?bound, "metrics listening");
        let app = crate::metrics::router(Arc::clone(&state));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.changed().await;
            };
            // Plain HTTP: /metrics is for a scraper on a private address.
            let listening = Listening {
                tls: None,
                max_connections,
            };
            serve(l, app, listening, stopped, Duration::from_secs(1)).await;
        })
    });
    let invalidator = tokio::spawn(invalidation_loop(Arc::clone(&state), stop_rx));
    // Holds no state that needs flushing, so it is simply aborted at the end.
    let limits_sweeper = tokio::spawn(api::limits::sweep_periodically(state.limits.clone()));
    let listening = Listening {
        tls,
        max_connections: args.limits.max_connections,
    };
    serve(
        listener,
        app,
        listening,
        shutdown_signal(),
        args.shutdown_grace,
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = sweeper.await;
    let _ = invalidator.await;
    // After the requests in flight finished, so their events are in the last flush.
    let _ = flusher.await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    limits_sweeper.abort();
    if let Some(r) = reloader {
        r.abort();
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
    listening: Listening,
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
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(listening.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: past the limit, clients wait in the
        // backlog instead of costing us a task and a buffer each.
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                // The semaphore is never closed; stop serving if it somehow is.
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
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
        let conn = Conn {
            builder: Arc::clone(&builder),
            watcher: graceful.watcher(),
            app: app.clone(),
            peer,
        };
        let acceptor = listening
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.current()));
        tokio::spawn(async move {
            let _permit = permit;
            let Some(acceptor) = acceptor else {
                // Plain TCP: cached media goes out with sendfile (see `zerocopy`).
                #[cfg(target_os = "linux")]
                let stream = crate::zerocopy::SendfileStream::new(stream);
                return conn.serve(TokioIo::new(stream)).await;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => conn.serve(TokioIo::new(tls)).await,
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
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

/// One accepted connection, ready to be served once its transport is.
struct Conn {
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    app: Router,
    peer: SocketAddr,
}

impl Conn {
    async fn serve<I>(self, io: TokioIo<I>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            builder,
            watcher,
            app,
            peer,
        } = self;
        // hyper bounds every HTTP/1 head with HEADER_READ_TIMEOUT, but not the bytes
        // read before it (the auto builder's HTTP/2 preface sniff) nor an HTTP/2
        // connection that never opens a stream. So the first request must arrive
        // within the same time, or the connection is dropped.
        let first_request = Arc::new(Notify::new());
        let seen = Arc::clone(&first_request);
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            seen.notify_one();
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let conn = watcher.watch(builder.serve_connection_with_upgrades(io, svc).into_owned());
        tokio::pin!(conn);
        let deadline = async {
            if tokio::time::timeout(HEADER_READ_TIMEOUT, first_request.notified())
                .await
                .is_ok()
            {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            ended = &mut conn => if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            },
            () = deadline => tracing::debug!(%peer, "no request within the header timeout: connection dropped"),
        }
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
