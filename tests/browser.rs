//! The web page in headless Chromium (issue 10), driven through chromedriver with
//! fantoccini: create a link through the page, see its preview image render, and see
//! that fetch appear in the trace. Skipped, saying so, when Chromium or chromedriver
//! is not installed (`.ci/run` installs Debian's `chromium` and `chromium-driver`).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::upstream::{Reply, Upstream, fixture};
use common::{Server, TOKEN, get_json};
use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};

fn find(names: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(bin: &std::path::Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls a script until it returns something truthy, or panics with `what`.
async fn wait_js(c: &fantoccini::Client, script: &str, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.execute(script, vec![]).await.unwrap_or(Value::Null);
        let truthy = match &v {
            Value::Null | Value::Bool(false) => false,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_link_made_on_the_page_previews_and_its_fetch_shows_in_the_trace() {
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
    let chromedriver = find(&["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        eprintln!(
            "skipping: chromium/chromedriver not found in PATH (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let up = Upstream::start().await;
    // A WebP behind the link: the page's preview shows the JPEG medialink made of it.
    up.set(
        "/photo.webp",
        Reply::Bytes(200, "image/webp", fixture("photo.webp")),
    );
    let s = Server::start(&["--allow-upstream-cidr", "127.0.0.1/32"]);
    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-extensions",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session");

    let result = async {
        c.goto(&s.url("/")).await?;
        c.find(Locator::Css("#token"))
            .await?
            .send_keys(TOKEN)
            .await?;
        c.find(Locator::Css("#url"))
            .await?
            .send_keys(&up.url("/photo.webp"))
            .await?;
        c.find(Locator::Css("#create")).await?.click().await?;
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    result.expect("drive the form");

    let width = wait_js(
        &c,
        "const i = document.querySelector('#preview img'); return i && i.complete ? i.naturalWidth : 0;",
        "the preview image to render",
    )
    .await;
    assert_eq!(width, 640, "the converted photo keeps its width");
    let verdict = wait_js(
        &c,
        "const v = document.getElementById('verdict').textContent; return v.startsWith('ACCEPTED') || v.startsWith('REFUSED') ? v : '';",
        "the verdict",
    )
    .await;
    assert!(
        verdict
            .as_str()
            .unwrap()
            .contains("WebP would be converted to JPEG"),
        "{verdict}"
    );
    let row = wait_js(
        &c,
        "const r = [...document.querySelectorAll('#trace tbody tr[data-type=fetch]')].find(r => r.textContent.includes('200') && r.textContent.includes('Headless Chrome')); return r ? r.textContent : '';",
        "the preview's fetch in the trace",
    )
    .await;
    assert!(row.as_str().unwrap().contains("GET /m/"), "{row}");
    let recent = wait_js(
        &c,
        "return document.querySelectorAll('#recent tbody tr').length;",
        "the recent links",
    )
    .await;
    assert_eq!(recent, 1);
    let short = c
        .find(Locator::Css("#short"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let _ = c.close().await;

    // The same fetch, seen through the API.
    let id = short.rsplit('/').next().unwrap().split('.').next().unwrap();
    let (_, v) = get_json(&s, &format!("/api/v1/links/{id}/events")).await;
    let events = v["trace"]["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["client"] == "browser"
            && e["status"] == 200
            && e["bytes"].as_u64() > Some(0)),
        "{v}"
    );
    drop(driver);
}
