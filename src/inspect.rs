//! `medialink inspect ID`: a link and its delivery trace, from a running server (which
//! also shows what it has not flushed yet) or straight from a store, as text for
//! people or as the events endpoint's JSON.

use std::fmt::Write as _;

use crate::api::events::LinkTrace;
use crate::ids::LinkId;
use crate::trace::Event;

/// Reads a trace from the store directly (events reach it within about a second).
pub async fn from_store(
    store: &dyn crate::store::Store,
    public_base: &str,
    id: &LinkId,
) -> Result<Option<LinkTrace>, crate::store::StoreError> {
    let Some(record) = store.get(id).await? else {
        return Ok(None);
    };
    let trace = store.events(id).await?.unwrap_or_default();
    Ok(Some(LinkTrace {
        link: crate::links::view(public_base, &record),
        trace,
    }))
}

/// The human form: the link, the counters, then each event, oldest first.
pub fn to_text(t: &LinkTrace) -> String {
    let mut out = String::new();
    let l = &t.link;
    let _ = writeln!(out, "link {}  {}  {}", l.id, l.kind, l.short_url);
    let _ = writeln!(out, "  url      {}", l.url);
    let _ = writeln!(out, "  created  {}", l.created_at);
    if let Some(e) = &l.expires_at {
        let _ = writeln!(out, "  expires  {e}");
    }
    if let Some(m) = &l.media {
        let from = m
            .converted_from
            .as_deref()
            .map(|f| format!(" (converted from {f})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  media    {}, {} bytes{from}",
            m.content_type, m.bytes
        );
    }
    let c = &t.trace.counters;
    let _ = writeln!(
        out,
        "counters: {} fetches ({} from cache, {} upstream, {} errors; {} by the gateway, {} by preview bots), {} bytes served; {} sends, {} delivered",
        c.fetches,
        c.cache_hits,
        c.upstream_fetches,
        c.fetch_errors,
        c.gateway_fetches,
        c.preview_fetches,
        c.bytes_served,
        c.sends,
        c.sends_delivered
    );
    if t.trace.events.is_empty() {
        out.push_str("no events yet: nobody fetched this link through this service\n");
        return out;
    }
    out.push_str("events, oldest first:\n");
    for e in &t.trace.events {
        match e {
            Event::Fetch(f) => {
                let who = match &f.agent {
                    Some(a) => format!("{} ({a})", enum_name(&f.client)),
                    None => enum_name(&f.client),
                };
                let code = f
                    .code
                    .as_deref()
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {}  fetch  {} {}{code}  {} bytes  {}  {}  {} ms  user-agent: {}",
                    f.at,
                    f.method,
                    f.status,
                    f.bytes,
                    enum_name(&f.source),
                    who,
                    f.ms,
                    f.user_agent.as_deref().unwrap_or("(none)")
                );
            }
            Event::Send(s) => {
                let status = s.status.map_or("no answer".into(), |st| st.to_string());
                let message = s.message.as_deref().unwrap_or("(no message)");
                let error = s
                    .error
                    .as_deref()
                    .map(|e| format!(" [{e}]"))
                    .unwrap_or_default();
                let to =
                    s.to.as_deref()
                        .map(|t| format!(" to {t}"))
                        .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {}  send   {} via {}{to}: gateway {status} success={} \"{message}\"  delivered as {}, {} attempt(s){error}",
                    s.at, s.endpoint, s.via, s.success, s.delivered_as, s.attempts
                );
            }
        }
    }
    out
}

/// The JSON name of a unit enum variant (e.g. `preview_bot`).
fn enum_name(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
