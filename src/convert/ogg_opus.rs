//! ogg_opus owns the Ogg/Opus byte format: it encodes mono 48 kHz PCM with libopus into an
//! Ogg stream (RFC 7845) whose granule positions give the exact duration, and reads that
//! duration back from any Ogg/Opus file. It knows nothing of where the PCM came from.

use ogg::writing::{PacketWriteEndInfo, PacketWriter};

use super::ConvertError;

/// Opus always decodes at 48 kHz; granule positions count 48 kHz samples.
pub(super) const RATE: u32 = 48_000;
/// 20 ms at 48 kHz: WhatsApp's own voice notes use 20 ms frames.
const FRAME: usize = 960;
/// Voice at 32 kbit/s is what WhatsApp itself sends; higher only grows the file.
const BITRATE: i32 = 32_000;
/// Our logical stream's serial. Fixed, so the same input gives the same bytes (stable ETag).
const SERIAL: u32 = 0x6d6c_6e6b; // "mlnk"
/// Close a page about once a second (50 packets) so players can seek and stream.
const PACKETS_PER_PAGE: u64 = 50;

/// Opus encoder plus Ogg muxer. Header pages first, then one packet per 20 ms frame; the
/// granule of packet `i` is `min((i+1)*960, pre_skip + samples)`, so the final page says
/// exactly how many samples to play.
pub(super) struct OpusMux {
    encoder: opus::Encoder,
    writer: PacketWriter<'static, Vec<u8>>,
    pre_skip: u64,
    frame: Vec<f32>,
    packet: Vec<u8>,
    /// The last encoded packet, held back until we know whether it ends the stream.
    held: Option<Vec<u8>>,
    packets: u64,
    pub(super) samples: u64,
}

impl OpusMux {
    pub(super) fn new(input_rate: u32) -> Result<Self, ConvertError> {
        let enc_err = |e: opus::Error| ConvertError::Encode(format!("opus: {e}"));
        let mut encoder = opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Voip)
            .map_err(enc_err)?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(BITRATE))
            .map_err(enc_err)?;
        // The lookahead is the decoder's delay: players skip it (pre-skip) so speech starts
        // at sample 0. libopus reports 312 at 48 kHz in VoIP mode.
        let lookahead = encoder.get_lookahead().map_err(enc_err)?;
        let pre_skip = u16::try_from(lookahead)
            .map_err(|_| ConvertError::Encode(format!("opus lookahead {lookahead}")))?;

        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&input_rate.to_le_bytes()); // informational only
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // mapping family 0: mono/stereo, no table

        let vendor = opus::version().as_bytes();
        let mut tags = Vec::with_capacity(16 + vendor.len());
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments

        let mut writer = PacketWriter::new(Vec::with_capacity(64 * 1024));
        // Each header must sit alone on its page (RFC 7845 section 3), granule 0.
        for header in [head, tags] {
            writer
                .write_packet(header, SERIAL, PacketWriteEndInfo::EndPage, 0)
                .map_err(|e| ConvertError::Encode(format!("ogg: {e}")))?;
        }
        Ok(OpusMux {
            encoder,
            writer,
            pre_skip: u64::from(pre_skip),
            frame: Vec::with_capacity(FRAME),
            // 1275 bytes is the largest single Opus frame (RFC 6716 section 3.4).
            packet: vec![0; 1275],
            held: None,
            packets: 0,
            samples: 0,
        })
    }

    pub(super) fn push(&mut self, mut samples: &[f32]) -> Result<(), ConvertError> {
        self.samples += samples.len() as u64;
        while !samples.is_empty() {
            let take = (FRAME - self.frame.len()).min(samples.len());
            self.frame.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.frame.len() == FRAME {
                self.encode_frame()?;
            }
        }
        Ok(())
    }

    fn encode_frame(&mut self) -> Result<(), ConvertError> {
        let n = self
            .encoder
            .encode_float(&self.frame, &mut self.packet)
            .map_err(|e| ConvertError::Encode(format!("opus: {e}")))?;
        self.frame.clear();
        let packet = self.packet[..n].to_vec();
        if let Some(prev) = self.held.replace(packet) {
            self.write(prev, false)?;
        }
        Ok(())
    }

    fn write(&mut self, packet: Vec<u8>, last: bool) -> Result<(), ConvertError> {
        self.packets += 1;
        let end = self.pre_skip + self.samples;
        let granule = (self.packets * FRAME as u64).min(end);
        let info = if last {
            PacketWriteEndInfo::EndStream
        } else if self.packets.is_multiple_of(PACKETS_PER_PAGE) {
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        self.writer
            .write_packet(packet, SERIAL, info, granule)
            .map_err(|e| ConvertError::Encode(format!("ogg: {e}")))
    }

    /// Pad with silence until the decoder has produced `pre_skip + samples`, write the
    /// last packet as end of stream. Returns the file and the number of real samples.
    pub(super) fn finish(mut self) -> Result<(Vec<u8>, u64), ConvertError> {
        let end = self.pre_skip + self.samples;
        let written = |m: &Self| (m.packets + u64::from(m.held.is_some())) * FRAME as u64;
        while written(&self) < end {
            self.frame.resize(FRAME, 0.0);
            self.encode_frame()?;
        }
        match self.held.take() {
            Some(last) => self.write(last, true)?,
            None => return Err(ConvertError::Encode("no audio to encode".to_owned())),
        }
        Ok((self.writer.into_inner(), self.samples))
    }
}

/// Duration of an Ogg/Opus stream in milliseconds: `(last granule - pre_skip) / 48000`.
/// Reads page headers only (no CRC check, no decoding); `None` when the bytes are not an
/// Ogg stream whose first packet is an `OpusHead`.
pub fn ogg_opus_duration_ms(bytes: &[u8]) -> Option<u64> {
    let mut pos = 0usize;
    let mut opus: Option<(u32, u64)> = None; // (serial, pre_skip)
    let mut last_granule: Option<u64> = None;
    while pos < bytes.len() {
        let header = bytes.get(pos..pos.checked_add(27)?)?;
        if &header[..4] != b"OggS" || header[4] != 0 {
            return None;
        }
        let granule = u64::from_le_bytes(header[6..14].try_into().ok()?);
        let serial = u32::from_le_bytes(header[14..18].try_into().ok()?);
        let nsegs = usize::from(header[26]);
        let lacing = bytes.get(pos + 27..pos + 27 + nsegs)?;
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let body_start = pos + 27 + nsegs;
        let body = bytes.get(body_start..body_start + body_len)?;
        match opus {
            None => {
                // The first page of an Opus stream carries only the 19+ byte OpusHead.
                if body.len() < 19 || &body[..8] != b"OpusHead" {
                    return None;
                }
                let pre_skip = u16::from_le_bytes([body[10], body[11]]);
                opus = Some((serial, u64::from(pre_skip)));
            }
            // -1 marks a page on which no packet ends; it says nothing about time.
            Some((s, _)) if s == serial && granule != u64::MAX => last_granule = Some(granule),
            Some(_) => {}
        }
        pos = body_start + body_len;
    }
    let (_, pre_skip) = opus?;
    let samples = last_granule?.checked_sub(pre_skip)?;
    Some(samples * 1000 / u64::from(RATE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_of_hostile_bytes_is_none() {
        assert_eq!(ogg_opus_duration_ms(b""), None);
        assert_eq!(ogg_opus_duration_ms(b"OggS"), None);
        let mut page = b"OggS\0\x02".to_vec();
        page.extend_from_slice(&[0xff; 21]); // 255 segments promised, none present
        assert_eq!(ogg_opus_duration_ms(&page), None);
    }
}
