//! Timing of the two conversions the proxy runs on its blocking pool, on inputs at the size
//! DESIGN §12 quotes: a ~5 MB 12-megapixel WebP to JPEG, and a 3-minute MP3 to Ogg/Opus.
//! Also compares resize filters, which dominate the image path. Run in release only.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use image::imageops::FilterType;
use image::{Rgb, RgbImage};
use medialink::convert::{AudioSource, to_jpeg, to_ogg_opus};

/// A deterministic 4000x3000 "photo": smooth colour gradients with a little xorshift noise,
/// so lossless WebP lands near 5 MB the way a real photo's lossy WebP of that size would.
fn noisy_photo() -> RgbImage {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    RgbImage::from_fn(4000, 3000, |x, y| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = (state & 0x1) as u8; // 1 bit of noise per channel
        let r = ((x * 255 / 4000) as u8).wrapping_add(n);
        let g = ((y * 255 / 3000) as u8).wrapping_add(n);
        let b = (((x + y) / 28) as u8).wrapping_add(n);
        Rgb([r, g, b])
    })
}

fn webp_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(Cursor::new(&mut out))
        .encode(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("the image crate encodes lossless WebP");
    out
}

/// Frame length of an MPEG audio Layer III header, or None if `h` is not one.
fn mp3_frame_len(h: &[u8]) -> Option<usize> {
    if h.len() < 4 || h[0] != 0xFF || h[1] & 0xE0 != 0xE0 || (h[1] >> 1) & 3 != 1 {
        return None;
    }
    let mpeg1 = (h[1] >> 3) & 3 == 3;
    let bitrate_idx = usize::from(h[2] >> 4);
    let rate_idx = usize::from((h[2] >> 2) & 3);
    let padding = usize::from((h[2] >> 1) & 1);
    let kbps = if mpeg1 {
        [
            0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0,
        ][bitrate_idx]
    } else {
        [
            0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0,
        ][bitrate_idx]
    };
    let rate = match (h[1] >> 3) & 3 {
        3 => [44100, 48000, 32000, 0][rate_idx],
        2 => [22050, 24000, 16000, 0][rate_idx],
        0 => [11025, 12000, 8000, 0][rate_idx],
        _ => 0,
    };
    if kbps == 0 || rate == 0 {
        return None;
    }
    let coeff = if mpeg1 { 144 } else { 72 };
    Some(coeff * kbps * 1000 / rate + padding)
}

/// About three minutes of MP3: voice.mp3's audio frames repeated. The ID3 tag and the
/// Xing/Info frame are dropped, since the Info frame states the length of one copy.
fn long_mp3(seconds: u32) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/voice.mp3");
    let file = std::fs::read(path).expect("voice.mp3 fixture");
    let mut pos = 0;
    if file.starts_with(b"ID3") {
        let s = &file[6..10];
        let size = (usize::from(s[0]) << 21)
            | (usize::from(s[1]) << 14)
            | (usize::from(s[2]) << 7)
            | usize::from(s[3]);
        pos = 10 + size;
    }
    let mut frames = Vec::new();
    while let Some(len) = mp3_frame_len(&file[pos..]) {
        let Some(frame) = file.get(pos..pos + len) else {
            break;
        };
        let tag = &frame[..frame.len().min(64)];
        let is_info = tag.windows(4).any(|w| w == b"Xing" || w == b"Info");
        if !is_info {
            frames.extend_from_slice(frame);
        }
        pos += len;
    }
    // voice.mp3 is 4.66 s of 22.05 kHz mono.
    let copies = (seconds as usize * 1000).div_ceil(4663);
    frames.repeat(copies)
}

fn bench(c: &mut Criterion) {
    let photo = noisy_photo();
    let webp = webp_bytes(&photo);
    let mp3 = long_mp3(180);
    let out = to_ogg_opus(&mp3, AudioSource::Mp3).expect("mp3 converts");
    eprintln!(
        "inputs: webp {} bytes ({}x{}), mp3 {} bytes -> opus {} bytes, {:?} ms",
        webp.len(),
        photo.width(),
        photo.height(),
        mp3.len(),
        out.bytes.len(),
        out.duration_ms
    );

    let mut g = c.benchmark_group("convert");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("webp_12mp_to_jpeg", |b| {
        b.iter(|| to_jpeg(black_box(&webp)).expect("jpeg"))
    });
    g.bench_function("mp3_3min_to_opus", |b| {
        b.iter(|| to_ogg_opus(black_box(&mp3), AudioSource::Mp3).expect("opus"))
    });
    g.finish();

    // The resize alone, to choose the filter used by `to_jpeg`.
    let mut g = c.benchmark_group("resize_4000x3000_to_1600x1200");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, filter) in [
        ("lanczos3", FilterType::Lanczos3),
        ("catmullrom", FilterType::CatmullRom),
        ("triangle", FilterType::Triangle),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| image::imageops::resize(black_box(&photo), 1600, 1200, filter))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
