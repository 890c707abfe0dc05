//! Load harness: N keep-alive HTTP/1.1 connections (like `wrk -cN`), each sending
//! requests back to back for a fixed time, latencies in an HDR histogram.
//!
//! ```text
//! cargo bench --bench load -- create   [--concurrency 64] [--duration 10s]
//! cargo bench --bench load -- batch    [--batch 1000] [--concurrency 4]
//! cargo bench --bench load -- get      --url http://127.0.0.1:8080/m/ID.jpg
//! ```
//! Without `--server`, it starts the release `medialink` on a temp data dir
//! (`--preload N` links stored first, for the scale-with-data case) and stops it
//! after. It prints one Markdown row: mode, connections, rate, p50, p99.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

struct Opts {
    mode: String,
    server: Option<String>,
    token: String,
    url: Option<String>,
    concurrency: usize,
    duration: Duration,
    batch: usize,
    preload: usize,
    /// Where the created links point. An IP literal, so creation never waits on DNS
    /// (this machine may have none); nothing fetches it unless a test asks to.
    link_base: String,
    extra: Vec<String>,
}

fn parse() -> Opts {
    let mut o = Opts {
        mode: String::new(),
        server: None,
        token: "bench-token".into(),
        url: None,
        concurrency: 64,
        duration: Duration::from_secs(10),
        batch: 1000,
        preload: 0,
        link_base: "http://127.0.0.1:9/bench".into(),
        extra: Vec::new(),
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--server" => o.server = Some(val()),
            "--token" => o.token = val(),
            "--url" => o.url = Some(val()),
            "--concurrency" | "-c" => o.concurrency = val().parse().expect("number"),
            "--duration" | "-d" => {
                o.duration = humantime::parse_duration(&val()).expect("duration")
            }
            "--batch" => o.batch = val().parse().expect("number"),
            "--preload" => o.preload = val().parse().expect("number"),
            "--link-base" => o.link_base = val().trim_end_matches('/').to_owned(),
            "--serve-arg" => o.extra.push(val()),
            m if o.mode.is_empty() && !m.starts_with('-') => o.mode = m.to_owned(),
            other => panic!("unknown argument {other}"),
        }
    }
    if o.mode.is_empty() {
        o.mode = "create".into();
    }
    o
}

struct Spawned(std::process::Child, #[allow(dead_code)] tempfile::TempDir);
impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(o: &Opts) -> (String, Spawned) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_medialink"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-token",
            &o.token,
            // The per-token rate limit (100/s by default) would be what we measure.
            "--api-rate",
            "0",
            // The links point at an IP literal on loopback (see `link_base`).
            "--allow-upstream-cidr",
            "127.0.0.1/32",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(&o.extra)
        .env("RUST_LOG", "warn,medialink::server=info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start medialink");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("medialink exited").expect("read");
        if let Some(a) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
        {
            break a.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (format!("http://{addr}"), Spawned(child, dir))
}

struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

async fn connect(authority: &str) -> Conn {
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect");
    tcp.set_nodelay(true).ok();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    Conn { sender }
}

impl Conn {
    async fn send(&mut self, req: Request<Full<Bytes>>) -> (u16, usize) {
        self.sender.ready().await.expect("ready");
        let res = self.sender.send_request(req).await.expect("response");
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, body.len())
    }
}

/// Unique URLs across workers and runs, so every create is a real insert.
fn link_url(base: &str, run: u64, worker: usize, i: u64) -> String {
    format!("{base}/{run}/{worker}/{i}.jpg?X-Amz-Signature=0123456789abcdef&token=t")
}

#[tokio::main]
async fn main() {
    let o = parse();
    let (base, _guard) = match &o.server {
        Some(s) => (s.trim_end_matches('/').to_owned(), None),
        None => {
            let (b, g) = spawn_server(&o);
            (b, Some(g))
        }
    };
    let authority = base.trim_start_matches("http://").to_owned();
    let run: u64 = rand::random::<u32>() as u64;

    if o.preload > 0 {
        let mut c = connect(&authority).await;
        let started = Instant::now();
        for chunk in 0..o.preload.div_ceil(1000) {
            let body: Vec<_> = (0..1000)
                .map(|i| serde_json::json!({"url": link_url(&o.link_base, run, 9999, (chunk * 1000 + i) as u64)}))
                .collect();
            let req = Request::post(format!("{base}/api/v1/links"))
                .header("host", &authority)
                .header("authorization", format!("Bearer {}", o.token))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
                .unwrap();
            let (st, _) = c.send(req).await;
            assert!(st == 201 || st == 200, "preload answered {st}");
        }
        eprintln!("preloaded {} links in {:.1?}", o.preload, started.elapsed());
    }

    let get_url = o.url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..o.concurrency {
        let (authority, base, token, mode) = (
            authority.clone(),
            base.clone(),
            o.token.clone(),
            o.mode.clone(),
        );
        let (stop, done, errors, get_url) =
            (stop.clone(), done.clone(), errors.clone(), get_url.clone());
        let batch = o.batch;
        let link_base = o.link_base.clone();
        workers.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut c = connect(&authority).await;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = match mode.as_str() {
                    "create" => Request::post(format!("{base}/api/v1/links"))
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(
                            serde_json::to_vec(&serde_json::json!({"url": link_url(&link_base, run, w, i)})).unwrap(),
                        ))),
                    "batch" => {
                        let body: Vec<_> = (0..batch as u64)
                            .map(|k| serde_json::json!({"url": link_url(&link_base, run, w, i * batch as u64 + k)}))
                            .collect();
                        Request::post(format!("{base}/api/v1/links"))
                            .header("authorization", format!("Bearer {token}"))
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
                    }
                    "get" => Request::get(get_url.clone().expect("get needs --url")).body(Full::new(Bytes::new())),
                    m => panic!("unknown mode {m}"),
                }
                .unwrap();
                let mut req = req;
                req.headers_mut().insert("host", authority.parse().unwrap());
                let t = Instant::now();
                let (st, _) = c.send(req).await;
                hist.record(t.elapsed().as_micros().max(1) as u64).ok();
                // 207 means some items of a batch failed: not a success to count.
                if matches!(st, 200 | 201) {
                    done.fetch_add(if mode == "batch" { batch as u64 } else { 1 }, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            hist
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(o.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for w in workers {
        hist.add(w.await.expect("worker")).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let unit = if o.mode == "get" { "req/s" } else { "links/s" };
    println!(
        "| {} | c={} | {:.0} {unit} | p50 {:.2} ms | p99 {:.2} ms | errors {} |",
        o.mode,
        o.concurrency,
        n as f64 / secs,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        errors.load(Ordering::Relaxed),
    );
}
