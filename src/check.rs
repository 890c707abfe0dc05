//! `medialink check URL` and `POST /api/v1/check`: fetch a URL the way the gateway
//! would (one plain GET, redirects followed, behind the SSRF guard), then run the very
//! pipeline `/m/` runs (sniff, policy, conversion) and say in one [`Verdict`] whether
//! the gateway would take it, as it is or after conversion, and if not, why.
//!
//! Conversion is really run, not predicted: an AMR-NB voice note passes the policy
//! (it would be converted) but no decoder is built in, and only trying says so.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::canon::{CanonError, CanonicalUrl};
use crate::fetch::Fetcher;
use crate::media::verify::{self, MediaError};
use crate::policy::{Kind, Policy, Profile};
use crate::sniff::{self, MediaType};

/// What would happen to the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Served as it is.
    AsIs,
    /// Converted first (to JPEG, or to Ogg Opus for a voice note).
    Convert,
    /// Not served at all.
    Refuse,
}

/// The one answer of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Verdict {
    pub url: String,
    pub profile: String,
    pub kind: Kind,
    /// True when the gateway would take it, as it is or after conversion.
    pub accepted: bool,
    pub action: Action,
    /// One line for people.
    pub summary: String,
    /// The type found in the bytes (never the upstream's header or the extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Its human name, e.g. "WebP".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_name: Option<String>,
    /// Bytes fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// What the upstream claimed, for comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_content_type: Option<String>,
    /// The type served after conversion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_bytes: Option<u64>,
    /// The problem code of a refusal (DESIGN §3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why not, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Something worth knowing even when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub fetch_ms: u64,
}

impl Verdict {
    /// The exit code of `medialink check`: 0 accepted, 1 not.
    pub fn exit_code(&self) -> u8 {
        if self.accepted { 0 } else { 1 }
    }

    /// The human form: the summary, then one fact a line.
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n", self.summary);
        let mut line = |k: &str, v: &str| out.push_str(&format!("  {k:<10} {v}\n"));
        line("url", &self.url);
        line("profile", &format!("{} (kind {})", self.profile, self.kind));
        if let (Some(t), Some(n)) = (&self.media_type, &self.media_name) {
            let claimed = self
                .upstream_content_type
                .as_deref()
                .map(|c| format!("; the upstream said {c}"))
                .unwrap_or_default();
            line("type", &format!("{n} ({t}), by its bytes{claimed}"));
        }
        if let Some(b) = self.bytes {
            line("size", &format!("{b} bytes"));
        }
        if let Some(to) = &self.converted_to {
            let size = self
                .converted_bytes
                .map(|b| format!(", {b} bytes"))
                .unwrap_or_default();
            line("converted", &format!("to {to}{size}"));
        }
        if let Some(r) = &self.reason {
            let code = self.code.as_deref().unwrap_or("refused");
            line("why not", &format!("{r} ({code})"));
        }
        if let Some(n) = &self.note {
            line("note", n);
        }
        out
    }
}

/// Checks `url` for a link of `kind` under `policy` (conversion as the profile's
/// default for the kind, as a new link would have it).
pub async fn check(
    fetcher: &Fetcher,
    policy: &Policy,
    url: &str,
    kind: Kind,
) -> Result<Verdict, CanonError> {
    let canonical = CanonicalUrl::parse(url)?;
    let convert = policy.convert_default(kind);
    let mut v = Verdict {
        url: canonical.as_str().to_owned(),
        profile: policy.profile.as_str().to_owned(),
        kind,
        accepted: false,
        action: Action::Refuse,
        summary: String::new(),
        media_type: None,
        media_name: None,
        bytes: None,
        upstream_content_type: None,
        converted_to: None,
        converted_bytes: None,
        code: None,
        reason: None,
        note: None,
        fetch_ms: 0,
    };
    let started = Instant::now();
    let fetched = fetcher
        .fetch(canonical.url(), policy.fetch_limit(kind, convert))
        .await;
    v.fetch_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let fetched = match fetched {
        Ok(f) => f,
        Err(e) => return Ok(refused(v, &MediaError::Fetch(e))),
    };
    v.bytes = Some(fetched.bytes.len() as u64);
    v.upstream_content_type = fetched.upstream_content_type.clone();
    if let Ok(t) = sniff::sniff(&fetched.bytes) {
        v.media_type = Some(t.mime().to_owned());
        v.media_name = Some(t.name().to_owned());
    }
    match verify::verify_with(policy, kind, convert, fetched.bytes, None).await {
        Ok(media) => {
            v.accepted = true;
            match media.converted_from {
                Some(from) => {
                    v.action = Action::Convert;
                    v.converted_to = Some(media.media_type.mime().to_owned());
                    v.converted_bytes = Some(media.bytes.len() as u64);
                    v.summary = format!(
                        "ACCEPTED after conversion: {} would be converted to {}",
                        from.name(),
                        media.media_type.name()
                    );
                }
                None => {
                    v.action = Action::AsIs;
                    v.summary = format!("ACCEPTED as is: {}", media.media_type.name());
                }
            }
            v.note = note(policy, kind, media.media_type);
            Ok(v)
        }
        Err(e) => Ok(refused(v, &e)),
    }
}

fn refused(mut v: Verdict, e: &MediaError) -> Verdict {
    v.code = Some(e.code().as_str().to_owned());
    v.reason = Some(e.to_string());
    v.summary = match &v.media_name {
        Some(n) => format!("REFUSED: {n} for kind {}: {e}", v.kind),
        None => format!("REFUSED: {e}"),
    };
    v
}

/// The gateway's `send-audio` always sends a voice note (DESIGN §8): audio that is not
/// Ogg Opus plays as "audio not available" there, whatever the profile allows.
fn note(policy: &Policy, kind: Kind, served: MediaType) -> Option<String> {
    (policy.profile == Profile::Whatsapp
        && served.is_audio()
        && served != MediaType::OggOpus
        && kind != Kind::Voice)
        .then(|| {
            "the gateway's send-audio sends voice notes, which must be Ogg Opus: check with --kind voice"
                .to_owned()
        })
}
