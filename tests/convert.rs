//! Black-box tests of the convert module on real sample media (tests/fixtures). Outputs are
//! checked with Rust decoders only (image for JPEG; ogg + opus for Ogg/Opus): no ffmpeg.

use std::io::Cursor;

use medialink::convert::{
    AudioSource, ConvertError, Converted, ogg_opus_duration_ms, to_jpeg, to_ogg_opus,
};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------- images

fn assert_jpeg(out: &Converted, w: u32, h: u32) {
    assert_eq!(&out.bytes[..2], &[0xFF, 0xD8], "starts with SOI");
    assert_eq!(
        &out.bytes[out.bytes.len() - 2..],
        &[0xFF, 0xD9],
        "ends with EOI"
    );
    assert!(out.bytes.len() < 5 * 1024 * 1024);
    let img = image::load_from_memory_with_format(&out.bytes, image::ImageFormat::Jpeg)
        .expect("output decodes as JPEG");
    assert_eq!((img.width(), img.height()), (w, h));
    assert_eq!((out.width, out.height), (Some(w), Some(h)));
    assert_eq!(img.color(), image::ColorType::Rgb8, "colour kept");
}

#[test]
fn webp_to_jpeg_640x480() {
    assert_jpeg(&to_jpeg(&fixture("photo.webp")).expect("convert"), 640, 480);
}

#[test]
fn gif_to_jpeg_640x480() {
    assert_jpeg(&to_jpeg(&fixture("photo.gif")).expect("convert"), 640, 480);
}

#[test]
fn png_and_jpeg_inputs_convert_too() {
    assert_jpeg(&to_jpeg(&fixture("photo.png")).expect("png"), 640, 480);
    assert_jpeg(&to_jpeg(&fixture("photo.jpg")).expect("jpg"), 640, 480);
}

#[test]
fn jpeg_keeps_colour() {
    // The sample photo is colourful; a grey output would have r == g == b everywhere.
    let out = to_jpeg(&fixture("photo.webp")).expect("convert");
    let img = image::load_from_memory(&out.bytes)
        .expect("decode")
        .into_rgb8();
    let coloured = img
        .pixels()
        .filter(|p| p[0].abs_diff(p[1]) > 20 || p[1].abs_diff(p[2]) > 20)
        .count();
    assert!(coloured > 1000, "only {coloured} coloured pixels");
}

fn encode_png(img: &image::DynamicImage) -> Vec<u8> {
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode png");
    png
}

#[test]
fn big_png_shrinks_to_1600x1200() {
    let img = image::RgbImage::from_fn(4000, 3000, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let png = encode_png(&image::DynamicImage::ImageRgb8(img));
    assert_jpeg(&to_jpeg(&png).expect("convert"), 1600, 1200);
}

#[test]
fn portrait_png_shrinks_on_its_long_side() {
    let img = image::RgbImage::from_pixel(1000, 2000, image::Rgb([10, 200, 30]));
    let png = encode_png(&image::DynamicImage::ImageRgb8(img));
    assert_jpeg(&to_jpeg(&png).expect("convert"), 800, 1600);
}

#[test]
fn transparent_png_flattens_onto_white() {
    let img = image::RgbaImage::from_pixel(64, 64, image::Rgba([0, 0, 0, 0]));
    let png = encode_png(&image::DynamicImage::ImageRgba8(img));
    let out = to_jpeg(&png).expect("convert");
    let jpeg = image::load_from_memory(&out.bytes)
        .expect("decode")
        .into_rgb8();
    assert!(jpeg.pixels().all(|p| p.0.iter().all(|&c| c > 250)));
}

/// CRC-32 (IEEE) as PNG chunks use it, bit by bit: only for forging a header in a test.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn image_over_the_pixel_budget_is_refused_before_decoding() {
    // A valid PNG whose IHDR declares 50000 x 50000 (2.5 GP) with a correct CRC and only
    // one pixel of data: the refusal must come from the header, before any allocation.
    let img = image::GrayImage::new(1, 1);
    let mut png = encode_png(&image::DynamicImage::ImageLuma8(img));
    // IHDR: length at 8..12, type at 12..16, width 16..20, height 20..24, CRC at 29..33.
    png[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let err = to_jpeg(&png).expect_err("refused");
    assert!(
        matches!(
            err,
            ConvertError::TooLarge {
                actual: 2_500_000_000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn garbage_and_truncated_images_are_errors() {
    assert!(matches!(
        to_jpeg(b"definitely not an image"),
        Err(ConvertError::Unsupported { .. })
    ));
    assert!(to_jpeg(b"").is_err());
    for name in ["photo.webp", "photo.gif", "photo.png", "photo.jpg"] {
        let bytes = fixture(name);
        for cut in [4, 16, 64, bytes.len() / 3, bytes.len() / 2] {
            // Must not panic. A GIF or JPEG cut late may still decode (partial rows are
            // filled); a result, if any, must still be a valid JPEG.
            if let Ok(out) = to_jpeg(&bytes[..cut]) {
                assert_eq!(&out.bytes[..2], &[0xFF, 0xD8], "{name} cut at {cut}");
            }
        }
        let mut flipped = bytes.clone();
        for b in flipped.iter_mut().skip(40).step_by(7) {
            *b ^= 0x5A;
        }
        let _ = to_jpeg(&flipped);
    }
}

// ---------------------------------------------------------------- audio

/// The source's duration in ms as symphonia sees it: decoded frames / sample rate.
fn source_duration_ms(bytes: &[u8]) -> u64 {
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let mut reader = symphonia::default::get_probe()
        .probe(
            &Hint::new(),
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .expect("probe");
    let track = reader.default_track(TrackType::Audio).expect("track");
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .expect("audio");
    let rate = u64::from(params.sample_rate.expect("rate"));
    let id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .expect("decoder");
    let mut frames = 0u64;
    while let Ok(Some(packet)) = reader.next_packet() {
        if packet.track_id == id
            && let Ok(buf) = decoder.decode(&packet)
        {
            frames += buf.frames() as u64;
        }
    }
    frames * 1000 / rate
}

struct OpusCheck {
    pre_skip: u64,
    last_granule: u64,
    rms: f32,
}

/// Parse the Ogg/Opus output with the `ogg` crate, check its headers, decode every packet
/// with libopus and measure the loudness.
fn check_ogg_opus(bytes: &[u8]) -> OpusCheck {
    assert_eq!(&bytes[..4], b"OggS");
    let mut reader = ogg::PacketReader::new(Cursor::new(bytes));

    let head = reader.read_packet_expected().expect("OpusHead packet");
    assert!(
        head.first_in_stream() && head.last_in_page(),
        "OpusHead alone on page 1"
    );
    assert_eq!(&head.data[..8], b"OpusHead");
    assert_eq!(head.data[8], 1, "version");
    assert_eq!(head.data[9], 1, "mono");
    let pre_skip = u64::from(u16::from_le_bytes([head.data[10], head.data[11]]));
    let input_rate = u32::from_le_bytes(head.data[12..16].try_into().expect("4 bytes"));
    assert!(
        input_rate == 48_000 || input_rate == 22_050,
        "input rate {input_rate}"
    );
    assert_eq!(head.absgp_page(), 0);

    let tags = reader.read_packet_expected().expect("OpusTags packet");
    assert!(
        tags.first_in_page() && tags.last_in_page(),
        "OpusTags alone on page 2"
    );
    assert_eq!(&tags.data[..8], b"OpusTags");

    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).expect("decoder");
    let mut pcm = vec![0f32; 5760];
    let (mut sum_sq, mut n, mut last_granule, mut decoded) = (0f64, 0u64, 0u64, 0u64);
    while let Some(packet) = reader.read_packet().expect("ogg page") {
        let got = decoder
            .decode_float(&packet.data, &mut pcm, false)
            .expect("opus packet");
        for (i, s) in pcm[..got].iter().enumerate() {
            if decoded + i as u64 >= pre_skip {
                sum_sq += f64::from(*s) * f64::from(*s);
                n += 1;
            }
        }
        decoded += got as u64;
        if packet.last_in_page() {
            last_granule = packet.absgp_page();
        }
        if packet.last_in_stream() {
            break;
        }
    }
    assert!(
        decoded >= last_granule,
        "the granule never points past the audio"
    );
    OpusCheck {
        pre_skip,
        last_granule,
        rms: (sum_sq / n.max(1) as f64).sqrt() as f32,
    }
}

fn voice_case(name: &str, source: AudioSource) {
    let input = fixture(name);
    let expected_ms = source_duration_ms(&input);
    let out = to_ogg_opus(&input, source).unwrap_or_else(|e| panic!("{name}: {e}"));
    let check = check_ogg_opus(&out.bytes);
    let from_pages = ogg_opus_duration_ms(&out.bytes).expect("duration from pages");
    assert_eq!(
        from_pages,
        (check.last_granule - check.pre_skip) * 1000 / 48_000
    );
    assert_eq!(out.duration_ms, Some(from_pages));
    assert!(
        from_pages.abs_diff(expected_ms) <= 200,
        "{name}: output {from_pages} ms, source {expected_ms} ms"
    );
    assert!(
        check.rms > 0.01,
        "{name}: output is silent (rms {})",
        check.rms
    );
    eprintln!(
        "{name}: source {expected_ms} ms, output {from_pages} ms, {} bytes, rms {:.3}, pre-skip {}",
        out.bytes.len(),
        check.rms,
        check.pre_skip
    );
}

#[test]
fn mp3_to_opus() {
    voice_case("voice.mp3", AudioSource::Mp3);
}

#[test]
fn m4a_to_opus() {
    voice_case("voice.m4a", AudioSource::M4a);
}

#[test]
fn wav_to_opus() {
    voice_case("voice.wav", AudioSource::Wav);
}

#[test]
fn vorbis_to_opus() {
    voice_case("voice-vorbis.ogg", AudioSource::OggVorbis);
}

#[test]
fn adts_aac_to_opus() {
    voice_case("voice.aac", AudioSource::Aac);
}

#[test]
fn amr_is_unsupported() {
    let err = to_ogg_opus(&fixture("voice.amr"), AudioSource::AmrNb).expect_err("refused");
    assert!(
        matches!(err, ConvertError::Unsupported { format: "amr", .. }),
        "{err:?}"
    );
}

#[test]
fn audio_stating_more_than_15_minutes_is_refused_up_front() {
    // A WAV header for 16 minutes of 8 kHz 16-bit mono, followed by only 1000 bytes.
    let rate = 8_000u32;
    let data_len = 16 * 60 * rate * 2;
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.extend(std::iter::repeat_n(0x11u8, 1000));
    let err = to_ogg_opus(&wav, AudioSource::Wav).expect_err("refused");
    assert!(
        matches!(
            err,
            ConvertError::TooLarge {
                actual: 960_000,
                limit: 900_000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn duration_of_a_real_opus_file() {
    // voice.ogg was made by ffmpeg from the same speech as voice.wav (4.663129 s). ffprobe
    // says 4.669667 s because it does not subtract the 312-sample pre-skip (6.5 ms).
    let ms = ogg_opus_duration_ms(&fixture("voice.ogg")).expect("opus");
    assert_eq!(ms, 4663);
    assert_eq!(
        ogg_opus_duration_ms(&fixture("voice-vorbis.ogg")),
        None,
        "vorbis"
    );
    assert_eq!(ogg_opus_duration_ms(&fixture("voice.mp3")), None);
}

#[test]
fn garbage_and_truncated_audio_are_errors() {
    let sources = [
        AudioSource::Mp3,
        AudioSource::M4a,
        AudioSource::Aac,
        AudioSource::Wav,
        AudioSource::OggVorbis,
    ];
    for source in sources {
        assert!(to_ogg_opus(b"", source).is_err());
        assert!(
            to_ogg_opus(&[0u8; 4096], source).is_err(),
            "{source:?} zeros"
        );
        let noise: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(to_ogg_opus(&noise, source).is_err(), "{source:?} noise");
    }
    for (name, source) in [
        ("voice.mp3", AudioSource::Mp3),
        ("voice.m4a", AudioSource::M4a),
        ("voice.aac", AudioSource::Aac),
        ("voice.wav", AudioSource::Wav),
        ("voice-vorbis.ogg", AudioSource::OggVorbis),
    ] {
        let bytes = fixture(name);
        for cut in [1, 12, 100] {
            assert!(
                to_ogg_opus(&bytes[..cut], source).is_err(),
                "{name} cut at {cut}"
            );
        }
        // Cut later: must not panic. What comes out depends on the container (see the
        // printed lines); any success must still be a well-formed Ogg/Opus file.
        for cut in [1000, bytes.len() / 2, bytes.len() - 1] {
            match to_ogg_opus(&bytes[..cut], source) {
                Ok(out) => {
                    assert!(ogg_opus_duration_ms(&out.bytes).is_some());
                    eprintln!("{name} cut at {cut}: converted {:?} ms", out.duration_ms);
                }
                Err(e) => eprintln!("{name} cut at {cut}: {e}"),
            }
        }
        let mut flipped = bytes.clone();
        for b in flipped.iter_mut().skip(200).step_by(13) {
            *b ^= 0xA5;
        }
        let _ = to_ogg_opus(&flipped, source);
    }
}

/// Deterministic mutation smoke test: flip, cut and splice bytes of every fixture and check
/// that each conversion returns (Ok or Err) without panicking. Slow in debug; run with
/// `cargo test --release -- --ignored mutation`.
#[test]
#[ignore]
fn mutation_smoke() {
    let cases: [(&str, Option<AudioSource>); 9] = [
        ("photo.webp", None),
        ("photo.gif", None),
        ("photo.png", None),
        ("photo.jpg", None),
        ("voice.mp3", Some(AudioSource::Mp3)),
        ("voice.m4a", Some(AudioSource::M4a)),
        ("voice.aac", Some(AudioSource::Aac)),
        ("voice.wav", Some(AudioSource::Wav)),
        ("voice-vorbis.ogg", Some(AudioSource::OggVorbis)),
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (name, source) in cases {
        let original = fixture(name);
        let (mut ok, mut err) = (0, 0);
        for round in 0..150 {
            let mut bytes = original.clone();
            let len = bytes.len() as u64;
            match round % 3 {
                0 => {
                    for _ in 0..1 + next() % 16 {
                        let i = (next() % len) as usize;
                        bytes[i] = next() as u8;
                    }
                }
                1 => bytes.truncate((next() % len) as usize),
                _ => {
                    let i = (next() % len) as usize;
                    let n = (next() % 64) as usize;
                    let junk: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    bytes.splice(i..i, junk);
                }
            }
            let result = match source {
                None => to_jpeg(&bytes).map(|_| ()),
                Some(s) => to_ogg_opus(&bytes, s).map(|_| ()),
            };
            if result.is_ok() { ok += 1 } else { err += 1 }
        }
        eprintln!("{name}: {ok} converted, {err} refused");
    }
}
