//! `GET /`: the operator's web page. One server-rendered document with a small inline
//! script and style (no CDN, no build step) that talks to the JSON API with the token
//! the operator pastes (kept in `sessionStorage`, so it dies with the tab).
//!
//! Paste a URL: the page creates the link, shows the short URL, the verdict of
//! `POST /api/v1/check` and a preview (the preview's own fetch then shows in the
//! trace); below, recent links with their last fetch and last send, and a link's
//! trace on click.
//!
//! Safety: the script builds every node with `textContent`, never `innerHTML`, so a
//! hostile URL or user agent in a trace is text; a CSP with a per-response nonce lets
//! only this script and style run, and images, media and API calls go to this origin
//! (and the public URL's, when short links use another host).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::SharedState;

pub async fn page(State(state): State<SharedState>) -> Response {
    let nonce = format!("{:032x}", rand::random::<u128>());
    let public = public_origin(&state.public_base);
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         img-src 'self' {public}; media-src 'self' {public}; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let html = PAGE.replace("{NONCE}", &nonce);
    let mut res = html.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Hex nonce and an origin from a parsed URL: always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

/// The origin short links point at (scheme, host, port), for the CSP.
fn public_origin(public_base: &str) -> String {
    url::Url::parse(public_base)
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
        .unwrap_or_default()
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>medialink</title>
<style nonce="{NONCE}">
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem; padding: 0 1rem; color: #1b1b1b; }
h1 { font-size: 1.4rem; margin: 0 0 1rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
form { display: grid; grid-template-columns: 7rem 1fr; gap: .4rem .8rem; align-items: center; }
input, select, button { font: inherit; padding: .3rem .5rem; }
button { grid-column: 2; justify-self: start; cursor: pointer; }
.box { border: 1px solid #ccc; border-radius: 6px; padding: .8rem; margin-top: 1rem; }
.ok { color: #126b12; } .bad { color: #a11; } .muted { color: #666; }
#preview img { max-width: 320px; max-height: 240px; border: 1px solid #ddd; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; border-bottom: 1px solid #eee; padding: .25rem .4rem; vertical-align: top; }
td.wrap { word-break: break-all; } a.link { cursor: pointer; color: #0645ad; text-decoration: underline; }
</style>
</head>
<body>
<h1>medialink</h1>
<form id="create-form" autocomplete="off">
  <label for="token">API token</label><input id="token" type="password" placeholder="Bearer token (kept in this tab only)">
  <label for="url">Media URL</label><input id="url" type="url" placeholder="https://cdn.example.com/photo.jpg?signature=...">
  <label for="kind">Kind</label>
  <select id="kind"><option value="image">image</option><option value="voice">voice (Ogg Opus voice note)</option><option value="audio">audio</option><option value="any">any</option></select>
  <button id="create" type="submit">Shorten and check</button>
</form>
<div id="status" class="muted" role="status"></div>
<div id="result" class="box" hidden>
  <div>Short link: <a id="short" target="_blank" rel="noopener"></a></div>
  <div id="verdict"></div>
  <div id="preview"></div>
</div>
<h2>Trace <span id="trace-id" class="muted"></span></h2>
<div id="counters" class="muted"></div>
<table id="trace"><thead><tr><th>time</th><th>event</th><th>status</th><th>bytes</th><th>source</th><th>who</th><th>detail</th></tr></thead><tbody></tbody></table>
<h2>Recent links <button id="refresh" type="button">refresh</button></h2>
<table id="recent"><thead><tr><th>link</th><th>kind</th><th>media</th><th>last fetch</th><th>last send</th><th>fetches</th></tr></thead><tbody></tbody></table>
<script nonce="{NONCE}">
"use strict";
const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("medialink-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("medialink-token", tokenInput.value.trim()));
let current = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function say(text, bad) { const s = $("status"); s.textContent = text; s.className = bad ? "bad" : "muted"; }

async function api(method, path, body) {
  const token = tokenInput.value.trim();
  sessionStorage.setItem("medialink-token", token);
  const init = { method, headers: { "Authorization": "Bearer " + token } };
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const why = data && data.detail ? data.detail + " (" + data.code + ")" : "HTTP " + res.status;
    throw new Error(why);
  }
  return data;
}

$("create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const url = $("url").value.trim(), kind = $("kind").value;
  if (!url) { say("Paste a media URL first.", true); return; }
  say("Creating the link...");
  try {
    const link = await api("POST", "/api/v1/links", { url, kind });
    current = link.id;
    $("result").hidden = false;
    const a = $("short"); a.textContent = link.short_url; a.href = link.short_url;
    $("verdict").textContent = "Checking what the gateway would get...";
    $("verdict").className = "muted";
    $("preview").replaceChildren();
    say("");
    const verdict = await api("POST", "/api/v1/check", { url, kind }).catch((e) => ({ summary: "check failed: " + e.message, accepted: false }));
    $("verdict").textContent = verdict.summary;
    $("verdict").className = verdict.accepted ? "ok" : "bad";
    showPreview(link, kind);
    await loadTrace(link.id);
    await loadRecent();
  } catch (e) { say(e.message, true); }
});

function showPreview(link, kind) {
  const box = $("preview");
  // A fresh query string: the preview must reach the server, so its fetch is traced.
  const src = link.short_url + (link.short_url.includes("?") ? "&" : "?") + "preview=" + Date.now();
  let media;
  if (kind === "image" || kind === "any") {
    media = el("img"); media.alt = "preview of " + link.id;
    media.addEventListener("load", () => loadTrace(link.id));
    media.addEventListener("error", () => { box.append(el("div", "The preview did not load: see the trace.", "bad")); loadTrace(link.id); });
  } else {
    media = el("audio"); media.controls = true; media.preload = "auto";
    media.addEventListener("loadeddata", () => loadTrace(link.id));
  }
  media.src = src;
  box.replaceChildren(media);
}

function who(f) { return (f.agent ? f.agent + " " : "") + "[" + f.client + "]"; }

async function loadTrace(id) {
  current = id;
  const data = await api("GET", "/api/v1/links/" + encodeURIComponent(id) + "/events");
  $("trace-id").textContent = id + " \u2192 " + data.link.url;
  const c = data.trace.counters;
  $("counters").textContent = c.fetches + " fetches (" + c.cache_hits + " from cache, " + c.upstream_fetches +
    " upstream, " + c.fetch_errors + " errors, " + c.gateway_fetches + " by the gateway, " + c.preview_fetches +
    " by preview bots), " + c.bytes_served + " bytes served; " + c.sends + " sends, " + c.sends_delivered + " delivered";
  const rows = data.trace.events.slice().reverse().map((e) => {
    const tr = el("tr"); tr.dataset.type = e.type;
    if (e.type === "fetch") {
      tr.append(el("td", e.at), el("td", e.method + " /m/"), el("td", e.status), el("td", e.bytes), el("td", e.source),
        el("td", who(e)), el("td", (e.code ? e.code + " " : "") + (e.user_agent || ""), "wrap"));
    } else {
      tr.append(el("td", e.at), el("td", e.endpoint + " (" + e.via + ")"), el("td", e.status === undefined ? "-" : e.status),
        el("td", ""), el("td", ""), el("td", e.to || ""),
        el("td", e.delivered_as + (e.message ? ": " + e.message : "") + (e.error ? " [" + e.error + "]" : ""), "wrap"));
    }
    return tr;
  });
  $("trace").tBodies[0].replaceChildren(...rows);
}

async function loadRecent() {
  const data = await api("GET", "/api/v1/links?limit=20");
  const rows = data.links.map((s) => {
    const tr = el("tr");
    const a = el("a", s.link.id, "link"); a.addEventListener("click", () => loadTrace(s.link.id).catch((e) => say(e.message, true)));
    const td = el("td"); td.append(a, el("div", s.link.url, "muted wrap"));
    const f = s.last_fetch, m = s.last_send;
    tr.append(td, el("td", s.link.kind), el("td", s.link.media ? s.link.media.content_type + ", " + s.link.media.bytes + " B" : "-"),
      el("td", f ? f.at + " " + f.status + " " + who(f) : "never"),
      el("td", m ? m.at + " " + m.delivered_as + (m.message ? ": " + m.message : "") : "never"),
      el("td", s.counters.fetches));
    return tr;
  });
  $("recent").tBodies[0].replaceChildren(...rows);
}

$("refresh").addEventListener("click", () => { loadRecent().catch((e) => say(e.message, true)); if (current) loadTrace(current).catch(() => {}); });
if (tokenInput.value) loadRecent().catch(() => {});
// While a link is shown, keep its trace fresh: the gateway fetches on its own time.
setInterval(() => { if (current && document.visibilityState === "visible") loadTrace(current).catch(() => {}); }, 3000);
</script>
</body>
</html>
"##;
