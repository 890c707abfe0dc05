//! The invalidation listener: one connection that LISTENs on `medialink_invalidate`
//! and turns each notification (a deleted id) into `Invalidation::Id` for the caches
//! of this process.
//!
//! PostgreSQL does not keep notifications for a listener that is away, so after every
//! reconnect (terminated backend, server restart) it sends `Invalidation::All`: the
//! caches drop everything rather than serve a link another replica deleted meanwhile.

use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::ids::LinkId;
use crate::store::{Invalidation, StoreError};

pub(super) const CHANNEL: &str = "medialink_invalidate";
/// Subscribers that fall this far behind get `Lagged` (treat it as `All`).
const CAPACITY: usize = 1024;
/// One (re)connect attempt, LISTEN included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A server that vanished without closing the socket (cut network, frozen host) sends
/// nothing, which looks like "no deletes": a periodic query finds out.
const HEARTBEAT: Duration = Duration::from_secs(10);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) struct Listener {
    events: broadcast::Sender<Invalidation>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    pool: PgPool,
}

impl Listener {
    /// LISTENs before returning, so no delete committed after the store opened is
    /// missed.
    pub(super) async fn start(options: PgConnectOptions) -> Result<Self, StoreError> {
        // A pool of one of its own: the listening connection is held for good and
        // must not take a slot from the queries.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .test_before_acquire(true)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options);
        let listener = connect(&pool).await.map_err(StoreError::Unavailable)?;
        let (events, _) = broadcast::channel(CAPACITY);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(pool.clone(), listener, events.clone(), stop_rx));
        Ok(Self {
            events,
            stop,
            task: Mutex::new(Some(task)),
            pool,
        })
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.events.subscribe()
    }

    pub(super) async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.pool.close()).await;
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, String> {
    let attempt = async {
        let mut listener = PgListener::connect_with(pool).await?;
        // We reconnect ourselves, so that we know when to send `All`.
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result.map_err(|e| format!("cannot listen for deletes: {e}")),
        Err(_) => Err("cannot listen for deletes: PostgreSQL did not answer".into()),
    }
}

async fn run(
    pool: PgPool,
    mut listener: PgListener,
    events: broadcast::Sender<Invalidation>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if !listen_until_lost(&mut listener, &events, &mut stop).await {
            return;
        }
        drop(listener);
        let mut backoff = BACKOFF_MIN;
        listener = loop {
            match connect(&pool).await {
                Ok(l) => break l,
                Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "invalidation listener"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        };
        tracing::info!("invalidation listener reconnected; dropping every cached link");
        // A send fails only when nobody subscribes, which is fine.
        let _ = events.send(Invalidation::All);
    }
}

/// Forwards notifications until the connection is lost (true) or the store closes
/// (false).
async fn listen_until_lost(
    listener: &mut PgListener,
    events: &broadcast::Sender<Invalidation>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return false,
            _ = heartbeat.tick() => {
                let ping = sqlx::query("SELECT 1").execute(&mut *listener);
                if !matches!(tokio::time::timeout(HEARTBEAT_TIMEOUT, ping).await, Ok(Ok(_))) {
                    tracing::warn!("invalidation listener: heartbeat failed");
                    return true;
                }
            }
            // Cancel-safe: sqlx reads whole messages only.
            received = listener.try_recv() => match received {
                Ok(Some(n)) => {
                    // Other payloads on our channel are not ours to act on.
                    if let Some(id) = LinkId::parse(n.payload()) {
                        let _ = events.send(Invalidation::Id(id));
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, "invalidation listener lost its connection");
                    return true;
                }
            },
        }
    }
}
