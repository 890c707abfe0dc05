//! Whether the target accepts a sniffed body, and what must happen to it first.
//!
//! This module owns the media policy of DESIGN §4: which media types a link of
//! each kind serves under each profile, the size limits, and when a body is
//! converted (to JPEG or to Ogg Opus) instead of refused. It works on a
//! [`MediaType`] and a length only: it never looks at bytes (`crate::sniff`
//! names them) and never converts anything (the converter does, when told).
//!
//! Every answer comes from one rule, [`Policy::rule`], so the decision, the
//! fetch limit and the "accepts ..." list in error details cannot disagree.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::sniff::MediaType;

const MIB: u64 = 1024 * 1024;
/// WhatsApp's limit for images it sends as photos.
pub const WHATSAPP_IMAGE_MAX: u64 = 5 * MIB;
/// WhatsApp's limit for audio and voice notes.
pub const WHATSAPP_AUDIO_MAX: u64 = 16 * MIB;
/// The largest input the converters take, under every profile: it bounds the
/// CPU and memory one link can cost (16 MiB of MP3 is about 17 minutes of
/// audio; 16 MiB of PNG decodes to a few hundred MiB of pixels at most).
pub const CONVERT_INPUT_MAX: u64 = 16 * MIB;

/// What a link is for.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Image,
    Audio,
    Voice,
    #[default]
    Any,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Audio => "audio",
            Kind::Voice => "voice",
            Kind::Any => "any",
        }
    }
}

/// Which target the served media must suit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    #[default]
    Whatsapp,
    Any,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Whatsapp => "whatsapp",
            Profile::Any => "any",
        }
    }
}

/// A word that names no kind or profile.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("unknown {what} {got:?} (expected one of: {expected})")]
pub struct ParseError {
    pub what: &'static str,
    pub got: String,
    pub expected: &'static str,
}

impl FromStr for Kind {
    type Err = ParseError;

    /// Case-insensitive, since it also parses flags and environment values.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        [Kind::Image, Kind::Audio, Kind::Voice, Kind::Any]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ParseError {
                what: "kind",
                got: s.to_string(),
                expected: "image, audio, voice, any",
            })
    }
}

impl FromStr for Profile {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        [Profile::Whatsapp, Profile::Any]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ParseError {
                what: "profile",
                got: s.to_string(),
                expected: "whatsapp, any",
            })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub profile: Profile,
    /// The size limit of every type under the `any` profile.
    pub any_max_bytes: u64,
}

/// What to do with a body the policy accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve the bytes as they are.
    Serve,
    /// Convert the image to JPEG and serve that.
    ConvertToJpeg,
    /// Convert the audio to Ogg Opus (mono, 48 kHz) and serve that.
    ConvertToOpus,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    #[error("{detail}")]
    NotAccepted { detail: String },
    #[error("{media} of {got} bytes is over the {limit}-byte limit")]
    TooLarge {
        limit: u64,
        got: u64,
        media: &'static str,
    },
}

/// How one media type fares on one link, whatever its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rule {
    /// Served as it is up to this size.
    serve: Option<u64>,
    /// Otherwise converted, up to this input size.
    convert: Option<(Decision, u64)>,
}

impl Policy {
    /// The most bytes worth downloading for a link of this kind (the largest
    /// limit among the types the link could accept, conversion included), so
    /// the fetcher can stop early.
    pub fn fetch_limit(&self, kind: Kind, convert: bool) -> u64 {
        MediaType::ALL
            .into_iter()
            .map(|m| self.rule(kind, convert, m))
            .flat_map(|r| [r.serve, r.convert.map(|(_, limit)| limit)])
            .flatten()
            .max()
            .unwrap_or(0)
    }

    /// What to do with these sniffed bytes for a link of `kind` (with
    /// conversion on or off). Serving as is wins over converting; a type the
    /// link accepts but at a smaller size is `TooLarge`, with the largest
    /// limit that would have applied.
    pub fn decide(
        &self,
        kind: Kind,
        convert: bool,
        media: MediaType,
        len: u64,
    ) -> Result<Decision, PolicyError> {
        let rule = self.rule(kind, convert, media);
        if rule.serve.is_some_and(|limit| len <= limit) {
            return Ok(Decision::Serve);
        }
        if let Some((decision, _)) = rule.convert.filter(|&(_, limit)| len <= limit) {
            return Ok(decision);
        }
        let limits = [rule.serve, rule.convert.map(|(_, limit)| limit)];
        match limits.into_iter().flatten().max() {
            Some(limit) => Err(PolicyError::TooLarge {
                limit,
                got: len,
                media: media.mime(),
            }),
            None => Err(PolicyError::NotAccepted {
                detail: self.refusal(kind, convert, media),
            }),
        }
    }

    /// Whether `convert` defaults on for this kind under this profile: on for
    /// image and voice under whatsapp, whose phones show only JPEG/PNG photos
    /// and play only Ogg Opus voice notes.
    pub fn convert_default(&self, kind: Kind) -> bool {
        self.profile == Profile::Whatsapp && matches!(kind, Kind::Image | Kind::Voice)
    }

    /// The size up to which the profile serves `media` unchanged, if at all.
    fn profile_limit(&self, media: MediaType) -> Option<u64> {
        use MediaType::*;
        match (self.profile, media) {
            (_, Mp4Video) => None,
            (Profile::Any, _) => Some(self.any_max_bytes),
            (Profile::Whatsapp, Jpeg | Png) => Some(WHATSAPP_IMAGE_MAX),
            (Profile::Whatsapp, Aac | M4a | Mp3 | AmrNb | OggOpus) => Some(WHATSAPP_AUDIO_MAX),
            (Profile::Whatsapp, Gif | Webp | OggVorbis | AmrWb | Wav) => None,
        }
    }

    /// The one place the policy is written down.
    fn rule(&self, kind: Kind, convert: bool, media: MediaType) -> Rule {
        let kind_takes = match kind {
            Kind::Image => media.is_image(),
            Kind::Audio => media.is_audio(),
            Kind::Voice => media == MediaType::OggOpus,
            Kind::Any => true,
        };
        let serve = self.profile_limit(media).filter(|_| kind_takes);
        let whatsapp = self.profile == Profile::Whatsapp;
        // Images become JPEG only where the target insists on it; any image
        // the decoder reads qualifies, so an oversized JPEG or PNG is shrunk
        // rather than refused.
        let to_jpeg = whatsapp && media.is_image() && matches!(kind, Kind::Image | Kind::Any);
        // Audio becomes Opus for voice links, and under whatsapp for audio
        // the target cannot play at all. There is no AMR-WB decoder.
        let to_opus = media.is_audio()
            && !matches!(media, MediaType::OggOpus | MediaType::AmrWb)
            && (kind == Kind::Voice
                || (whatsapp
                    && matches!(kind, Kind::Audio | Kind::Any)
                    && self.profile_limit(media).is_none()));
        let conversion = match (to_jpeg, to_opus) {
            (true, _) => Some((Decision::ConvertToJpeg, CONVERT_INPUT_MAX)),
            (_, true) => Some((Decision::ConvertToOpus, CONVERT_INPUT_MAX)),
            _ => None,
        };
        Rule {
            serve,
            convert: conversion.filter(|_| convert),
        }
    }

    /// Why `media` is refused, naming what the link accepts instead.
    fn refusal(&self, kind: Kind, convert: bool, media: MediaType) -> String {
        let mut served = Vec::new();
        let (mut to_jpeg, mut to_opus) = (Vec::new(), Vec::new());
        for m in MediaType::ALL {
            let rule = self.rule(kind, true, m);
            if rule.serve.is_some() {
                served.push(label(m));
            } else if let Some((decision, _)) = rule.convert {
                match decision {
                    Decision::ConvertToJpeg => to_jpeg.push(label(m)),
                    _ => to_opus.push(label(m)),
                }
            }
        }
        let mut detail = format!(
            "{} is not accepted by a link of kind {kind} under the {} profile",
            label(media),
            self.profile
        );
        let voice_link =
            kind == Kind::Voice || (kind != Kind::Image && self.profile == Profile::Whatsapp);
        if media == MediaType::AmrWb && convert && voice_link {
            detail.push_str(", and AMR-WB cannot be converted to Ogg Opus");
        }
        if media == MediaType::Mp4Video {
            detail.push_str(": medialink serves images and audio, never video");
        }
        // Writing to a String cannot fail, so the fmt::Results are dropped.
        let _ = write!(detail, " (accepts {}", served.join(", "));
        let would = if convert {
            "converts"
        } else {
            "with convert on, would convert"
        };
        if !to_jpeg.is_empty() {
            let _ = write!(detail, "; {would} {} to JPEG", to_jpeg.join(", "));
        }
        if !to_opus.is_empty() {
            let _ = write!(detail, "; {would} {} to Ogg Opus", to_opus.join(", "));
        }
        detail.push(')');
        detail
    }
}

/// A MIME type that also tells the two Ogg codecs apart in prose, where
/// "audio/ogg; codecs=opus" would read as a list separator.
fn label(media: MediaType) -> &'static str {
    match media {
        MediaType::OggOpus => "audio/ogg (Opus)",
        MediaType::OggVorbis => "audio/ogg (Vorbis)",
        other => other.mime(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MediaType::*;

    const WA: Policy = Policy {
        profile: Profile::Whatsapp,
        any_max_bytes: 0, // unused under whatsapp
    };
    const ANY: Policy = Policy {
        profile: Profile::Any,
        any_max_bytes: 50 * MIB,
    };
    const ANY_SMALL: Policy = Policy {
        profile: Profile::Any,
        any_max_bytes: MIB,
    };
    const KINDS: [Kind; 4] = [Kind::Image, Kind::Audio, Kind::Voice, Kind::Any];

    #[derive(Debug)]
    enum Want {
        Serve,
        ToJpeg,
        ToOpus,
        /// Refused, with this text in the detail.
        No(&'static str),
        /// Too large, with this limit.
        Big(u64),
    }
    use Want::*;

    const KB: u64 = 1024;
    const M5: u64 = 5 * MIB;
    const M16: u64 = 16 * MIB;
    const M50: u64 = 50 * MIB;

    #[rustfmt::skip]
    const TABLE: &[(&Policy, Kind, bool, MediaType, u64, Want)] = &[
        // whatsapp, image
        (&WA, Kind::Image, false, Jpeg, KB, Serve),
        (&WA, Kind::Image, false, Png, M5, Serve),
        (&WA, Kind::Image, false, Jpeg, M5 + 1, Big(M5)),
        (&WA, Kind::Image, false, Png, M5 + 1, Big(M5)),
        (&WA, Kind::Image, false, Gif, KB, No("image/gif is not accepted by a link of kind image")),
        (&WA, Kind::Image, false, Webp, KB, No("with convert on, would convert image/gif, image/webp to JPEG")),
        (&WA, Kind::Image, false, Mp3, KB, No("audio/mpeg is not accepted by a link of kind image")),
        (&WA, Kind::Image, false, Mp4Video, KB, No("never video")),
        (&WA, Kind::Image, true, Jpeg, M5, Serve),
        (&WA, Kind::Image, true, Gif, KB, ToJpeg),
        (&WA, Kind::Image, true, Webp, M16, ToJpeg),
        (&WA, Kind::Image, true, Webp, M16 + 1, Big(M16)),
        (&WA, Kind::Image, true, Png, M5 + 1, ToJpeg),
        (&WA, Kind::Image, true, Png, M16, ToJpeg),
        (&WA, Kind::Image, true, Png, M16 + 1, Big(M16)),
        (&WA, Kind::Image, true, Jpeg, M5 + 1, ToJpeg),
        (&WA, Kind::Image, true, Mp3, KB, No("(accepts image/jpeg, image/png; converts image/gif, image/webp to JPEG)")),
        (&WA, Kind::Image, true, OggOpus, KB, No("audio/ogg (Opus) is not accepted")),
        (&WA, Kind::Image, true, Mp4Video, KB, No("video/mp4")),
        // whatsapp, audio
        (&WA, Kind::Audio, false, Mp3, M16, Serve),
        (&WA, Kind::Audio, false, M4a, KB, Serve),
        (&WA, Kind::Audio, false, Aac, KB, Serve),
        (&WA, Kind::Audio, false, AmrNb, KB, Serve),
        (&WA, Kind::Audio, false, OggOpus, KB, Serve),
        (&WA, Kind::Audio, false, Mp3, M16 + 1, Big(M16)),
        (&WA, Kind::Audio, false, Wav, KB, No("audio/wav is not accepted by a link of kind audio")),
        (&WA, Kind::Audio, false, OggVorbis, KB, No("audio/ogg (Vorbis)")),
        (&WA, Kind::Audio, false, AmrWb, KB, No("audio/amr-wb")),
        (&WA, Kind::Audio, false, Jpeg, KB, No("image/jpeg is not accepted by a link of kind audio")),
        (&WA, Kind::Audio, true, Wav, M16, ToOpus),
        (&WA, Kind::Audio, true, Wav, M16 + 1, Big(M16)),
        (&WA, Kind::Audio, true, OggVorbis, KB, ToOpus),
        (&WA, Kind::Audio, true, Mp3, KB, Serve),
        (&WA, Kind::Audio, true, M4a, M16 + 1, Big(M16)),
        (&WA, Kind::Audio, true, AmrWb, KB, No("AMR-WB cannot be converted to Ogg Opus")),
        (&WA, Kind::Audio, true, Gif, KB, No("image/gif is not accepted by a link of kind audio")),
        (&WA, Kind::Audio, true, Mp4Video, KB, No("never video")),
        // whatsapp, voice
        (&WA, Kind::Voice, false, OggOpus, M16, Serve),
        (&WA, Kind::Voice, false, OggOpus, M16 + 1, Big(M16)),
        (&WA, Kind::Voice, false, Mp3, KB, No("audio/mpeg is not accepted by a link of kind voice under the whatsapp profile (accepts audio/ogg (Opus); with convert on, would convert")),
        (&WA, Kind::Voice, false, OggVorbis, KB, No("audio/ogg (Vorbis) is not accepted")),
        (&WA, Kind::Voice, true, OggOpus, KB, Serve),
        (&WA, Kind::Voice, true, Mp3, KB, ToOpus),
        (&WA, Kind::Voice, true, M4a, KB, ToOpus),
        (&WA, Kind::Voice, true, Aac, KB, ToOpus),
        (&WA, Kind::Voice, true, Wav, M16, ToOpus),
        (&WA, Kind::Voice, true, OggVorbis, KB, ToOpus),
        (&WA, Kind::Voice, true, AmrNb, KB, ToOpus),
        (&WA, Kind::Voice, true, Mp3, M16 + 1, Big(M16)),
        (&WA, Kind::Voice, true, AmrWb, KB, No("audio/amr-wb is not accepted by a link of kind voice under the whatsapp profile, and AMR-WB cannot be converted to Ogg Opus")),
        (&WA, Kind::Voice, true, Jpeg, KB, No("image/jpeg is not accepted by a link of kind voice")),
        (&WA, Kind::Voice, true, Mp4Video, KB, No("never video")),
        // whatsapp, any
        (&WA, Kind::Any, false, Jpeg, KB, Serve),
        (&WA, Kind::Any, false, Png, M5 + 1, Big(M5)),
        (&WA, Kind::Any, false, Mp3, M16, Serve),
        (&WA, Kind::Any, false, OggOpus, KB, Serve),
        (&WA, Kind::Any, false, Gif, KB, No("image/gif is not accepted by a link of kind any")),
        (&WA, Kind::Any, false, Wav, KB, No("audio/wav")),
        (&WA, Kind::Any, false, Mp4Video, KB, No("video/mp4")),
        (&WA, Kind::Any, true, Gif, KB, ToJpeg),
        (&WA, Kind::Any, true, Webp, KB, ToJpeg),
        (&WA, Kind::Any, true, Png, M5 + 1, ToJpeg),
        (&WA, Kind::Any, true, Wav, KB, ToOpus),
        (&WA, Kind::Any, true, OggVorbis, KB, ToOpus),
        (&WA, Kind::Any, true, Mp3, KB, Serve),
        (&WA, Kind::Any, true, AmrWb, KB, No("AMR-WB cannot be converted")),
        (&WA, Kind::Any, true, Mp4Video, KB, No("never video")),
        // any profile: every type but video, one configurable limit, no image conversion
        (&ANY, Kind::Image, false, Gif, M50, Serve),
        (&ANY, Kind::Image, false, Webp, KB, Serve),
        (&ANY, Kind::Image, false, Jpeg, M50 + 1, Big(M50)),
        (&ANY, Kind::Image, true, Gif, M50 + 1, Big(M50)),
        (&ANY, Kind::Image, true, Mp3, KB, No("audio/mpeg is not accepted by a link of kind image under the any profile (accepts image/jpeg, image/png, image/gif, image/webp)")),
        (&ANY, Kind::Audio, false, Wav, M50, Serve),
        (&ANY, Kind::Audio, false, OggVorbis, KB, Serve),
        (&ANY, Kind::Audio, false, AmrWb, KB, Serve),
        (&ANY, Kind::Audio, true, Wav, KB, Serve),
        (&ANY, Kind::Audio, false, Mp4Video, KB, No("never video")),
        (&ANY, Kind::Voice, false, OggOpus, M50, Serve),
        (&ANY, Kind::Voice, false, Mp3, KB, No("with convert on, would convert")),
        (&ANY, Kind::Voice, true, Mp3, KB, ToOpus),
        (&ANY, Kind::Voice, true, Wav, M16, ToOpus),
        (&ANY, Kind::Voice, true, Wav, M16 + 1, Big(M16)),
        (&ANY, Kind::Voice, true, OggOpus, M50 + 1, Big(M50)),
        (&ANY, Kind::Voice, true, AmrWb, KB, No("AMR-WB cannot be converted")),
        (&ANY, Kind::Any, false, AmrWb, KB, Serve),
        (&ANY, Kind::Any, true, Webp, KB, Serve),
        (&ANY, Kind::Any, true, Mp4Video, KB, No("never video")),
        // a small any_max_bytes bounds what is served, not what is converted
        (&ANY_SMALL, Kind::Voice, true, Mp3, 2 * MIB, ToOpus),
        (&ANY_SMALL, Kind::Voice, true, OggOpus, 2 * MIB, Big(MIB)),
        (&ANY_SMALL, Kind::Image, true, Png, 2 * MIB, Big(MIB)),
        (&ANY_SMALL, Kind::Audio, false, Mp3, MIB, Serve),
    ];

    #[test]
    fn decisions_follow_the_table() {
        for (i, (policy, kind, convert, media, len, want)) in TABLE.iter().enumerate() {
            let got = policy.decide(*kind, *convert, *media, *len);
            let ok = match (want, &got) {
                (Serve, Ok(Decision::Serve)) => true,
                (ToJpeg, Ok(Decision::ConvertToJpeg)) => true,
                (ToOpus, Ok(Decision::ConvertToOpus)) => true,
                (No(text), Err(PolicyError::NotAccepted { detail })) => detail.contains(text),
                (
                    Big(want),
                    Err(PolicyError::TooLarge {
                        limit,
                        got: n,
                        media: m,
                    }),
                ) => limit == want && n == len && *m == media.mime(),
                _ => false,
            };
            assert!(
                ok,
                "row {i}: {:?} {kind:?} convert={convert} {media:?} {len}: want {want:?}, got {got:?}",
                policy.profile
            );
        }
    }

    #[test]
    fn the_briefs_example_detail() {
        let Err(PolicyError::NotAccepted { detail }) = WA.decide(Kind::Image, false, Mp3, KB)
        else {
            panic!("mp3 on an image link must be refused");
        };
        assert_eq!(
            detail,
            "audio/mpeg is not accepted by a link of kind image under the whatsapp profile \
             (accepts image/jpeg, image/png; with convert on, would convert image/gif, \
             image/webp to JPEG)"
        );
    }

    #[test]
    fn invariants_hold_for_every_combination() {
        for policy in [&WA, &ANY, &ANY_SMALL] {
            for kind in KINDS {
                for convert in [false, true] {
                    let limit = policy.fetch_limit(kind, convert);
                    let mut any_fits = false;
                    for media in MediaType::ALL {
                        let small = policy.decide(kind, convert, media, 0);
                        let at_limit = policy.decide(kind, convert, media, limit);
                        any_fits |= at_limit.is_ok();
                        let ctx = format!("{:?} {kind:?} {convert} {media:?}", policy.profile);
                        // Nothing past the fetch limit is ever accepted.
                        assert!(
                            policy.decide(kind, convert, media, limit + 1).is_err(),
                            "{ctx}"
                        );
                        // Size never changes *whether* a type is accepted, only how.
                        assert_eq!(
                            matches!(small, Err(PolicyError::NotAccepted { .. })),
                            matches!(at_limit, Err(PolicyError::NotAccepted { .. })),
                            "{ctx}"
                        );
                        match small {
                            Ok(Decision::ConvertToJpeg) => {
                                assert!(convert && media.is_image(), "{ctx}")
                            }
                            Ok(Decision::ConvertToOpus) => {
                                assert!(convert && media.is_audio(), "{ctx}")
                            }
                            Ok(Decision::Serve) => {
                                assert_ne!(media, Mp4Video, "{ctx}");
                                assert!(kind != Kind::Image || media.is_image(), "{ctx}");
                                assert!(kind != Kind::Audio || media.is_audio(), "{ctx}");
                                assert!(kind != Kind::Voice || media == OggOpus, "{ctx}");
                            }
                            Err(PolicyError::TooLarge { .. }) => panic!("0 bytes too large: {ctx}"),
                            Err(PolicyError::NotAccepted { detail }) => {
                                assert!(detail.starts_with(label(media)), "{ctx}: {detail}");
                                assert!(detail.contains("(accepts "), "{ctx}: {detail}");
                            }
                        }
                    }
                    assert!(any_fits, "fetch limit {limit} fits nothing for {kind:?}");
                }
            }
        }
    }

    #[test]
    fn fetch_limits() {
        assert_eq!(WA.fetch_limit(Kind::Image, false), M5);
        assert_eq!(WA.fetch_limit(Kind::Image, true), M16);
        assert_eq!(WA.fetch_limit(Kind::Audio, false), M16);
        assert_eq!(WA.fetch_limit(Kind::Voice, false), M16);
        assert_eq!(WA.fetch_limit(Kind::Voice, true), M16);
        assert_eq!(WA.fetch_limit(Kind::Any, false), M16);
        for kind in KINDS {
            assert_eq!(ANY.fetch_limit(kind, false), M50);
            assert_eq!(ANY.fetch_limit(kind, true), M50);
        }
        assert_eq!(ANY_SMALL.fetch_limit(Kind::Voice, false), MIB);
        assert_eq!(ANY_SMALL.fetch_limit(Kind::Voice, true), M16);
        assert_eq!(ANY_SMALL.fetch_limit(Kind::Image, true), MIB);
    }

    #[test]
    fn convert_defaults() {
        assert!(WA.convert_default(Kind::Image));
        assert!(WA.convert_default(Kind::Voice));
        assert!(!WA.convert_default(Kind::Audio));
        assert!(!WA.convert_default(Kind::Any));
        for kind in KINDS {
            assert!(!ANY.convert_default(kind));
        }
    }

    #[test]
    fn names_parse_and_print() {
        for kind in KINDS {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        for profile in [Profile::Whatsapp, Profile::Any] {
            assert_eq!(profile.as_str().parse::<Profile>(), Ok(profile));
        }
        assert_eq!(" WhatsApp".parse::<Profile>(), Ok(Profile::Whatsapp));
        let err = "video".parse::<Kind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown kind \"video\" (expected one of: image, audio, voice, any)"
        );
        assert!("telegram".parse::<Profile>().is_err());
        assert_eq!(Kind::default(), Kind::Any);
        assert_eq!(Profile::default(), Profile::Whatsapp);
    }

    #[test]
    fn kind_serde_is_lowercase() {
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        use serde::de::value::Error;
        let voice: Result<Kind, Error> = Kind::deserialize("voice".into_deserializer());
        assert_eq!(voice, Ok(Kind::Voice));
        let upper: Result<Kind, Error> = Kind::deserialize("Voice".into_deserializer());
        assert!(upper.is_err());
    }
}
