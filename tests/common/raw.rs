//! Fake upstreams on loopback for the fetch tests: an axum one for well-behaved HTTP
//! and a raw TCP one for byte-level faults (lying lengths, cut bodies, stalls). Both
//! count accepted connections, so a test can prove the fetcher never connected.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medialink::fetch::guard::{Lookup, NameLookup};
use medialink::fetch::{FetchConfig, Fetcher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A fake upstream: its address, how many connections it accepted, and the request
/// heads it read (raw upstreams only).
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub accepts: Arc<AtomicUsize>,
    pub heads: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("http://{}{path}", self.addr)).expect("upstream url")
    }
    pub fn accepted(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads lock").clone()
    }
}

/// A raw TCP upstream on `ip`, port 0. Each connection's request head is read, then
/// `respond(stream, head)` writes whatever bytes the test scripts.
pub async fn raw_upstream<F, Fut>(ip: &str, respond: F) -> Upstream
where
    F: Fn(TcpStream, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind((ip, 0)).await.expect("bind raw upstream");
    let up = Upstream {
        addr: listener.local_addr().expect("local addr"),
        accepts: Arc::default(),
        heads: Arc::default(),
    };
    let (accepts, heads) = (up.accepts.clone(), up.heads.clone());
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            accepts.fetch_add(1, Ordering::SeqCst);
            let (heads, respond) = (heads.clone(), respond.clone());
            tokio::spawn(async move {
                let Ok(head) = read_head(&mut stream).await else {
                    return;
                };
                heads.lock().expect("heads lock").push(head.clone());
                let _ = respond(stream, head).await;
            });
        }
    });
    up
}

/// A listener that only counts connections (the "must never be reached" target).
pub async fn counting_listener(ip: &str) -> Upstream {
    raw_upstream(ip, |mut s, _| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
            .await
    })
    .await
}

/// A well-behaved axum upstream on 127.0.0.1 (tests that count connections use raw
/// upstreams instead).
pub async fn axum_upstream(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind axum upstream");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

async fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The request path from a request head.
pub fn path_of(head: &str) -> String {
    head.split_whitespace().nth(1).unwrap_or("/").to_owned()
}

/// Test config: 127.0.0.1/32 allowed (and only that), short timeouts.
pub fn cfg() -> FetchConfig {
    FetchConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        resolve_timeout: Duration::from_secs(1),
        allow_private: false,
        allow_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
    }
}

/// A name lookup from a fixed map; names not in it fail, `slow.test` sleeps 5 s.
pub struct MapLookup(pub HashMap<String, Vec<IpAddr>>);

impl NameLookup for MapLookup {
    fn lookup(&self, host: &str) -> Lookup {
        let found = self.0.get(host).cloned();
        let slow = host == "slow.test";
        Box::pin(async move {
            if slow {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
        })
    }
}

pub fn fetcher_with_names(names: &[(&str, &str)]) -> Fetcher {
    let map = names
        .iter()
        .map(|(n, ip)| ((*n).to_owned(), vec![ip.parse().expect("ip")]))
        .collect();
    Fetcher::with_resolver(cfg(), Arc::new(MapLookup(map))).expect("fetcher")
}

/// A gzip member holding `data` in one stored (uncompressed) deflate block: enough to
/// prove reqwest decodes before we count, without a compression dependency.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    assert!(data.len() <= 0xffff, "one stored block");
    let len = data.len() as u16;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.push(1); // BFINAL=1, BTYPE=00 (stored)
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
