//! convert turns bytes into what a phone plays: still images become JPEG, audio becomes
//! Ogg/Opus voice notes. It never fetches, sniffs or decides policy: the caller has already
//! chosen the target and says what the source is. Every function here is CPU-bound and
//! blocking (the caller runs it in `spawn_blocking`), never panics on hostile input, and
//! refuses work whose size it cannot bound before spending memory on it.

mod image;
mod ogg_opus;
mod voice;

pub use self::image::to_jpeg;
pub use self::ogg_opus::ogg_opus_duration_ms;
pub use self::voice::{AudioSource, to_ogg_opus};

/// The largest image we agree to decode, in pixels (width x height), checked against the
/// header before any pixel buffer is allocated. 40 MP is above every phone camera we expect
/// and keeps one decode under ~160 MB of RGBA8.
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// The longest side of a converted JPEG. WhatsApp shows images at phone resolution and
/// recompresses anything larger, so bigger only costs upload time.
pub const MAX_JPEG_SIDE: u32 = 1600;

/// A converted JPEG must be under this size (the `whatsapp` profile's image limit).
pub const MAX_JPEG_BYTES: usize = 5 * 1024 * 1024;

/// The longest audio we agree to convert. A voice note of 15 minutes is already unusual, and
/// the bound keeps decode time and the output size predictable.
pub const MAX_AUDIO_MS: u64 = 15 * 60 * 1000;

/// Why a conversion failed. Each variant maps to one problem type in the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The input claims to be `format` but could not be read (corrupt, truncated, garbage).
    #[error("could not decode {format}: {detail}")]
    Decode {
        format: &'static str,
        detail: String,
    },
    /// The input is well-formed but uses something we do not convert.
    #[error("cannot convert {format}: {why}")]
    Unsupported {
        format: &'static str,
        why: &'static str,
    },
    /// The encoder or muxer failed; this is our bug or a resource problem, not the input's.
    #[error("could not encode: {0}")]
    Encode(String),
    /// The input is larger than the bound we accept (`what` names the measure and its unit).
    #[error("{what} is {actual}, over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        actual: u64,
        limit: u64,
    },
}

/// The result of a conversion: the new bytes and what we learned about them on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub bytes: Vec<u8>,
    /// Pixel width of an image result; `None` for audio.
    pub width: Option<u32>,
    /// Pixel height of an image result; `None` for audio.
    pub height: Option<u32>,
    /// Exact playing time of an audio result; `None` for images.
    pub duration_ms: Option<u64>,
}

/// Run a conversion so that a panic inside a decoder (third-party code reading hostile
/// bytes) becomes a `Decode` error instead of unwinding into the caller's blocking task.
/// Our own code does not panic by design; this is the second line of defence.
fn guarded<T>(
    format: &'static str,
    f: impl FnOnce() -> Result<T, ConvertError>,
) -> Result<T, ConvertError> {
    // AssertUnwindSafe: `f` only reads the input and builds fresh values; nothing it
    // touches is observed again after a panic.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "decoder panicked".to_owned());
        tracing::warn!(format, %detail, "decoder panicked on input");
        Err(ConvertError::Decode {
            format,
            detail: format!("decoder panicked: {detail}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_decoder_becomes_a_decode_error() {
        let r: Result<(), _> = guarded("test", || panic!("boom"));
        assert!(
            matches!(&r, Err(ConvertError::Decode { format: "test", detail }) if detail.contains("boom")),
            "{r:?}"
        );
    }
}
