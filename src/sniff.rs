//! What a body of bytes is, judged from its magic bytes and its structure alone.
//!
//! This module owns format recognition: it names the media type of a whole,
//! size-limited upstream body and refuses bodies that arrived cut short (an
//! upstream may end a response early and still look successful, and a cut file
//! must never be cached or forwarded). It never trusts the upstream's
//! `Content-Type` or the URL's extension, and it never decides whether a type
//! is acceptable for a link: `crate::policy` does that.
//!
//! `file-format` does the first classification; the checks here add what it
//! does not do: completeness, AMR-WB, ADTS behind an ID3 tag, and telling
//! audio-only MP4 from video by the tracks actually present rather than by the
//! brand. Every function is total: the input is untrusted and fuzzed, so all
//! indexing goes through `get`.

use file_format::FileFormat;

/// A media type that medialink can recognize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaType {
    Jpeg,
    Png,
    Gif,
    Webp,
    OggOpus,
    OggVorbis,
    Mp3,
    M4a,
    Aac,
    AmrNb,
    AmrWb,
    Wav,
    Mp4Video,
}

impl MediaType {
    /// Every variant, for tables and exhaustive tests.
    pub const ALL: [MediaType; 13] = [
        MediaType::Jpeg,
        MediaType::Png,
        MediaType::Gif,
        MediaType::Webp,
        MediaType::OggOpus,
        MediaType::OggVorbis,
        MediaType::Mp3,
        MediaType::M4a,
        MediaType::Aac,
        MediaType::AmrNb,
        MediaType::AmrWb,
        MediaType::Wav,
        MediaType::Mp4Video,
    ];

    /// MIME type, file extension and human name, in one place so they cannot drift.
    fn info(self) -> (&'static str, &'static str, &'static str) {
        match self {
            MediaType::Jpeg => ("image/jpeg", "jpg", "JPEG"),
            MediaType::Png => ("image/png", "png", "PNG"),
            MediaType::Gif => ("image/gif", "gif", "GIF"),
            MediaType::Webp => ("image/webp", "webp", "WebP"),
            // The codec parameter is what makes WhatsApp treat it as a voice note.
            MediaType::OggOpus => ("audio/ogg; codecs=opus", "ogg", "Ogg Opus"),
            MediaType::OggVorbis => ("audio/ogg", "ogg", "Ogg Vorbis"),
            MediaType::Mp3 => ("audio/mpeg", "mp3", "MP3"),
            MediaType::M4a => ("audio/mp4", "m4a", "M4A (MP4 audio)"),
            MediaType::Aac => ("audio/aac", "aac", "AAC (ADTS)"),
            MediaType::AmrNb => ("audio/amr", "amr", "AMR-NB"),
            MediaType::AmrWb => ("audio/amr-wb", "amr", "AMR-WB"),
            MediaType::Wav => ("audio/wav", "wav", "WAV"),
            MediaType::Mp4Video => ("video/mp4", "mp4", "MP4 video"),
        }
    }

    pub fn mime(self) -> &'static str {
        self.info().0
    }

    pub fn ext(self) -> &'static str {
        self.info().1
    }

    pub fn is_image(self) -> bool {
        matches!(
            self,
            MediaType::Jpeg | MediaType::Png | MediaType::Gif | MediaType::Webp
        )
    }

    pub fn is_audio(self) -> bool {
        !self.is_image() && self != MediaType::Mp4Video
    }

    /// A human name for error details.
    pub fn name(self) -> &'static str {
        self.info().2
    }

    /// The inverse of [`MediaType::mime`], ignoring case and parameters except
    /// `codecs`, which is what separates Ogg Opus from Ogg Vorbis. A few common
    /// aliases are accepted too, since stored records may predate a rename.
    pub fn from_mime(s: &str) -> Option<Self> {
        let mut parts = s.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let opus_codec = parts.any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p.strip_prefix("codecs=")
                .is_some_and(|v| v.trim_matches('"').contains("opus"))
        });
        Some(match essence.as_str() {
            "image/jpeg" | "image/jpg" | "image/pjpeg" => MediaType::Jpeg,
            "image/png" => MediaType::Png,
            "image/gif" => MediaType::Gif,
            "image/webp" => MediaType::Webp,
            "audio/ogg" | "application/ogg" if opus_codec => MediaType::OggOpus,
            "audio/ogg" | "application/ogg" => MediaType::OggVorbis,
            "audio/opus" => MediaType::OggOpus,
            "audio/mpeg" | "audio/mp3" => MediaType::Mp3,
            "audio/mp4" | "audio/x-m4a" | "audio/m4a" => MediaType::M4a,
            "audio/aac" | "audio/aacp" | "audio/x-aac" => MediaType::Aac,
            "audio/amr" => MediaType::AmrNb,
            "audio/amr-wb" => MediaType::AmrWb,
            "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => MediaType::Wav,
            "video/mp4" => MediaType::Mp4Video,
            _ => return None,
        })
    }

    /// A guess from a file extension (with or without the dot, any case).
    /// Only for naming a short URL before the bytes are known: `.ogg` guesses
    /// Vorbis and `.amr` AMR-NB, which is harmless because both Ogg types and
    /// both AMR types share their [`MediaType::ext`].
    pub fn from_ext(ext: &str) -> Option<Self> {
        let ext = ext.strip_prefix('.').unwrap_or(ext).to_ascii_lowercase();
        Some(match ext.as_str() {
            "jpg" | "jpeg" | "jpe" | "jfif" => MediaType::Jpeg,
            "png" => MediaType::Png,
            "gif" => MediaType::Gif,
            "webp" => MediaType::Webp,
            "opus" => MediaType::OggOpus,
            "ogg" | "oga" => MediaType::OggVorbis,
            "mp3" => MediaType::Mp3,
            "m4a" | "m4b" => MediaType::M4a,
            "aac" | "adts" => MediaType::Aac,
            "amr" => MediaType::AmrNb,
            "awb" => MediaType::AmrWb,
            "wav" | "wave" => MediaType::Wav,
            "mp4" | "m4v" => MediaType::Mp4Video,
            _ => return None,
        })
    }
}

impl std::fmt::Display for MediaType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SniffError {
    #[error("the body is empty")]
    Empty,
    #[error("the body is not image or audio: {found}")]
    NotMedia { found: String },
    #[error("the {format} body is incomplete: {why}")]
    Truncated {
        format: &'static str,
        why: &'static str,
    },
}

/// Trailing bytes tolerated after a JPEG/PNG/GIF end marker when the
/// structure walk could not be used; some servers pad files with NULs or a newline.
const TAIL_PADDING: usize = 16;

/// Names the media type of a whole body, or says why it is not servable media.
///
/// `bytes` must be the entire body: MP4 keeps `moov` wherever it likes, and
/// the completeness checks need the end. Completeness means the structure
/// reaches its end marker (JPEG EOI, PNG IEND, GIF trailer), every Ogg page
/// and MP4 top-level box fits, and a RIFF size is not larger than the body.
/// Bytes after a complete structure are tolerated (phones append the video of
/// a "motion photo" after a JPEG's EOI); MP3, ADTS and AMR have no end marker
/// and are not checked for completeness.
pub fn sniff(bytes: &[u8]) -> Result<MediaType, SniffError> {
    if bytes.is_empty() {
        return Err(SniffError::Empty);
    }
    // file-format's ID3 reader only knows MP3 and FLAC behind a tag and gives
    // up on padding, so tagged bodies are always read here.
    if bytes.starts_with(b"ID3") {
        return after_id3(bytes);
    }
    let format = leading_format(bytes).unwrap_or_else(|| FileFormat::from_bytes(bytes));
    match format {
        FileFormat::JointPhotographicExpertsGroup => {
            whole(MediaType::Jpeg, bytes, walk_jpeg(bytes), &[0xFF, 0xD9])
        }
        FileFormat::PortableNetworkGraphics => {
            whole(MediaType::Png, bytes, walk_png(bytes), &PNG_IEND)
        }
        FileFormat::GraphicsInterchangeFormat => {
            whole(MediaType::Gif, bytes, walk_gif(bytes), &[0x3B])
        }
        FileFormat::Webp => check_riff(bytes, "WebP").map(|()| MediaType::Webp),
        FileFormat::WaveformAudio => check_riff(bytes, "WAV").map(|()| MediaType::Wav),
        FileFormat::OggOpus => check_ogg(bytes, "Ogg Opus").map(|()| MediaType::OggOpus),
        FileFormat::OggVorbis => check_ogg(bytes, "Ogg Vorbis").map(|()| MediaType::OggVorbis),
        FileFormat::AdaptiveMultiRate => amr(bytes),
        // Brands lie (an `M4A ` file can carry video, an `isom` file is often
        // audio only), so every plain MP4 flavour is judged by its tracks.
        FileFormat::Mpeg4Part14
        | FileFormat::Mpeg4Part14Audio
        | FileFormat::Mpeg4Part14Video
        | FileFormat::Mpeg4Part14Subtitles
        | FileFormat::AppleItunesAudio
        | FileFormat::AppleItunesAudiobook
        | FileFormat::AppleItunesVideo
        | FileFormat::FlashMp4Audio
        | FileFormat::FlashMp4Audiobook
        | FileFormat::FlashMp4Video => mp4(bytes, format == FileFormat::Mpeg4Part14Video),
        // file-format's MP4 reader gives up on odd endings (a few NULs of
        // padding) and on brands it does not list; the box walk decides.
        FileFormat::ArbitraryBinaryData if bytes.get(4..8) == Some(b"ftyp") => mp4(bytes, false),
        _ => match mpeg_audio(bytes) {
            // Covers ADTS with a CRC (FF F0 / FF F8) and every MP3 sync
            // variant, which file-format only partly lists.
            Some(found) => found,
            None => Err(not_media(describe(format, bytes))),
        },
    }
}

fn not_media(found: impl Into<String>) -> SniffError {
    SniffError::NotMedia {
        found: found.into(),
    }
}

fn truncated(format: &'static str, why: &'static str) -> SniffError {
    SniffError::Truncated { format, why }
}

/// `N` bytes at `at`, if the body has them.
fn arr<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u32_be(b: &[u8], at: usize) -> Option<u64> {
    arr(b, at).map(|x| u64::from(u32::from_be_bytes(x)))
}

/// The body without up to [`TAIL_PADDING`] trailing NUL or whitespace bytes.
fn trim_padding(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && b.len() - end < TAIL_PADDING {
        match b.get(end - 1) {
            Some(0 | b' ' | b'\t' | b'\r' | b'\n') => end -= 1,
            _ => break,
        }
    }
    b.get(..end).unwrap_or(b)
}

/// How a structure walk ended when it did not reach the format's end marker.
enum Walk {
    /// The bytes ran out inside a segment or chunk.
    Cut(&'static str),
    /// The structure is not what the format says; decoders often cope, so the
    /// caller falls back to the plainer end-marker test.
    Odd,
}

/// The image formats that their first bytes settle, named as file-format names
/// them, so the common case skips file-format: it copies the first 36 KB of every
/// body into a zeroed buffer of its own before it looks at a byte (3.6% of a cold
/// `/m/` answer's CPU, README "Performance"). The walks below still judge the
/// whole structure; the rules mirror file-format's signatures for these formats
/// (JPEG-LS and APNG share a prefix with JPEG and PNG), and a test holds them to
/// file-format's verdicts.
fn leading_format(b: &[u8]) -> Option<FileFormat> {
    if b.starts_with(b"\xFF\xD8\xFF") && b.get(3) != Some(&0xF7) {
        Some(FileFormat::JointPhotographicExpertsGroup)
    } else if b.starts_with(b"\x89PNG\r\n\x1A\n") && b.get(37..41) != Some(b"acTL") {
        Some(FileFormat::PortableNetworkGraphics)
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some(FileFormat::GraphicsInterchangeFormat)
    } else {
        None
    }
}

// --- images -----------------------------------------------------------------

/// The verdict on an image from its structure walk, falling back on its end
/// marker (after a little padding) only when the structure was odd rather than cut.
fn whole(
    media: MediaType,
    b: &[u8],
    walk: Result<(), Walk>,
    end: &[u8],
) -> Result<MediaType, SniffError> {
    match walk {
        Ok(()) => Ok(media),
        Err(Walk::Cut(why)) => Err(truncated(media.name(), why)),
        Err(Walk::Odd) if trim_padding(b).ends_with(end) => Ok(media),
        Err(Walk::Odd) => Err(truncated(
            media.name(),
            "it does not end with its end marker",
        )),
    }
}

/// Follows marker segments and entropy-coded data to EOI. Walking (rather
/// than only looking at the last two bytes) is what lets data after EOI, like
/// the video that phones append to "motion photos", pass, while a cut just
/// after an embedded EXIF thumbnail's own EOI is still caught.
fn walk_jpeg(b: &[u8]) -> Result<(), Walk> {
    const CUT: Walk = Walk::Cut("it ends before the EOI marker");
    let mut pos = 2; // past SOI, which file-format matched
    loop {
        if *b.get(pos).ok_or(CUT)? != 0xFF {
            return Err(Walk::Odd);
        }
        while b.get(pos) == Some(&0xFF) {
            pos += 1; // fill bytes before a marker
        }
        let marker = *b.get(pos).ok_or(CUT)?;
        pos += 1;
        match marker {
            0xD9 => return Ok(()),
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0x00 => return Err(Walk::Odd),
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes(arr(b, pos).ok_or(CUT)?));
        if len < 2 {
            return Err(Walk::Odd);
        }
        pos += len;
        if pos > b.len() {
            return Err(CUT);
        }
        if marker == 0xDA {
            // Entropy-coded data: FF is followed by 00 (stuffing) or a restart
            // marker inside the scan; anything else starts the next segment.
            loop {
                let ff = b
                    .get(pos..)
                    .and_then(|rest| memchr::memchr(0xFF, rest))
                    .ok_or(CUT)?;
                pos += ff;
                match *b.get(pos + 1).ok_or(CUT)? {
                    0x00 | 0xD0..=0xD7 => pos += 2,
                    _ => break,
                }
            }
        }
    }
}

const PNG_IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];

fn walk_png(b: &[u8]) -> Result<(), Walk> {
    const CUT: Walk = Walk::Cut("a chunk runs past the end before IEND");
    let mut pos: usize = 8;
    loop {
        let len = u32_be(b, pos).ok_or(CUT)?;
        let kind = b.get(pos + 4..pos + 8).ok_or(CUT)?;
        if len > 0x7FFF_FFFF || !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(Walk::Odd);
        }
        // Header, data and CRC; the u64 sum cannot overflow after the bound above.
        let end = (pos as u64) + 12 + len;
        if end > b.len() as u64 {
            return Err(CUT);
        }
        if kind == b"IEND" {
            return Ok(());
        }
        pos = end as usize; // fits: end <= b.len()
    }
}

fn walk_gif(b: &[u8]) -> Result<(), Walk> {
    const CUT: Walk = Walk::Cut("a block runs past the end before the trailer");
    // A colour table flag in bit 7 and its size as 3 * 2^(n+1) in bits 0-2.
    let table = |flags: u8| {
        if flags & 0x80 != 0 {
            3usize << ((flags & 7) + 1)
        } else {
            0
        }
    };
    let mut pos = 13 + table(*b.get(10).ok_or(CUT)?);
    loop {
        match *b.get(pos).ok_or(CUT)? {
            0x3B => return Ok(()),
            0x21 => pos += 2, // introducer and label, then sub-blocks
            0x2C => {
                let flags = *b.get(pos + 9).ok_or(CUT)?;
                pos += 10 + table(flags) + 1; // descriptor, local table, LZW code size
            }
            _ => return Err(Walk::Odd),
        }
        loop {
            let n = usize::from(*b.get(pos).ok_or(CUT)?);
            pos += 1 + n;
            if n == 0 {
                break;
            }
        }
    }
}

/// WebP and WAV: the RIFF header states the body's size, so a shorter body
/// was cut. A longer one (trailing bytes) plays fine and is tolerated.
fn check_riff(b: &[u8], format: &'static str) -> Result<(), SniffError> {
    let size = arr(b, 4)
        .map(|x| u64::from(u32::from_le_bytes(x)))
        .ok_or(truncated(format, "the RIFF header is cut short"))?;
    if size + 8 > b.len() as u64 {
        return Err(truncated(format, "the RIFF size is larger than the body"));
    }
    Ok(())
}

// --- audio ------------------------------------------------------------------

/// Every Ogg page must be whole. Bytes that are not a page are skipped up to
/// the next capture pattern, as decoders do, so trailing junk is tolerated;
/// a page that promises more bytes than are left is not.
fn check_ogg(b: &[u8], format: &'static str) -> Result<(), SniffError> {
    let mut pos = 0;
    while pos < b.len() {
        let rest = b.get(pos..).unwrap_or_default();
        if !rest.starts_with(b"OggS") {
            match rest.windows(4).position(|w| w == b"OggS") {
                Some(skip) => pos += skip,
                None => break,
            }
            continue;
        }
        let segments = usize::from(
            *rest
                .get(26)
                .ok_or(truncated(format, "the last page header is cut short"))?,
        );
        let table = rest.get(27..27 + segments).ok_or(truncated(
            format,
            "the last page's segment table is cut short",
        ))?;
        let body: usize = table.iter().map(|&n| usize::from(n)).sum();
        let page = 27 + segments + body;
        if page > rest.len() {
            return Err(truncated(format, "the last page is cut short"));
        }
        pos += page;
    }
    Ok(())
}

fn amr(b: &[u8]) -> Result<MediaType, SniffError> {
    // file-format matches only "#!AMR", which AMR-WB and the multichannel
    // variants also start with.
    if b.starts_with(b"#!AMR\n") {
        Ok(MediaType::AmrNb)
    } else if b.starts_with(b"#!AMR-WB\n") {
        Ok(MediaType::AmrWb)
    } else {
        Err(not_media("multichannel or malformed AMR"))
    }
}

/// Skips one or more ID3v2 tags and any NUL padding after them, then
/// identifies the audio frames behind.
fn after_id3(b: &[u8]) -> Result<MediaType, SniffError> {
    const CUT: SniffError = SniffError::Truncated {
        format: "MP3",
        why: "the ID3 tag runs past the end",
    };
    let mut pos: usize = 0;
    while b.get(pos..).is_some_and(|r| r.starts_with(b"ID3")) {
        let header = b.get(pos..pos + 10).ok_or(CUT)?;
        // Syncsafe integer: 7 bits per byte, so at most 2^28 and no overflow.
        let size = header[6..10]
            .iter()
            .fold(0usize, |acc, &x| (acc << 7) | usize::from(x & 0x7F));
        let footer = if header[5] & 0x10 != 0 { 10 } else { 0 };
        pos += 10 + size + footer;
        if pos > b.len() {
            return Err(CUT);
        }
    }
    while b.get(pos) == Some(&0) {
        pos += 1;
    }
    let rest = b.get(pos..).unwrap_or_default();
    if rest.is_empty() {
        return Err(truncated("MP3", "there is no audio after the ID3 tag"));
    }
    if let Some(found) = mpeg_audio(rest) {
        return found;
    }
    let behind = describe(FileFormat::from_bytes(rest), rest);
    Err(not_media(format!("ID3 tag followed by {behind}")))
}

/// Recognizes MPEG audio by its frame header: MP3 (layer III) and ADTS AAC
/// (the same 12-bit sync with layer bits 00). `None` when this is no MPEG
/// audio at all; layers I and II are named and refused.
fn mpeg_audio(b: &[u8]) -> Option<Result<MediaType, SniffError>> {
    let h = b.get(..4)?;
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 3;
    let layer = (h[1] >> 1) & 3;
    if layer == 0 {
        // ADTS: 12-bit sync, then a sampling index (13..15 reserved) and a
        // frame length that must at least cover the 7-byte header.
        let frame_len = (usize::from(b.get(3)? & 3) << 11)
            | (usize::from(*b.get(4)?) << 3)
            | usize::from(b.get(5)? >> 5);
        let ok = h[1] & 0xF0 == 0xF0 && (h[2] >> 2) & 0xF < 13 && frame_len >= 7;
        return ok.then_some(Ok(MediaType::Aac));
    }
    let bitrate = h[2] >> 4;
    let rate = (h[2] >> 2) & 3;
    if version == 1 || bitrate == 0xF || rate == 3 {
        return None; // reserved values: not a frame header
    }
    Some(match layer {
        1 => Ok(MediaType::Mp3),
        2 => Err(not_media("MPEG audio layer II")),
        _ => Err(not_media("MPEG audio layer I")),
    })
}

// --- MP4 --------------------------------------------------------------------

/// The boxes laid end to end in a payload, as (type, payload). Yields an
/// error and stops at the first header that is cut or impossible. Lazy, so a
/// body of a million tiny boxes costs no memory.
struct Boxes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<([u8; 4], &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        // Some muxers pad the end with a few NULs; they are not a box.
        if rest.len() < 8 && rest.iter().all(|&x| x == 0) {
            return None;
        }
        self.rest = &[]; // an error ends the walk
        let (Some(size), Some(kind)) = (u32_be(rest, 0), arr(rest, 4)) else {
            return Some(Err("a box header is cut short"));
        };
        let (size, header) = match size {
            0 => (rest.len() as u64, 8), // "to the end of the file"
            1 => match arr(rest, 8).map(u64::from_be_bytes) {
                Some(large) => (large, 16),
                None => return Some(Err("a box header is cut short")),
            },
            n => (n, 8),
        };
        if size < header {
            return Some(Err("a box has an impossible size"));
        }
        if size > rest.len() as u64 {
            return Some(Err("a box runs past the end"));
        }
        // Both bounds were just checked against rest.len(), so the casts are exact.
        let (this, next) = rest.split_at(size as usize);
        self.rest = next;
        Some(Ok((kind, this.get(header as usize..).unwrap_or_default())))
    }
}

fn boxes(payload: &[u8]) -> Boxes<'_> {
    Boxes { rest: payload }
}

/// Payloads of the boxes of type `kind` directly inside `payload`. Inner
/// boxes are read leniently: the top level already proved the body whole,
/// and a damaged track simply does not count.
fn children<'a>(payload: &'a [u8], kind: &'a [u8; 4]) -> impl Iterator<Item = &'a [u8]> {
    boxes(payload)
        .map_while(Result::ok)
        .filter(move |(k, _)| k == kind)
        .map(|(_, p)| p)
}

fn mp4(b: &[u8], video_by_file_format: bool) -> Result<MediaType, SniffError> {
    let mut moov = None;
    for found in boxes(b) {
        match found {
            Ok((kind, payload)) if &kind == b"moov" => moov = Some(payload),
            Ok(_) => {}
            Err(why) => return Err(truncated("MP4", why)),
        }
    }
    let moov = moov.ok_or(truncated("MP4", "it has no moov box"))?;
    let (mut audio, mut video) = (false, video_by_file_format);
    for trak in children(moov, b"trak") {
        for mdia in children(trak, b"mdia") {
            for hdlr in children(mdia, b"hdlr") {
                // version+flags (4), pre_defined (4), then the handler type.
                match hdlr.get(8..12) {
                    Some(b"soun") => audio = true,
                    Some(b"vide") => video = true,
                    _ => {}
                }
            }
        }
    }
    if video {
        Ok(MediaType::Mp4Video)
    } else if audio {
        Ok(MediaType::M4a)
    } else {
        Err(not_media("MP4 container with no audio or video track"))
    }
}

// --- what it is instead -----------------------------------------------------

/// A short human description of a body that is not servable media.
fn describe(format: FileFormat, b: &[u8]) -> String {
    let head = b.get(..4096).unwrap_or(b);
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let text = text.trim_ascii_start();
    let lower = text.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    if lower.starts_with(b"<") {
        return if lower.starts_with(b"<!doctype html") || lower.starts_with(b"<html") {
            "HTML document"
        } else if has(b"<svg") {
            "SVG image"
        } else if has(b"<html") || has(b"<body") || has(b"<head") {
            "HTML document"
        } else if has(b"<script") {
            "script"
        } else {
            "XML"
        }
        .to_string();
    }
    let named = match format {
        FileFormat::PortableDocumentFormat => Some("PDF"),
        FileFormat::Zip => Some("ZIP archive"),
        FileFormat::Gzip => Some("gzip archive"),
        FileFormat::SevenZip => Some("7-Zip archive"),
        FileFormat::RoshalArchive => Some("RAR archive"),
        FileFormat::TapeArchive => Some("tar archive"),
        FileFormat::ShellScript => Some("script"),
        // Two sync bytes matched but the frame header is invalid.
        FileFormat::Mpeg12AudioLayer3 | FileFormat::AdvancedAudioCoding => {
            Some("malformed MPEG audio")
        }
        _ => None,
    };
    if let Some(name) = named {
        return name.to_string();
    }
    if !matches!(
        format,
        FileFormat::ArbitraryBinaryData | FileFormat::PlainText | FileFormat::Empty
    ) {
        return format.name().to_string();
    }
    if lower.starts_with(b"{") || lower.starts_with(b"[") {
        return "JSON".to_string();
    }
    if lower.starts_with(b"#!") {
        return "script".to_string();
    }
    // Text if printable UTF-8, allowing the 4 KiB window to split a character.
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(head.get(..e.valid_up_to()).unwrap_or_default()).unwrap_or("")
        }
        Err(_) => "",
    };
    if !valid.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || c.is_ascii_whitespace())
    {
        return "text".to_string();
    }
    "unknown bytes".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const JPG: &[u8] = include_bytes!("../tests/fixtures/photo.jpg");
    const PNG: &[u8] = include_bytes!("../tests/fixtures/photo.png");
    const GIF: &[u8] = include_bytes!("../tests/fixtures/photo.gif");
    const WEBP: &[u8] = include_bytes!("../tests/fixtures/photo.webp");
    const OPUS: &[u8] = include_bytes!("../tests/fixtures/voice.ogg");
    const VORBIS: &[u8] = include_bytes!("../tests/fixtures/voice-vorbis.ogg");
    const MP3: &[u8] = include_bytes!("../tests/fixtures/voice.mp3");
    const M4A: &[u8] = include_bytes!("../tests/fixtures/voice.m4a");
    const AAC: &[u8] = include_bytes!("../tests/fixtures/voice.aac");
    const AMR: &[u8] = include_bytes!("../tests/fixtures/voice.amr");
    const WAV: &[u8] = include_bytes!("../tests/fixtures/voice.wav");

    const FIXTURES: [(&str, &[u8], MediaType); 11] = [
        ("photo.jpg", JPG, MediaType::Jpeg),
        ("photo.png", PNG, MediaType::Png),
        ("photo.gif", GIF, MediaType::Gif),
        ("photo.webp", WEBP, MediaType::Webp),
        ("voice.ogg", OPUS, MediaType::OggOpus),
        ("voice-vorbis.ogg", VORBIS, MediaType::OggVorbis),
        ("voice.mp3", MP3, MediaType::Mp3),
        ("voice.m4a", M4A, MediaType::M4a),
        ("voice.aac", AAC, MediaType::Aac),
        ("voice.amr", AMR, MediaType::AmrNb),
        ("voice.wav", WAV, MediaType::Wav),
    ];

    fn not_media(b: &[u8]) -> String {
        match sniff(b) {
            Err(SniffError::NotMedia { found }) => found,
            other => panic!("expected NotMedia, got {other:?}"),
        }
    }

    fn is_truncated(b: &[u8]) -> bool {
        matches!(sniff(b), Err(SniffError::Truncated { .. }))
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// One ISO BMFF box.
    fn mp4_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let size = u32::try_from(payload.len() + 8).unwrap();
        cat(&[&size.to_be_bytes(), kind, payload])
    }

    /// A `trak` whose `hdlr` names `handler` (vide, soun, ...).
    fn trak(handler: &[u8; 4]) -> Vec<u8> {
        let hdlr = mp4_box(b"hdlr", &cat(&[&[0; 8], handler, &[0; 12], b"h\0"]));
        let mdhd = mp4_box(b"mdhd", &[0; 24]);
        mp4_box(b"trak", &mp4_box(b"mdia", &cat(&[&mdhd, &hdlr])))
    }

    /// A minimal MP4: ftyp with `brand`, mdat, then moov with the given
    /// tracks at the end (where a non-faststart muxer leaves it).
    fn mp4(brand: &[u8; 4], handlers: &[&[u8; 4]]) -> Vec<u8> {
        let ftyp = mp4_box(b"ftyp", &cat(&[brand, &[0, 0, 2, 0], b"isommp41"]));
        let traks: Vec<u8> = handlers.iter().flat_map(|h| trak(h)).collect();
        let moov = mp4_box(b"moov", &cat(&[&mp4_box(b"mvhd", &[0; 100]), &traks]));
        cat(&[&ftyp, &mp4_box(b"mdat", &[0x55; 64]), &moov])
    }

    #[test]
    fn every_fixture_sniffs_as_its_type() {
        for (name, bytes, want) in FIXTURES {
            assert_eq!(sniff(bytes), Ok(want), "{name}");
        }
    }

    #[test]
    fn fixtures_cut_in_half_are_truncated() {
        for (name, bytes, _) in FIXTURES {
            let half = &bytes[..bytes.len() / 2];
            let must = [
                "photo.jpg",
                "photo.png",
                "photo.gif",
                "photo.webp",
                "voice.m4a",
            ];
            if must.contains(&name) || name.ends_with(".ogg") || name == "voice.wav" {
                assert!(is_truncated(half), "{name}: {:?}", sniff(half));
            }
        }
    }

    #[test]
    fn cuts_anywhere_in_structured_fixtures_are_caught() {
        // Every 97th byte: dense enough to land in headers, tables and data.
        for (name, bytes) in [("jpg", JPG), ("png", PNG), ("gif", GIF), ("m4a", M4A)] {
            for cut in (1..bytes.len()).step_by(97) {
                let r = sniff(&bytes[..cut]);
                assert!(r.is_err(), "{name} cut at {cut} passed as {r:?}");
            }
        }
    }

    #[test]
    fn amr_wb_is_told_from_amr_nb() {
        let wb = cat(&[b"#!AMR-WB\n", &[0x04; 64]]);
        assert_eq!(sniff(&wb), Ok(MediaType::AmrWb));
        assert!(not_media(b"#!AMR_MC1.0\n\0\0\0\x01").contains("AMR"));
    }

    #[test]
    fn mp4_is_judged_by_its_tracks_not_its_brand() {
        assert_eq!(sniff(&mp4(b"isom", &[b"vide"])), Ok(MediaType::Mp4Video));
        assert_eq!(sniff(&mp4(b"isom", &[b"soun"])), Ok(MediaType::M4a));
        assert_eq!(
            sniff(&mp4(b"isom", &[b"vide", b"soun"])),
            Ok(MediaType::Mp4Video)
        );
        assert_eq!(sniff(&mp4(b"M4A ", &[b"soun"])), Ok(MediaType::M4a));
        assert_eq!(
            sniff(&mp4(b"M4A ", &[b"soun", b"vide"])),
            Ok(MediaType::Mp4Video)
        );
        assert_eq!(
            sniff(&mp4(b"mp42", &[b"soun", b"text"])),
            Ok(MediaType::M4a)
        );
        assert!(not_media(&mp4(b"isom", &[b"text"])).contains("no audio or video"));
    }

    #[test]
    fn broken_mp4_is_truncated() {
        let whole = mp4(b"isom", &[b"soun"]);
        assert!(is_truncated(&whole[..whole.len() - 1]));
        let ftyp = mp4_box(b"ftyp", b"isom\0\0\x02\0isom");
        let no_moov = cat(&[&ftyp, &mp4_box(b"mdat", &[1; 32])]);
        assert_eq!(
            sniff(&no_moov),
            Err(SniffError::Truncated {
                format: "MP4",
                why: "it has no moov box"
            })
        );
        let mut liar = cat(&[&ftyp, &mp4_box(b"mdat", &[1; 32])]);
        liar[ftyp.len() + 3] = 200; // mdat claims more than is there
        assert!(is_truncated(&liar));
        // A few NULs of padding after the last box are not a box.
        assert_eq!(sniff(&cat(&[&whole, &[0; 4]])), Ok(MediaType::M4a));
    }

    #[test]
    fn id3_tags_are_looked_past() {
        let tag = |size: u8| cat(&[b"ID3\x04\0\0\0\0\0", &[size], &vec![0; usize::from(size)]]);
        let aac_behind = cat(&[&tag(16), AAC]);
        assert_eq!(sniff(&aac_behind), Ok(MediaType::Aac));
        let frame = [0xFF, 0xFB, 0x90, 0x64, 0, 0, 0, 0];
        assert_eq!(
            sniff(&cat(&[&tag(8), &[0; 40], &frame])),
            Ok(MediaType::Mp3)
        );
        assert!(is_truncated(&tag(100)[..50]));
        assert!(is_truncated(&tag(10)));
        assert!(not_media(&cat(&[&tag(4), b"<html>"])).contains("ID3 tag followed by HTML"));
    }

    #[test]
    fn mpeg_audio_variants() {
        assert_eq!(sniff(&[0xFF, 0xFB, 0x90, 0x64, 0, 0]), Ok(MediaType::Mp3));
        // ADTS with CRC (protection_absent = 0), which file-format does not list.
        assert_eq!(
            sniff(&[0xFF, 0xF0, 0x50, 0x80, 0x2E, 0x7F, 0xFC]),
            Ok(MediaType::Aac)
        );
        assert_eq!(
            not_media(&[0xFF, 0xFD, 0x90, 0x64, 0, 0]),
            "MPEG audio layer II"
        );
        // Reserved sample-rate index: not a frame header.
        assert_eq!(
            not_media(&[0xFF, 0xFB, 0x9C, 0x64, 0, 0]),
            "malformed MPEG audio"
        );
    }

    #[test]
    fn trailers_after_end_markers() {
        // Motion photos append a video after EOI; the JPEG itself is whole.
        let motion = cat(&[JPG, &mp4(b"isom", &[b"vide"])]);
        assert_eq!(sniff(&motion), Ok(MediaType::Jpeg));
        assert_eq!(sniff(&cat(&[JPG, b"\0\0\r\n"])), Ok(MediaType::Jpeg));
        assert_eq!(sniff(&cat(&[PNG, b"\n"])), Ok(MediaType::Png));
        assert_eq!(sniff(&cat(&[GIF, b"\0"])), Ok(MediaType::Gif));
        assert_eq!(sniff(&cat(&[OPUS, b"junk"])), Ok(MediaType::OggOpus));
        // Without the EOI a JPEG whose structure is odd is judged by its tail.
        let odd = cat(&[
            &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16],
            &[0x20; 14],
            b"garbage",
            &[0xFF, 0xD9],
        ]);
        assert_eq!(sniff(&odd), Ok(MediaType::Jpeg));
        assert!(is_truncated(&odd[..odd.len() - 1]));
    }

    #[test]
    fn riff_size_must_fit() {
        assert!(is_truncated(&WAV[..WAV.len() - 1]));
        assert!(is_truncated(&WEBP[..20]));
        assert_eq!(sniff(&cat(&[WAV, b"LIST"])), Ok(MediaType::Wav));
    }

    #[test]
    fn documents_are_named() {
        assert_eq!(
            not_media(b"<!doctype html><html><body>hi</body></html>"),
            "HTML document"
        );
        assert_eq!(not_media(b"\n  <!DOCTYPE HTML>\n<html>"), "HTML document");
        assert_eq!(not_media(b"<!-- hi --><html lang=en>"), "HTML document");
        assert_eq!(
            not_media(b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>x</script></svg>"),
            "SVG image"
        );
        assert_eq!(
            not_media(b"<?xml version=\"1.0\"?>\n<!DOCTYPE svg><svg width=\"1\"/>"),
            "SVG image"
        );
        assert_eq!(
            not_media(b"\xEF\xBB\xBF<?xml version=\"1.0\"?><rss/>"),
            "XML"
        );
        assert_eq!(not_media(b"{\"error\": \"AccessDenied\"}"), "JSON");
        assert_eq!(not_media(b" [1, 2]"), "JSON");
        assert_eq!(not_media(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj"), "PDF");
        assert_eq!(not_media(b"PK\x03\x04\x14\0\0\0\x08\0"), "ZIP archive");
        assert_eq!(not_media(b"#!/bin/sh\necho hi\n"), "script");
        assert_eq!(not_media("Доступ запрещён\n".as_bytes()), "text");
        assert_eq!(not_media(&[0x00, 0x01, 0x02, 0x9F]), "unknown bytes");
        assert_eq!(sniff(b""), Err(SniffError::Empty));
        // Video other than MP4 is named by file-format.
        let mkv = [0x1A, 0x45, 0xDF, 0xA3, 0x93, 0x42, 0x82, 0x88];
        assert!(!not_media(&mkv).is_empty());
    }

    #[test]
    fn mime_and_ext_round_trip() {
        for m in MediaType::ALL {
            assert_eq!(MediaType::from_mime(m.mime()), Some(m), "{m:?}");
            assert_eq!(
                MediaType::from_mime(&m.mime().to_uppercase()),
                Some(m),
                "{m:?}"
            );
            assert_eq!(
                MediaType::from_ext(m.ext()).map(MediaType::ext),
                Some(m.ext())
            );
            assert_ne!(m.is_image(), m.is_audio() || m == MediaType::Mp4Video);
        }
        assert_eq!(
            MediaType::from_mime("audio/ogg;codecs=\"opus\""),
            Some(MediaType::OggOpus)
        );
        assert_eq!(
            MediaType::from_mime("image/jpeg; charset=x"),
            Some(MediaType::Jpeg)
        );
        assert_eq!(MediaType::from_mime("text/html"), None);
        assert_eq!(MediaType::from_ext(".JPEG"), Some(MediaType::Jpeg));
        assert_eq!(MediaType::from_ext("opus"), Some(MediaType::OggOpus));
        assert_eq!(MediaType::from_ext("html"), None);
    }

    /// The prefixes that look like the leading formats but are not them.
    #[test]
    fn leading_formats_leave_their_look_alikes_to_file_format() {
        let jpeg_ls = b"\xFF\xD8\xFF\xF7\x00\x0B\x08";
        let mut apng = PNG[..64].to_vec();
        apng[37..41].copy_from_slice(b"acTL");
        for b in [
            &jpeg_ls[..],
            &apng,
            b"GIF88a....",
            b"\xFF\xD8",
            b"\x89PNG\r\n",
        ] {
            assert_eq!(leading_format(b), None, "{b:?}");
        }
        assert_eq!(
            FileFormat::from_bytes(&apng),
            FileFormat::AnimatedPortableNetworkGraphics
        );
        assert_eq!(FileFormat::from_bytes(jpeg_ls), FileFormat::JpegLs);
    }

    proptest! {
        // `leading_format` stands in for file-format on the formats it names: where
        // it names one, file-format must name the same.
        #[test]
        fn leading_formats_agree_with_file_format(
            which in 0..FIXTURES.len(),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((0usize..64, any::<u8>()), 0..3),
            magic in prop::sample::select(vec![
                &b""[..], b"\xFF\xD8\xFF", b"\xFF\xD8\xFF\xE0", b"\xFF\xD8\xFF\xF7",
                b"\x89PNG\r\n\x1A\n", b"GIF87a", b"GIF89a",
            ]),
            tail in prop::collection::vec(any::<u8>(), 0..96),
        ) {
            let (_, fixture, _) = FIXTURES[which];
            let mut bytes = fixture[..=cut.index(fixture.len())].to_vec();
            for (at, value) in flips {
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
            }
            for b in [bytes, [magic, &tail[..]].concat()] {
                if let Some(format) = leading_format(&b) {
                    prop_assert_eq!(format, FileFormat::from_bytes(&b));
                }
            }
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = sniff(&bytes);
        }

        // As fuzz/fuzz_targets/sniff.rs: a verdict is stable, and what it names is
        // served under a media MIME type that maps back to it.
        #[test]
        fn verdicts_are_stable_and_name_media(
            which in 0..FIXTURES.len(),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let (_, bytes, _) = FIXTURES[which];
            let mut bytes = bytes[..=cut.index(bytes.len())].to_vec();
            let len = bytes.len();
            for (at, value) in flips {
                bytes[at.index(len)] = value;
            }
            let verdict = sniff(&bytes);
            prop_assert_eq!(format!("{verdict:?}"), format!("{:?}", sniff(&bytes)));
            if let Ok(media) = verdict {
                let mime = media.mime();
                prop_assert!(
                    mime.starts_with("image/") || mime.starts_with("audio/") || mime == "video/mp4"
                );
                prop_assert_eq!(MediaType::from_mime(mime), Some(media));
            }
        }

        #[test]
        fn never_panics_behind_a_known_magic(
            magic in prop::sample::select(vec![
                &b"\xFF\xD8\xFF"[..], b"\x89PNG\r\n\x1A\n", b"GIF89a", b"RIFF\0\0\0\0WEBPVP8 ",
                b"RIFF\0\0\0\0WAVEfmt ", b"OggS\0\x02", b"ID3\x04\0", b"#!AMR", b"\xFF\xF1",
                b"\0\0\0\x18ftypisom", b"\0\0\0\x18ftypM4A ", b"\0\0\0\x01ftypisom",
            ]),
            tail in prop::collection::vec(any::<u8>(), 0..1024),
        ) {
            let _ = sniff(&cat(&[magic, &tail]));
        }

        #[test]
        fn never_panics_on_damaged_fixtures(
            which in 0..FIXTURES.len(),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        ) {
            let (_, bytes, _) = FIXTURES[which];
            let mut bytes = bytes[..=cut.index(bytes.len())].to_vec();
            let len = bytes.len();
            for (at, value) in flips {
                bytes[at.index(len)] = value;
            }
            let _ = sniff(&bytes);
        }
    }
}
