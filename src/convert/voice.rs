//! voice owns audio conversion to the one thing WhatsApp plays as a voice note: mono Ogg/Opus
//! at 48 kHz. It streams: decode a packet (symphonia), downmix, resample (rubato FFT) and hand
//! the samples to `ogg_opus` (libopus, 20 ms frames, Ogg pages), so memory stays at the size
//! of the output no matter how long the input is.

use std::io::{Cursor, ErrorKind};

use rubato::audioadapter_buffers::direct::SequentialSliceOfSlices;
use rubato::{Fft, FixedSync, Indexing, Resampler};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::ogg_opus::{OpusMux, RATE};
use super::{ConvertError, Converted, MAX_AUDIO_MS};

/// Input rates we accept. Outside this range the file is broken or hostile, and a coprime
/// rate would make the FFT resampler's block size grow with the rate.
const MIN_RATE: u32 = 8_000;
const MAX_RATE: u32 = 192_000;

/// What the caller sniffed the audio as. It is only a hint: symphonia probes the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioSource {
    Mp3,
    M4a,
    /// Raw AAC in ADTS frames.
    Aac,
    Wav,
    OggVorbis,
    AmrNb,
}

impl AudioSource {
    fn name(self) -> &'static str {
        match self {
            AudioSource::Mp3 => "mp3",
            AudioSource::M4a => "m4a",
            AudioSource::Aac => "aac",
            AudioSource::Wav => "wav",
            AudioSource::OggVorbis => "ogg-vorbis",
            AudioSource::AmrNb => "amr",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            AudioSource::OggVorbis => "ogg",
            other => other.name(),
        }
    }
}

/// Decode `input`, downmix to mono, resample to 48 kHz and encode as Ogg/Opus (VoIP mode,
/// 32 kbit/s, 20 ms frames) whose granule positions give the source's exact duration.
pub fn to_ogg_opus(input: &[u8], source: AudioSource) -> Result<Converted, ConvertError> {
    if source == AudioSource::AmrNb {
        // symphonia has no AMR decoder; the one that works (Debian's opencore-amrnb) is a C
        // library we would have to bind and ship. Whether to refuse the link or serve the
        // AMR unconverted is the caller's policy, not ours.
        return Err(ConvertError::Unsupported {
            format: "amr",
            why: "AMR-NB cannot be decoded here (no AMR decoder is built in)",
        });
    }
    super::guarded(source.name(), || convert(input, source))
}

fn convert(input: &[u8], source: AudioSource) -> Result<Converted, ConvertError> {
    let format = source.name();
    let mut src = Source::open(input, source)?;
    let mut resampler =
        Resample::new(src.rate).map_err(|e| ConvertError::Unsupported { format, why: e })?;
    let mut mux = OpusMux::new(src.rate)?;

    let max_frames = MAX_AUDIO_MS * u64::from(src.rate) / 1000;
    let mut input_frames: u64 = 0;
    let mut mono = Vec::new();
    while src.next_mono(&mut mono)? {
        input_frames += mono.len() as u64;
        if input_frames > max_frames {
            return Err(too_long(input_frames, src.rate));
        }
        resampler.push(&mono, &mut mux)?;
    }
    if input_frames == 0 {
        return Err(decode_err(format, "no audio frames decoded"));
    }
    // MP3 frames are self-delimiting, so a cut MP3 reads as a shorter one. When the
    // container states its length (Xing/LAME, WAV, MP4), a shortfall of more than 100 ms
    // (well over any encoder delay or padding) is a truncation, not a shorter recording.
    if let Some(stated) = src.stated_frames
        && input_frames + u64::from(src.rate) / 10 < stated
    {
        return Err(ConvertError::Decode {
            format,
            detail: format!("truncated stream: {input_frames} of {stated} frames"),
        });
    }
    resampler.finish(&mut mux)?;
    let (bytes, samples) = mux.finish()?;
    let duration_ms = samples * 1000 / u64::from(RATE);
    tracing::debug!(
        source = format,
        input_rate = src.rate,
        duration_ms,
        bytes = bytes.len(),
        "converted audio to ogg/opus"
    );
    Ok(Converted {
        bytes,
        width: None,
        height: None,
        duration_ms: Some(duration_ms),
    })
}

fn too_long(frames: u64, rate: u32) -> ConvertError {
    ConvertError::TooLarge {
        what: "audio duration in ms",
        actual: frames * 1000 / u64::from(rate.max(1)),
        limit: MAX_AUDIO_MS,
    }
}

/// A demuxer and decoder over the input, yielding mono f32 blocks.
struct Source<'a> {
    format: &'static str,
    reader: Box<dyn FormatReader + 'a>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    rate: u32,
    /// The length the container states, if it does.
    stated_frames: Option<u64>,
    planes: Vec<Vec<f32>>,
    good_packets: u64,
    bad_packets: u64,
}

impl<'a> Source<'a> {
    fn open(input: &'a [u8], source: AudioSource) -> Result<Self, ConvertError> {
        let format = source.name();
        let mss = MediaSourceStream::new(Box::new(Cursor::new(input)), Default::default());
        let mut hint = Hint::new();
        hint.with_extension(source.extension());
        let reader = symphonia::default::get_probe()
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| sym_err(format, e))?;
        let track = reader
            .default_track(TrackType::Audio)
            .ok_or_else(|| decode_err(format, "no audio track"))?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| decode_err(format, "no audio codec parameters"))?;
        let rate = params
            .sample_rate
            .ok_or_else(|| decode_err(format, "no sample rate"))?;
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(ConvertError::Unsupported {
                format,
                why: "sample rate outside 8-192 kHz",
            });
        }
        // Refuse early when the container states the length; `to_ogg_opus` also counts
        // decoded frames, for containers that do not.
        if let Some(n) = track.num_frames
            && n > MAX_AUDIO_MS * u64::from(rate) / 1000
        {
            return Err(too_long(n, rate));
        }
        let track_id = track.id;
        let stated_frames = track.num_frames;
        tracing::trace!(format, rate, ?stated_frames, "opened audio");
        // Gapless (the default) trims encoder delay and padding where the container says
        // how much (LAME/iTunes tags), so the output length matches the source's.
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())
            .map_err(|e| sym_err(format, e))?;
        Ok(Source {
            format,
            reader,
            decoder,
            track_id,
            rate,
            stated_frames,
            planes: Vec::new(),
            good_packets: 0,
            bad_packets: 0,
        })
    }

    /// Decode the next packet of our track into `mono` (replacing its contents). Returns
    /// false at the end of the stream.
    fn next_mono(&mut self, mono: &mut Vec<f32>) -> Result<bool, ConvertError> {
        loop {
            let packet = match self.reader.next_packet() {
                Ok(Some(p)) => p,
                // End of stream, or a chained Ogg stream starting: we convert the first.
                Ok(None) | Err(SymError::ResetRequired) => return Ok(false),
                // A stream cut short: converting what is left would send a silently
                // shortened voice note, so refuse instead.
                Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                    return Err(decode_err(self.format, "truncated stream"));
                }
                Err(e) => return Err(sym_err(self.format, e)),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let buf = match self.decoder.decode(&packet) {
                Ok(buf) => buf,
                // One bad packet (a damaged frame, an MP3 frame whose bit reservoir is
                // missing) is skipped as every player does; a stream of them is garbage.
                Err(SymError::DecodeError(why)) => {
                    self.bad_packets += 1;
                    if self.bad_packets > 8 + self.good_packets / 10 {
                        return Err(ConvertError::Decode {
                            format: self.format,
                            detail: format!("too many undecodable packets (last: {why})"),
                        });
                    }
                    continue;
                }
                Err(e) => return Err(sym_err(self.format, e)),
            };
            if buf.spec().rate() != self.rate {
                return Err(ConvertError::Unsupported {
                    format: self.format,
                    why: "sample rate changes mid-stream",
                });
            }
            self.good_packets += 1;
            buf.copy_to_vecs_planar::<f32>(&mut self.planes);
            downmix(&self.planes, mono);
            return Ok(true);
        }
    }
}

/// Average all channels into one. Averaging (not summing) cannot clip.
fn downmix(planes: &[Vec<f32>], mono: &mut Vec<f32>) {
    mono.clear();
    let Some(first) = planes.first() else {
        return;
    };
    mono.extend_from_slice(first);
    if planes.len() > 1 {
        for plane in &planes[1..] {
            for (m, s) in mono.iter_mut().zip(plane) {
                *m += *s;
            }
        }
        let scale = 1.0 / planes.len() as f32;
        mono.iter_mut().for_each(|m| *m *= scale);
    }
}

/// Streaming mono resampler to 48 kHz that trims rubato's startup delay and flushes its
/// tail, so exactly `ceil(n * 48000 / rate)` samples come out for `n` in.
struct Resample {
    /// `None` when the input is already 48 kHz.
    fft: Option<Fft<f32>>,
    rate: u32,
    pending: Vec<f32>,
    out: Vec<f32>,
    /// Output frames still to drop: the resampler's delay.
    to_trim: usize,
    frames_in: u64,
    frames_out: u64,
}

impl Resample {
    fn new(rate: u32) -> Result<Self, &'static str> {
        let fft = if rate == RATE {
            None
        } else {
            Some(
                Fft::<f32>::new(rate as usize, RATE as usize, 1024, 1, FixedSync::Input)
                    .map_err(|_| "unsupported sample rate for resampling")?,
            )
        };
        let (out_len, to_trim) = fft
            .as_ref()
            .map_or((0, 0), |f| (f.output_frames_max(), f.output_delay()));
        Ok(Resample {
            fft,
            rate,
            pending: Vec::new(),
            out: vec![0.0; out_len],
            to_trim,
            frames_in: 0,
            frames_out: 0,
        })
    }

    fn push(&mut self, input: &[f32], mux: &mut OpusMux) -> Result<(), ConvertError> {
        self.frames_in += input.len() as u64;
        if self.fft.is_none() {
            self.frames_out += input.len() as u64;
            return mux.push(input);
        }
        self.pending.extend_from_slice(input);
        let mut start = 0;
        loop {
            let need = self.fft.as_ref().map_or(0, |f| f.input_frames_next());
            if need == 0 || self.pending.len() - start < need {
                break;
            }
            let end = start + need;
            self.run(start, end, None, mux)?;
            start = end;
        }
        self.pending.drain(..start);
        Ok(())
    }

    /// Feed what is pending as a final partial block, then silence until every input
    /// sample has come out, and cut the output at the exact expected length.
    fn finish(&mut self, mux: &mut OpusMux) -> Result<(), ConvertError> {
        if self.fft.is_none() {
            return Ok(());
        }
        let expected = (self.frames_in * u64::from(RATE)).div_ceil(u64::from(self.rate));
        let need = self.fft.as_ref().map_or(0, |f| f.input_frames_next());
        let left = self.pending.len();
        self.pending.resize(need.max(left), 0.0);
        let mut partial = left;
        // Each pass produces a block; the bound only guards against a resampler that
        // stops producing output, which would otherwise loop forever.
        for _ in 0..64 {
            if self.frames_out >= expected {
                break;
            }
            let len = self.pending.len();
            self.run(0, len, Some((partial, expected)), mux)?;
            partial = 0;
        }
        Ok(())
    }

    /// Resample `pending[start..end]` (only the first `partial.0` frames real when given)
    /// and pass the output, minus the delay and beyond `partial.1` total, to the encoder.
    fn run(
        &mut self,
        start: usize,
        end: usize,
        partial: Option<(usize, u64)>,
        mux: &mut OpusMux,
    ) -> Result<(), ConvertError> {
        let Some(fft) = self.fft.as_mut() else {
            return Ok(());
        };
        let resample_err = |e: String| ConvertError::Encode(format!("resample: {e}"));
        let input: [&[f32]; 1] = [&self.pending[start..end]];
        let input = SequentialSliceOfSlices::new(&input, 1, end - start)
            .map_err(|e| resample_err(e.to_string()))?;
        let out_len = self.out.len();
        let mut output: [&mut [f32]; 1] = [&mut self.out[..]];
        let mut output = SequentialSliceOfSlices::new_mut(&mut output, 1, out_len)
            .map_err(|e| resample_err(e.to_string()))?;
        let indexing = partial.map(|(n, _)| Indexing::new().partial_len(n));
        let (_, produced) = fft
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|e| resample_err(e.to_string()))?;
        let trim = self.to_trim.min(produced);
        self.to_trim -= trim;
        let mut block = &self.out[trim..produced];
        if let Some((_, expected)) = partial {
            let room = expected.saturating_sub(self.frames_out);
            block = &block[..block.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        }
        self.frames_out += block.len() as u64;
        mux.push(block)
    }
}

fn decode_err(format: &'static str, detail: &str) -> ConvertError {
    ConvertError::Decode {
        format,
        detail: detail.to_owned(),
    }
}

fn sym_err(format: &'static str, e: SymError) -> ConvertError {
    match e {
        SymError::Unsupported(what) => ConvertError::Decode {
            format,
            detail: format!("unsupported or unrecognised: {what}"),
        },
        SymError::LimitError(what) => ConvertError::Decode {
            format,
            detail: format!("over a decoder limit: {what}"),
        },
        other => ConvertError::Decode {
            format,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downmix_averages_channels() {
        let mut mono = Vec::new();
        downmix(&[vec![1.0, 0.5], vec![0.0, -0.5]], &mut mono);
        assert_eq!(mono, vec![0.5, 0.0]);
    }

    #[test]
    fn resampler_output_length_is_exact() {
        for rate in [8_000u32, 22_050, 44_100, 16_000] {
            let mut r = Resample::new(rate).expect("resampler");
            let mut mux = OpusMux::new(rate).expect("mux");
            let n = 12_345usize;
            let input: Vec<f32> = (0..n).map(|i| (i as f32 * 0.01).sin() * 0.3).collect();
            for chunk in input.chunks(1152) {
                r.push(chunk, &mut mux).expect("push");
            }
            r.finish(&mut mux).expect("finish");
            let expected = (n as u64 * 48_000).div_ceil(u64::from(rate));
            assert_eq!(r.frames_out, expected, "rate {rate}");
            assert_eq!(mux.samples, expected, "rate {rate}");
        }
    }
}
