//! Security hardening, end to end against the real binary (issue #6): HTTPS with a
//! `dev-cert` certificate (trust, TLS versions, ALPN, reload on SIGHUP), hostile
//! requests (huge heads and bodies, odd ids, wrong-token floods), slow clients, and
//! the connection limit. Everything runs on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, TOKEN, assert_problem, bin, http};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs the real `medialink dev-cert` into `dir`; returns (cert, key).
fn dev_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let out = Command::new(bin())
        .args(["dev-cert", "--out-dir"])
        .arg(dir)
        .output()
        .expect("run medialink dev-cert");
    assert!(
        out.status.success(),
        "dev-cert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// An HTTPS server on a fresh `dev-cert` pair; the pair's directory stays alive with it.
fn https_server(extra: &[&str]) -> (Server, tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = dev_cert(dir.path());
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    assert!(s.base.starts_with("https://"), "{}", s.base);
    (s, dir, cert, key)
}

/// A reqwest client whose only trust root is the certificate in `pem`.
fn trusting(pem: &Path) -> reqwest::ClientBuilder {
    let cert = reqwest::Certificate::from_pem(&std::fs::read(pem).unwrap()).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .tls_certs_only([cert])
        .tls_info(true)
}

fn peer_cert(res: &reqwest::Response) -> Vec<u8> {
    res.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info on the response")
        .to_vec()
}

fn der(pem: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(pem).unwrap().to_vec()
}

/// A rustls client config trusting only `pem`, offering `alpn`.
fn rustls_client(pem: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pem).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    pem: &Path,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(rustls_client(pem, alpn))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// Sends `head` on a fresh connection and returns whatever the server answered
/// before closing (empty when it closed or reset without a word).
fn raw_exchange(addr: SocketAddr, head: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may close before it has read everything: a refused write is an answer.
    let _ = s.write_all(head);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> Option<u16> {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
}

fn from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::from(ip))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_with_a_dev_cert_serves_healthz_to_a_client_trusting_only_it() {
    let (s, _dir, cert, _) = https_server(&[]);
    let client = trusting(&cert).build().unwrap();
    let res = client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // ALPN: reqwest offers h2 and http/1.1; the server picks HTTP/2.
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(peer_cert(&res), der(&cert));
    let res = trusting(&cert)
        .http1_only()
        .build()
        .unwrap()
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (res.status().as_u16(), res.version()),
        (200, reqwest::Version::HTTP_11)
    );
    // A client that trusts only the system roots refuses the self-signed certificate.
    assert!(http().get(s.url("/healthz")).send().await.is_err());
    // And plain HTTP on the HTTPS port gets no answer.
    let answer = raw_exchange(s.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn alpn_picks_h2_when_offered_and_http1_otherwise() {
    let (s, _dir, cert, _) = https_server(&[]);
    let tls = tls_connect(s.addr, &cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let tls = tls_connect(s.addr, &cert, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // TLS 1.2 alone is still served.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::pem::PemObject::from_pem_file(&cert).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let tls12 = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        tls12.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

/// rustls cannot speak TLS 1.1, so the old client is `openssl s_client -tls1_1`
/// (with the security level lowered so OpenSSL 3 offers 1.1 at all).
#[tokio::test]
async fn a_tls_1_1_client_is_refused() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl is not installed");
        return;
    }
    let (s, _dir, _, _) = https_server(&[]);
    let run = |version: &str| {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &s.addr.to_string(), version])
            .args(["-cipher", "DEFAULT@SECLEVEL=0", "-servername", "localhost"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let old = run("-tls1_1");
    assert!(
        old.contains("alert") || old.contains("no protocols available"),
        "{old}"
    );
    assert!(old.contains("no peer certificate available"), "{old}");
    // The same tool with TLS 1.2 gets through, so the refusal is about the version.
    let ok = run("-tls1_2");
    assert!(ok.contains("Protocol  : TLSv1.2"), "{ok}");
}

#[tokio::test]
async fn sighup_swaps_the_certificate_and_keeps_open_connections() {
    let (s, dir, cert, key) = https_server(&[]);
    let old_der = der(&cert);
    // An HTTP/1.1 keep-alive connection made before the swap.
    let before = trusting(&cert)
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let res = before.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(peer_cert(&res), old_der);

    let next = tempfile::tempdir().unwrap();
    let (new_cert, new_key) = dev_cert(next.path());
    let new_der = der(&new_cert);
    assert_ne!(new_der, old_der);
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    s.signal("HUP");

    let after = trusting(&new_cert).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(res) = after.get(s.url("/healthz")).send().await {
            assert_eq!(res.status(), 200);
            assert_eq!(peer_cert(&res), new_der, "new connections see the new cert");
            break;
        }
        assert!(Instant::now() < deadline, "new certificate not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.log().contains("TLS certificate reloaded"), "{}", s.log());
    // The connection opened before the swap still works, still on the old
    // certificate: a new connection would show the new one, which `before` does not
    // even trust.
    let res = before.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(peer_cert(&res), old_der);
    // Same process throughout.
    assert!(s.log().matches("medialink listening").count() == 1);
    drop(dir);
}

#[tokio::test]
async fn a_broken_certificate_on_sighup_keeps_the_old_one() {
    let (s, _dir, cert, _) = https_server(&[]);
    let pem = std::fs::read(&cert).unwrap();
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    s.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.log().contains("TLS reload failed") {
        assert!(Instant::now() < deadline, "{}", s.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&cert, pem).unwrap();
    let res = trusting(&cert)
        .build()
        .unwrap()
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_readable_certificate() {
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .args([
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/c.pem"));
}

#[tokio::test]
async fn hostile_requests_are_refused_and_the_server_keeps_serving() {
    let s = Server::start(&[]);
    let addr = s.addr;

    // A 200 KB header: 431, or the connection closed, never served.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let answer = tokio::task::spawn_blocking(move || raw_exchange(addr, big.as_bytes()))
        .await
        .unwrap();
    assert!(
        answer.is_empty() || status_of(&answer) == Some(431),
        "200 KB head: {answer:.200}"
    );
    // The same over HTTP/2 (prior knowledge on the plain port).
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let res = h2
        .get(s.url("/healthz"))
        .header("x-big", "a".repeat(200 * 1024))
        .send()
        .await;
    match &res {
        Ok(r) => assert!(!r.status().is_success(), "h2 200 KB head served: {r:?}"),
        // The server's h2 ends the connection (GOAWAY, ENHANCE_YOUR_CALM): "Remote".
        Err(e) => assert!(format!("{e:?}").contains("Remote"), "{e:?}"),
    }
    let ok = h2.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (ok.status().as_u16(), ok.version()),
        (200, reqwest::Version::HTTP_2)
    );

    // A 2 MB body on the API: 413 payload_too_large.
    let res = http()
        .post(s.url("/api/v1/links"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"url": "https://a.example/", "pad": "{}"}}"#,
            "p".repeat(2 * 1024 * 1024)
        ))
        .send()
        .await
        .unwrap();
    let st = res.status().as_u16();
    assert_problem(st, &res.json().await.unwrap(), 413, "payload_too_large");

    // A 5,000-character id: 404 on /m/ and on the API, without a lookup worth timing.
    let long = "a".repeat(5000);
    for path in [format!("/m/{long}"), format!("/m/{long}.jpg")] {
        let res = http().get(s.url(&path)).send().await.unwrap();
        let st = res.status().as_u16();
        assert_problem(st, &res.json().await.unwrap(), 404, "not_found");
    }
    let res = http()
        .get(s.url(&format!("/api/v1/links/{long}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let st = res.status().as_u16();
    assert_problem(st, &res.json().await.unwrap(), 404, "not_found");

    // Traversal-looking ids, sent byte for byte (no client normalization).
    for path in [
        "/m/..%2F..%2Fetc%2Fpasswd",
        "/m/%2e%2e%2f",
        "/m/%2e%2e/%2e%2e/etc/passwd",
        "/m/../../etc/passwd",
        "/m/..\\..\\etc\\passwd",
        "/m/%00",
    ] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = tokio::task::spawn_blocking(move || raw_exchange(addr, head.as_bytes()))
            .await
            .unwrap();
        let st = status_of(&answer);
        assert!(matches!(st, Some(400 | 404)), "{path}: {answer}");
        assert!(!answer.contains("root:"), "{path}: {answer}");
    }

    // Afterwards: alive, and a valid request still works.
    assert_eq!(
        http().get(s.url("/healthz")).send().await.unwrap().status(),
        200
    );
    let (st, link) = common::create(&s, json!({"url": "https://cdn.example.com/ok.jpg"})).await;
    assert_eq!(st, 201, "{link}");
}

#[tokio::test]
async fn a_wrong_token_flood_ends_in_429_and_blocks_only_that_address() {
    let s = Server::start(&[]);
    let flooder = from([127, 0, 0, 1]);
    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..300 {
        let res = flooder
            .post(s.url("/api/v1/links"))
            .bearer_auth(format!("wrong-{i}"))
            .json(&json!({"url": "https://cdn.example.com/a.jpg"}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        last = Some(res);
    }
    let unauthorized = statuses.iter().filter(|&&s| s == 401).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(unauthorized + limited, 300, "{statuses:?}");
    // The default budget: a burst of 20 failures (a few more if the flood is slow
    // enough for it to refill at 10 a minute).
    assert!((20..=25).contains(&unauthorized), "{statuses:?}");
    assert_eq!(&statuses[..20], &[401; 20]);
    let last = last.unwrap();
    assert_eq!(last.status(), 429);
    let retry: u64 = last.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&retry), "Retry-After {retry}");
    assert_problem(429, &last.json().await.unwrap(), 429, "rate_limited");

    // Policy: the blocked address is refused even with the right token...
    let res = flooder
        .get(s.url("/api/v1/links/aaaaaaaaaa"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // ...but health checks and /m/ are not API calls, and another address is fine.
    assert_eq!(
        flooder
            .get(s.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = flooder.get(s.url("/m/aaaaaaaaaa")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let other = from([127, 0, 0, 2]);
    let res = other
        .post(s.url("/api/v1/links"))
        .bearer_auth(TOKEN)
        .json(&json!({"url": "https://cdn.example.com/ok.jpg"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after() {
    let s = Server::start(&["--api-rate", "1", "--api-burst", "3"]);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let res = http()
            .get(s.url("/api/v1/links/aaaaaaaaaa"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        statuses.push((
            res.status().as_u16(),
            res.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        ));
    }
    assert_eq!(statuses[..3], [(404, None), (404, None), (404, None)]);
    assert!(
        statuses[3..]
            .iter()
            .all(|(st, ra)| *st == 429 && ra.as_deref() == Some("1")),
        "{statuses:?}"
    );
    // The quota refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = http()
        .get(s.url("/api/v1/links/aaaaaaaaaa"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

/// Opens a connection that sends `prefix` and then nothing; returns how long until
/// the server closed it.
async fn time_until_closed(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    prefix: &[u8],
) -> Duration {
    stream.write_all(prefix).await.unwrap();
    stream.flush().await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue, // a 408 or similar before the close is fine
            Err(_) => return start.elapsed(),
        }
    }
}

#[tokio::test]
async fn unfinished_request_heads_are_closed_within_30s_while_others_are_served() {
    let (s, _dir, cert, _) = https_server(&[]);
    let addr = s.addr;
    let plain = Server::start(&[]);
    let paddr = plain.addr;
    let tcp = |a| async move { tokio::net::TcpStream::connect(a).await.unwrap() };

    let half_head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let slow = [
        // Half an HTTP/1.1 head.
        tokio::spawn(time_until_closed(tcp(paddr).await, half_head)),
        // Nothing at all (the HTTP/2 preface sniff must not wait forever either).
        tokio::spawn(time_until_closed(tcp(paddr).await, b"")),
        // Half the HTTP/2 preface.
        tokio::spawn(time_until_closed(tcp(paddr).await, b"PRI * HTTP/2.0\r\n")),
        // Half a head inside TLS.
        tokio::spawn(time_until_closed(
            tls_connect(addr, &cert, &[b"http/1.1"]).await,
            half_head,
        )),
        // A complete HTTP/2 connection that never opens a stream.
        tokio::spawn(time_until_closed(
            tls_connect(addr, &cert, &[b"h2"]).await,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        )),
    ];
    // A TCP connection that never starts its TLS handshake: dropped after 10 s.
    let handshake = tokio::spawn(time_until_closed(tcp(addr).await, b""));

    // Meanwhile both servers keep answering.
    let tls_client = trusting(&cert).build().unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        assert_eq!(
            http()
                .get(plain.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            tls_client
                .get(s.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let took = handshake.await.unwrap();
    assert!(
        took >= Duration::from_secs(8) && took <= Duration::from_secs(15),
        "unstarted TLS handshake closed after {took:?}"
    );
    for (i, t) in slow.into_iter().enumerate() {
        let took = t.await.unwrap();
        assert!(
            took >= Duration::from_secs(25) && took <= Duration::from_secs(40),
            "slow connection {i} closed after {took:?}"
        );
    }
    assert_eq!(
        http()
            .get(plain.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn past_max_connections_clients_wait_until_a_slot_frees() {
    let s = Server::start(&["--max-connections", "2"]);
    let idle: Vec<_> = (0..2)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    // Give the server time to accept both.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    assert!(
        waiting.get(s.url("/healthz")).send().await.is_err(),
        "a third connection was served beside two held ones"
    );
    drop(idle);
    let res = http().get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}
