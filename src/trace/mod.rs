//! The per-link delivery trace (DESIGN §6): what happened to a short link, so the
//! person on call sees in a minute whether the gateway fetched it, what it got, and
//! what the gateway answered.
//!
//! - [`Event`]: one `/m/` fetch or one gateway send, as shown by the API and the CLI.
//! - [`Trace`]: the bounded ring of a link's last [`RING`] events plus counters that
//!   count everything ever recorded (the ring forgets, the counters do not).
//! - [`agent`]: who fetched, from the user agent (the gateway, a preview bot, ...).
//! - [`recorder`]: the in-memory side. `/m/` records into memory only; a background
//!   task folds what changed into the store about once a second, so the hot path
//!   never waits for a write.
//!
//! It does not decide anything about media or delivery; it only writes down.

pub mod agent;
pub mod recorder;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use agent::ClientClass;
pub use recorder::Recorder;

/// Events kept per link; older ones drop off (the counters still count them).
pub const RING: usize = 50;
/// Longest user agent kept; the rest is cut (user agents are client-controlled).
pub const MAX_AGENT: usize = 256;
/// Longest gateway message kept.
pub const MAX_MESSAGE: usize = 512;

/// Where the bytes of a `/m/` answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The media cache: no upstream or store call.
    Cache,
    /// A fresh upstream fetch made for this request.
    Upstream,
    /// Another request's upstream fetch, which this one waited for (single flight).
    Shared,
    /// The link's pinned bytes.
    Pinned,
    /// Nothing was served (an error before any bytes).
    None,
}

/// One `GET`/`HEAD /m/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FetchEvent {
    /// RFC 3339, milliseconds.
    #[schema(value_type = String)]
    pub at: Stamp,
    pub method: Cow<'static, str>,
    pub status: u16,
    /// Body bytes sent (0 for HEAD, 304 and errors).
    pub bytes: u64,
    pub source: Source,
    pub client: ClientClass,
    /// The fetcher's own name when the user agent says it (e.g. "Baileys (axios)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The problem code when the answer was an error (DESIGN §3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Time to answer, in milliseconds.
    pub ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One delivery through the gateway that sent this link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SendEvent {
    #[schema(value_type = String)]
    pub at: Stamp,
    /// `api` (`POST /api/v1/send`) or `cli` (`medialink send`, reported by it).
    pub via: String,
    /// The gateway endpoint of the main send: `send-image` or `send-audio`.
    pub endpoint: String,
    /// How the message went out: image, audio, text_fallback or none.
    pub delivered_as: String,
    /// The recipient, middle digits hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The gateway's HTTP status (absent when it never answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub success: bool,
    /// The gateway's `message` (or `msg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub attempts: u32,
    /// Why it was not delivered as asked (the outcome's `error.code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Fetch(FetchEvent),
    Send(SendEvent),
}

/// Everything ever recorded for a link, by count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counters {
    pub fetches: u64,
    pub cache_hits: u64,
    pub upstream_fetches: u64,
    /// Fetches answered with an error status (4xx/5xx).
    pub fetch_errors: u64,
    pub bytes_served: u64,
    pub gateway_fetches: u64,
    pub preview_fetches: u64,
    pub sends: u64,
    pub sends_delivered: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.fetches += o.fetches;
        self.cache_hits += o.cache_hits;
        self.upstream_fetches += o.upstream_fetches;
        self.fetch_errors += o.fetch_errors;
        self.bytes_served += o.bytes_served;
        self.gateway_fetches += o.gateway_fetches;
        self.preview_fetches += o.preview_fetches;
        self.sends += o.sends;
        self.sends_delivered += o.sends_delivered;
    }

    fn count(&mut self, e: &Event) {
        match e {
            Event::Fetch(f) => {
                self.fetches += 1;
                self.cache_hits += u64::from(f.source == Source::Cache);
                self.upstream_fetches += u64::from(f.source == Source::Upstream);
                self.fetch_errors += u64::from(f.status >= 400);
                self.bytes_served += f.bytes;
                self.gateway_fetches += u64::from(f.client == ClientClass::Gateway);
                self.preview_fetches += u64::from(f.client == ClientClass::PreviewBot);
            }
            Event::Send(s) => {
                self.sends += 1;
                self.sends_delivered += u64::from(s.delivered_as != "none");
            }
        }
    }
}

/// A link's trace: the ring (oldest first), the counters, and the last fetch and
/// last send even when they fell out of the ring.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Trace {
    // A deque: a hot link's full ring drops its oldest event on every answer, which
    // a `Vec` paid for by moving the other 49 (0.5% of a warm hit's CPU). A plain
    // comment, not a doc comment: the OpenAPI document shows doc comments.
    #[schema(value_type = Vec<Event>)]
    pub events: VecDeque<Event>,
    pub counters: Counters,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch: Option<FetchEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_send: Option<SendEvent>,
}

impl Trace {
    pub fn push(&mut self, e: Event) {
        self.counters.count(&e);
        match &e {
            Event::Fetch(f) => self.last_fetch = Some(f.clone()),
            Event::Send(s) => self.last_send = Some(s.clone()),
        }
        self.events.push_back(e);
        self.trim();
    }

    /// Appends a later trace to this one (store + what memory has not flushed yet).
    pub fn merge(&mut self, newer: Trace) {
        self.counters.add(&newer.counters);
        self.events.extend(newer.events);
        if newer.last_fetch.is_some() {
            self.last_fetch = newer.last_fetch;
        }
        if newer.last_send.is_some() {
            self.last_send = newer.last_send;
        }
        self.trim();
    }

    fn trim(&mut self) {
        if self.events.len() > RING {
            let extra = self.events.len() - RING;
            self.events.drain(..extra);
        }
    }
}

/// Now, as the events show it (RFC 3339 with milliseconds, UTC).
pub fn now() -> Stamp {
    Stamp::now()
}

/// A moment, kept as milliseconds since the epoch and written as RFC 3339 with
/// milliseconds. Taking one is a clock read: every `/m/` answer takes one, and
/// formatting it there cost more than the rest of the trace record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(u64);

impl Stamp {
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Stamp(ms)
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_millis(self.0);
        fmt::Display::fmt(&humantime::format_rfc3339_millis(t), f)
    }
}

impl std::str::FromStr for Stamp {
    type Err = humantime::TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = humantime::parse_rfc3339_weak(s)?;
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Ok(Stamp(u64::try_from(ms).unwrap_or(u64::MAX)))
    }
}

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A jid or phone with its middle digits hidden: enough to tell two leads apart in
/// a trace, not enough to copy a number out of it.
pub fn mask_recipient(jid: &str) -> String {
    let (user, domain) = jid.split_once('@').unwrap_or((jid, ""));
    let n = user.chars().count();
    let masked: String = user
        .chars()
        .enumerate()
        .map(|(i, c)| if i >= 4 && i + 4 < n { '*' } else { c })
        .collect();
    if domain.is_empty() {
        masked
    } else {
        format!("{masked}@{domain}")
    }
}

impl SendEvent {
    /// The trace's record of a delivery outcome.
    pub fn from_outcome(
        outcome: &crate::sender::Outcome,
        kind: crate::sender::MediaKind,
        via: &str,
    ) -> Self {
        use crate::sender::{DeliveredAs, MediaKind};
        let gw = outcome.gateway.as_ref();
        SendEvent {
            at: now(),
            via: via.to_owned(),
            endpoint: match kind {
                MediaKind::Audio => "send-audio",
                MediaKind::Image => "send-image",
                MediaKind::Text => "send-text",
            }
            .to_owned(),
            delivered_as: match outcome.delivered_as {
                DeliveredAs::Image => "image",
                DeliveredAs::Audio => "audio",
                DeliveredAs::Text => "text",
                DeliveredAs::TextFallback => "text_fallback",
                DeliveredAs::None => "none",
            }
            .to_owned(),
            to: outcome.jid.as_deref().map(mask_recipient),
            status: gw.map(|g| g.status),
            success: gw.is_some_and(|g| g.success),
            message: gw
                .and_then(|g| g.message.as_deref())
                .map(|m| clip(m, MAX_MESSAGE)),
            attempts: outcome.attempts,
            error: outcome.error.as_ref().map(|e| clip(&e.code, 64)),
        }
    }
}

impl Trace {
    /// A trace from its stored columns, as both stores keep them: the ring and the last
    /// fetch and send as JSON text, the counters in `Counters` field order. A ring this
    /// build cannot read (written by a newer one) shows as empty rather than failing the
    /// whole trace; the counters still count.
    pub fn from_columns(
        ring: &str,
        counters: [u64; 9],
        last_fetch: Option<&str>,
        last_send: Option<&str>,
    ) -> Trace {
        let [
            fetches,
            cache_hits,
            upstream_fetches,
            fetch_errors,
            bytes_served,
            gateway_fetches,
            preview_fetches,
            sends,
            sends_delivered,
        ] = counters;
        Trace {
            events: serde_json::from_str(ring).unwrap_or_default(),
            counters: Counters {
                fetches,
                cache_hits,
                upstream_fetches,
                fetch_errors,
                bytes_served,
                gateway_fetches,
                preview_fetches,
                sends,
                sends_delivered,
            },
            last_fetch: last_fetch.and_then(|s| serde_json::from_str(s).ok()),
            last_send: last_send.and_then(|s| serde_json::from_str(s).ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(status: u16, source: Source) -> Event {
        Event::Fetch(FetchEvent {
            at: now(),
            method: "GET".into(),
            status,
            bytes: 10,
            source,
            client: ClientClass::Browser,
            agent: None,
            user_agent: None,
            code: None,
            ms: 1,
            request_id: None,
        })
    }

    #[test]
    fn the_ring_keeps_the_last_events_and_the_counters_keep_everything() {
        let mut t = Trace::default();
        for i in 0..(RING + 7) {
            t.push(fetch(200 + u16::from(i % 2 == 0), Source::Cache));
        }
        assert_eq!(t.events.len(), RING);
        assert_eq!(t.counters.fetches, (RING + 7) as u64);
        assert_eq!(t.counters.cache_hits, (RING + 7) as u64);
        assert_eq!(t.counters.bytes_served, 10 * (RING + 7) as u64);

        let mut newer = Trace::default();
        newer.push(fetch(502, Source::None));
        t.merge(newer);
        assert_eq!(t.events.len(), RING);
        assert_eq!(t.counters.fetch_errors, 1);
        assert!(matches!(t.events.back(), Some(Event::Fetch(f)) if f.status == 502));
        assert_eq!(t.last_fetch.as_ref().map(|f| f.status), Some(502));
    }

    #[test]
    fn recipients_are_masked_and_clipping_respects_characters() {
        assert_eq!(
            mask_recipient("77015705555@s.whatsapp.net"),
            "7701***5555@s.whatsapp.net"
        );
        assert_eq!(mask_recipient("123"), "123");
        assert_eq!(clip("привет", 3), "п");
        assert_eq!(clip("abc", 10), "abc");
    }
}
