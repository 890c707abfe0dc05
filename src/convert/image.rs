//! image owns still-image conversion: any JPEG/PNG/GIF/WebP in, one baseline JPEG out that
//! WhatsApp shows as a photo. It decodes under a pixel budget, applies the EXIF orientation,
//! flattens transparency onto white, shrinks to `MAX_JPEG_SIDE` and encodes.
//!
//! Orientation: JPEG, PNG (`eXIf`) and WebP (the `EXIF` chunk of the extended format) can
//! carry an EXIF orientation and the decoder reports it, so it is applied before resizing.
//! GIF has no EXIF container at all, so a GIF is always upright as stored.

use std::io::Cursor;

// `::image` is the external crate; plain `image` would name this module.
use ::image::codecs::jpeg::JpegEncoder;
use ::image::imageops::FilterType;
use ::image::{
    DynamicImage, ExtendedColorType, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits,
    RgbImage,
};

use super::{ConvertError, Converted, MAX_IMAGE_PIXELS, MAX_JPEG_BYTES, MAX_JPEG_SIDE};

/// JPEG qualities tried in order until the result fits `MAX_JPEG_BYTES`. 85 is visually
/// transparent for photos; at 1600 px the first step nearly always fits, the rest exist for
/// pathological noise.
const QUALITIES: [u8; 6] = [85, 75, 65, 55, 45, 35];

/// The resize filter. Measured resizing a 4000x3000 RGB image to 1600x1200 (release, 2
/// shared cores, `benches/convert.rs`): Lanczos3 ~450 ms, CatmullRom ~365 ms, Triangle
/// ~215 ms. CatmullRom (bicubic) is visually indistinguishable from Lanczos3 at a 2.5x
/// reduction for a third less time; Triangle starts to soften fine detail.
const FILTER: FilterType = FilterType::CatmullRom;

/// Decode `input` (JPEG, PNG, GIF first frame, or WebP), orient, flatten, shrink to at most
/// 1600 px on the longest side and encode as JPEG under 5 MiB.
pub fn to_jpeg(input: &[u8]) -> Result<Converted, ConvertError> {
    super::guarded("image", || convert(input))
}

fn convert(input: &[u8]) -> Result<Converted, ConvertError> {
    let (img, format) = decode(input)?;
    let rgb = flatten_to_rgb8(img);
    let rgb = shrink(rgb);
    let (width, height) = rgb.dimensions();
    let bytes = encode_under_limit(&rgb)?;
    tracing::debug!(
        source = format,
        width,
        height,
        bytes = bytes.len(),
        "converted image to jpeg"
    );
    Ok(Converted {
        bytes,
        width: Some(width),
        height: Some(height),
        duration_ms: None,
    })
}

/// Decode under the pixel budget and apply the EXIF orientation. Returns the format's name
/// for errors and logs.
fn decode(input: &[u8]) -> Result<(DynamicImage, &'static str), ConvertError> {
    let reader = ImageReader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(|e| decode_err("image", e.to_string()))?;
    let format = match reader.format() {
        Some(ImageFormat::Jpeg) => "jpeg",
        Some(ImageFormat::Png) => "png",
        Some(ImageFormat::Gif) => "gif",
        Some(ImageFormat::WebP) => "webp",
        _ => {
            return Err(ConvertError::Unsupported {
                format: "image",
                why: "not a JPEG, PNG, GIF or WebP image",
            });
        }
    };
    let mut reader = reader;
    reader.limits(limits());
    let mut decoder = reader.into_decoder().map_err(|e| image_err(format, e))?;

    // The header is parsed now; refuse before the pixel buffer exists. The per-side limits
    // in `limits()` cannot express an area bound, so it is checked here.
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_IMAGE_PIXELS {
        return Err(ConvertError::TooLarge {
            what: "image size in pixels",
            actual: pixels,
            limit: MAX_IMAGE_PIXELS,
        });
    }
    if pixels == 0 {
        return Err(decode_err(format, "image has no pixels".to_owned()));
    }

    // A broken EXIF block is not worth refusing the picture over: keep it as stored.
    let orientation = decoder.orientation().unwrap_or_else(|e| {
        tracing::debug!(error = %e, "ignoring unreadable EXIF orientation");
        ::image::metadata::Orientation::NoTransforms
    });
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| image_err(format, e))?;
    img.apply_orientation(orientation);
    Ok((img, format))
}

/// Memory bounds handed to the decoders. The area check in `decode` is the real budget;
/// these catch decoders that allocate by side length or for intermediate buffers.
fn limits() -> Limits {
    let mut limits = Limits::default();
    // 40 MP at 16-bit RGBA (PNG can be 16-bit) is 320 MB; allow that and no more.
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8);
    // No real photo is wider than this; a 1x40M-pixel strip is an attack, not a picture.
    limits.max_image_width = Some(65_535);
    limits.max_image_height = Some(65_535);
    limits
}

/// Convert to 8-bit RGB. Transparent pixels are composited onto white, since JPEG has no
/// alpha and a phone's viewer shows white behind a transparent logo, not black.
fn flatten_to_rgb8(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u16::from(src[3]);
        for c in 0..3 {
            // out = c*a + 255*(1-a), in 0..=255 integer arithmetic with rounding; the
            // result is at most (255*255 + 127) / 255 = 255, so the cast cannot truncate.
            let v = (u16::from(src[c]) * a + 255 * (255 - a) + 127) / 255;
            dst[c] = v as u8;
        }
    }
    out
}

/// Shrink so the longest side is at most `MAX_JPEG_SIDE`, keeping the aspect ratio.
/// Never enlarges.
fn shrink(rgb: RgbImage) -> RgbImage {
    let (w, h) = rgb.dimensions();
    let longest = w.max(h);
    if longest <= MAX_JPEG_SIDE {
        return rgb;
    }
    let (nw, nh) = fit(w, h, MAX_JPEG_SIDE);
    ::image::imageops::resize(&rgb, nw, nh, FILTER)
}

/// New dimensions with the longest side equal to `max`, rounded to the nearest pixel and
/// never zero (a 1x10000 strip still gives a 1-pixel-wide image).
fn fit(w: u32, h: u32, max: u32) -> (u32, u32) {
    let (long, short) = if w >= h { (w, h) } else { (h, w) };
    let scaled = (u64::from(short) * u64::from(max) + u64::from(long) / 2) / u64::from(long);
    // `scaled` <= max because short <= long, so it fits in u32.
    let scaled = u32::try_from(scaled).unwrap_or(max).max(1);
    if w >= h { (max, scaled) } else { (scaled, max) }
}

/// Encode at quality 85, stepping down until the file fits `MAX_JPEG_BYTES`.
fn encode_under_limit(rgb: &RgbImage) -> Result<Vec<u8>, ConvertError> {
    let (w, h) = rgb.dimensions();
    let mut last_len = 0;
    for quality in QUALITIES {
        let mut out = Vec::with_capacity(256 * 1024);
        JpegEncoder::new_with_quality(&mut out, quality)
            .encode(rgb.as_raw(), w, h, ExtendedColorType::Rgb8)
            .map_err(|e| ConvertError::Encode(format!("jpeg: {e}")))?;
        if out.len() < MAX_JPEG_BYTES {
            return Ok(out);
        }
        tracing::debug!(
            quality,
            bytes = out.len(),
            "jpeg over the limit, stepping down"
        );
        last_len = out.len();
    }
    Err(ConvertError::TooLarge {
        what: "jpeg bytes at the lowest quality",
        actual: last_len as u64,
        limit: MAX_JPEG_BYTES as u64,
    })
}

fn image_err(format: &'static str, e: ImageError) -> ConvertError {
    match e {
        ImageError::Limits(l) => ConvertError::Decode {
            format,
            detail: format!("over the memory limit: {l}"),
        },
        ImageError::Unsupported(u) => ConvertError::Decode {
            format,
            detail: format!("unsupported variant: {u}"),
        },
        other => decode_err(format, other.to_string()),
    }
}

fn decode_err(format: &'static str, detail: String) -> ConvertError {
    ConvertError::Decode { format, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_never_zero() {
        assert_eq!(fit(4000, 3000, 1600), (1600, 1200));
        assert_eq!(fit(3000, 4000, 1600), (1200, 1600));
        assert_eq!(fit(20000, 1, 1600), (1600, 1));
        assert_eq!(fit(1, 60000, 1600), (1, 1600));
    }

    #[test]
    fn alpha_flattens_onto_white() {
        let mut img = ::image::RgbaImage::new(2, 1);
        img.put_pixel(0, 0, ::image::Rgba([0, 0, 0, 0]));
        img.put_pixel(1, 0, ::image::Rgba([10, 20, 30, 255]));
        let rgb = flatten_to_rgb8(DynamicImage::ImageRgba8(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [10, 20, 30]);
    }
}
