//! Shared test helpers: start the real `medialink` binary on a free loopback port
//! with its own data dir, and talk to it.
#![allow(dead_code)]

#[allow(dead_code)]
pub mod gateway;
#[allow(dead_code)]
pub mod media;
pub mod raw;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-1";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_medialink")
}

/// A running `medialink serve`.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub base: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: Arc<Mutex<String>>,
    _tmp: Option<Arc<tempfile::TempDir>>,
}

impl Server {
    /// Starts with a fresh temp data dir and the given extra flags.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = Arc::new(tempfile::tempdir().expect("temp dir"));
        let data_dir = tmp.path().to_owned();
        let mut s = Self::start_in(&data_dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts with a fresh temp data dir, extra flags and environment.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = Arc::new(tempfile::tempdir().expect("temp dir"));
        let data_dir = tmp.path().to_owned();
        let mut args = Self::base_args(&data_dir);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Self::spawn(args, data_dir, env);
        s._tmp = Some(tmp);
        s
    }

    fn base_args(data_dir: &Path) -> Vec<String> {
        vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--api-token".into(),
            TOKEN.into(),
        ]
    }

    /// Starts on an existing data dir (restarts use this).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let mut args = Self::base_args(data_dir);
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(args, data_dir.to_owned(), &[])
    }

    pub fn spawn(args: Vec<String>, data_dir: PathBuf, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.args(&args)
            .env("RUST_LOG", "info")
            .env_remove("PORT")
            .env_remove("MEDIALINK_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start medialink");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("medialink listening")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line.clone());
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("medialink did not start; log:\n{}", log.lock().unwrap());
            }
        };
        let addr: SocketAddr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no listen= in {line}"));
        let public = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("public_url="))
            .unwrap_or_default()
            .to_owned();
        let _ = public;
        // Started with a certificate, it speaks HTTPS (whatever --public-url says).
        let tls = args.iter().any(|a| a == "--tls-cert")
            || env.iter().any(|(k, _)| *k == "MEDIALINK_TLS_CERT");
        let scheme = if tls { "https" } else { "http" };
        Server {
            child: Some(child),
            addr,
            base: format!("{scheme}://{addr}"),
            data_dir,
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log,
            _tmp: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Same flags, same data dir, new process (keeps the temp dir alive).
    pub fn restart(&mut self) -> Server {
        self.kill();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut s = Self::spawn(self.args.clone(), self.data_dir.clone(), &env);
        s._tmp = self._tmp.clone();
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// POST /api/v1/links with a JSON body; returns (status, json).
pub async fn create(s: &Server, body: serde_json::Value) -> (u16, serde_json::Value) {
    let res = http()
        .post(s.url("/api/v1/links"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

pub async fn get_json(s: &Server, path: &str) -> (u16, serde_json::Value) {
    let res = http()
        .get(s.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// Asserts a problem body with this status and code.
pub fn assert_problem(status: u16, body: &serde_json::Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "body: {body}");
    assert_eq!(body["code"], want_code, "body: {body}");
    assert_eq!(body["status"], want_status, "body: {body}");
    assert!(body["title"].is_string() && body["type"].is_string() && body["detail"].is_string());
    assert!(
        body["request_id"].is_string(),
        "problem repeats the request id: {body}"
    );
}

/// A signed-looking URL of about `len` bytes with `&`, `=`, `%2F` and `token=` inside.
pub fn signed_url(base: &str, len: usize) -> String {
    let mut u = format!(
        "{base}?X-Amz-Credential=AKIA%2F20261124%2Fus-east-1&token=abc=def&caption=x&X-Amz-Signature="
    );
    let mut i = 0u64;
    while u.len() < len {
        u.push_str(&format!("{:x}", i.wrapping_mul(0x9E3779B97F4A7C15) % 16));
        i += 1;
    }
    u
}

/// Clients creating unique links against one or more servers until stopped; what
/// each got a `201` for is what a crash must not lose.
pub struct CreateLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    made: Arc<std::sync::atomic::AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<Vec<(String, String)>>>,
}

impl CreateLoad {
    /// `clients` tasks, spread over `bases` in turn.
    pub fn start(bases: &[String], clients: usize) -> CreateLoad {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|c| {
                let (base, stop, made) =
                    (bases[c % bases.len()].clone(), stop.clone(), made.clone());
                tokio::spawn(async move {
                    let http = http();
                    let mut acked = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let url = format!("https://cdn.example.com/c{c}/{i}.jpg?sig=a%2Fb&token=t");
                        i += 1;
                        let Ok(res) = http
                            .post(format!("{base}/api/v1/links"))
                            .bearer_auth(TOKEN)
                            .json(&serde_json::json!({"url": url}))
                            .send()
                            .await
                        else {
                            // This client's server is gone; the others go on.
                            break;
                        };
                        if res.status() == 201
                            && let Ok(v) = res.json::<serde_json::Value>().await
                        {
                            acked.push((url, v["id"].as_str().unwrap().to_owned()));
                            made.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    acked
                })
            })
            .collect();
        CreateLoad {
            stop,
            made,
            clients,
        }
    }

    /// Waits until `n` links were acknowledged, or 20 s (slow machines test the same).
    pub async fn wait_for(&self, n: usize) {
        let started = Instant::now();
        while self.made.load(std::sync::atomic::Ordering::Relaxed) < n
            && started.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the clients; every (url, id) that got a 201.
    pub async fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut acked = Vec::new();
        for c in self.clients {
            acked.extend(c.await.unwrap());
        }
        acked
    }
}

/// `n` concurrent creates of one URL, spread over `bases` in turn: the distinct ids
/// they got and how many answered 201.
pub async fn create_same_url_concurrently(
    bases: &[String],
    url: &str,
    n: usize,
) -> (std::collections::HashSet<String>, usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (base, url) = (bases[i % bases.len()].clone(), url.to_owned());
            tokio::spawn(async move {
                let res = http()
                    .post(format!("{base}/api/v1/links"))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"url": url}))
                    .send()
                    .await
                    .unwrap();
                let st = res.status().as_u16();
                let body: serde_json::Value = res.json().await.unwrap();
                (st, body["id"].as_str().unwrap().to_owned())
            })
        })
        .collect();
    let (mut ids, mut created) = (std::collections::HashSet::new(), 0);
    for t in tasks {
        let (st, id) = t.await.unwrap();
        created += usize::from(st == 201);
        ids.insert(id);
    }
    (ids, created)
}
