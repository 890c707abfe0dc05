//! Helpers for the PostgreSQL tests: a throwaway database per test (so tests can run
//! in parallel and terminate each other's nothing), link builders, and a TCP proxy in
//! front of the server that a test can cut or freeze to play an outage.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use medialink::canon::CanonicalUrl;
use medialink::ids::IdKey;
use medialink::policy::Kind;
use medialink::store::{IdPlan, NewLink};
use sqlx::{Connection, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const ENV: &str = "MEDIALINK_TEST_POSTGRES_URL";

/// The server URL, or `None` after saying why the test is skipped.
pub fn server_url() -> Option<String> {
    match std::env::var(ENV) {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            eprintln!("skipping: {ENV} is not set (PostgreSQL tests need a server)");
            None
        }
    }
}

/// A database of its own for one test, dropped by `drop_db`.
pub struct TestDb {
    pub url: String,
    pub admin_url: String,
    pub name: String,
}

impl TestDb {
    pub async fn create(tag: &str) -> Option<Self> {
        let admin_url = server_url()?;
        let name = format!("medialink_scratch_{tag}_{}", std::process::id());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Some(Self {
            url: url.to_string(),
            admin_url,
            name,
        })
    }

    /// The same database reached through `addr` (a proxy).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let mut url = url::Url::parse(&self.url).unwrap();
        url.set_ip_host(addr.ip()).unwrap();
        url.set_port(Some(addr.port())).unwrap();
        url.to_string()
    }

    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    pub async fn drop_db(self) {
        let mut admin = PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

pub fn url(s: &str) -> CanonicalUrl {
    CanonicalUrl::parse(s).unwrap()
}

pub fn derived(key: &IdKey, u: &str) -> NewLink {
    let u = url(u);
    NewLink {
        plan: IdPlan::Derived(key.derive(&u)),
        url: u,
        kind: Kind::Image,
        created_at: 1_700_000_000,
        expires_at: None,
        convert: None,
        media: None,
        blob: None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Forward,
    /// Every connection is closed and new ones are closed at once: a stopped server.
    Cut,
    /// Connections stay open and nothing passes: a frozen host or a cut cable.
    Freeze,
}

/// A TCP proxy to the PostgreSQL server whose behaviour a test switches.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    pub async fn start(target: &str) -> Arc<Self> {
        let target_url = url::Url::parse(target).unwrap();
        let target = format!(
            "{}:{}",
            target_url.host_str().unwrap(),
            target_url.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Forward);
        let proxy = Arc::new(Self { addr, mode });
        let mode_rx = proxy.mode.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = mode_rx.clone();
                let target = target.clone();
                tokio::spawn(serve(client, target, mode));
            }
        });
        proxy
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn serve(client: TcpStream, target: String, mut mode: watch::Receiver<Mode>) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Cut => return,
        Mode::Freeze => {
            // Hold the socket, send nothing, until the mode changes.
            let _ = mode.changed().await;
            return;
        }
        Mode::Forward => {}
    }
    let Ok(server) = TcpStream::connect(&target).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let pump = async {
        tokio::select! {
            _ = tokio::io::copy(&mut cr, &mut sw) => {}
            _ = tokio::io::copy(&mut sr, &mut cw) => {}
        }
    };
    tokio::select! {
        _ = pump => return,
        _ = async {
            while mode.changed().await.is_ok() && *mode.borrow() == Mode::Forward {}
        } => {}
    }
    // Forwarding stopped; the sockets are still held here. Frozen: keep them open,
    // silent, until the mode changes (then drop: the connection's state is lost).
    while *mode.borrow() == Mode::Freeze && mode.changed().await.is_ok() {}
    drop((cr, cw, sr, sw));
}
