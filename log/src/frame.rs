//! Frames: the records of the log. An append to one stream is one frame; an append to several
//! streams is one frame per stream, written together as a *unit*: every frame of the unit but
//! the last carries the [`FRAME_CONTINUES`] flag, and recovery keeps a unit whole or not at all.
//! So a read of one stream checks and decodes only that stream's frames.
//!
//! | offset | size | field            | meaning                                               |
//! |-------:|-----:|------------------|-------------------------------------------------------|
//! |      0 |    4 | `magic`          | [`FRAME_MAGIC`], finds frame starts when scanning       |
//! |      4 |    4 | `payload_len`    | length of the payload in bytes, <= [`FRAME_PAYLOAD_SIZE_MAX`] |
//! |      8 |    4 | `crc`            | CRC32 of bytes 4..8 and 12..32+payload_len            |
//! |     12 |    8 | `first_position` | global position of the frame's first event            |
//! |     20 |    8 | `durable_position` | the log's durable end when this frame was written   |
//! |     28 |    4 | `event_count`    | number of events in the frame, >= 1; bit 31 is [`FRAME_CONTINUES`] |
//! |     32 |    n | payload          | postcard-encoded [`crate::record::FramePayload`]        |
//!
//! All integers are little endian. The CRC covers the length so that a torn or flipped length
//! is detected, and the position so that a frame copied to the wrong place is detected.
//!
//! `durable_position` lets recovery tell a torn unsynced group from real corruption: a valid
//! frame found after a damaged one proves the damaged one was durable (and so acknowledged)
//! only if its `durable_position` lies beyond the damaged frame's position.

use crate::error::{LogError, Result};

/// Marks the start of a frame ("OXFR").
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"OXFR");
const MAGIC_OFFSET: usize = 0;
const LEN_OFFSET: usize = MAGIC_OFFSET + 4;
const CRC_OFFSET: usize = LEN_OFFSET + 4;
const POSITION_OFFSET: usize = CRC_OFFSET + 4;
const DURABLE_OFFSET: usize = POSITION_OFFSET + 8;
const COUNT_OFFSET: usize = DURABLE_OFFSET + 8;
/// Size of the fixed frame header.
pub const FRAME_HEADER_SIZE: usize = COUNT_OFFSET + 4;
/// The largest payload a frame may carry (and the largest length accepted from disk).
pub const FRAME_PAYLOAD_SIZE_MAX: usize = 128 * 1024 * 1024;
/// The most events one frame may hold.
pub const FRAME_EVENT_COUNT_MAX: u32 = 1 << 20;
/// Bit of the `event_count` word set on every frame of a unit but its last: the append goes
/// on in the next frame.
pub const FRAME_CONTINUES: u32 = 1 << 31;

const _: () = assert!(FRAME_HEADER_SIZE == 32);

/// The fixed header of a frame, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the payload.
    pub payload_len: u32,
    /// Stored CRC.
    pub crc: u32,
    /// Global position of the first event.
    pub first_position: u64,
    /// Durable end of the log (a position) when the frame was written.
    pub durable_position: u64,
    /// Number of events.
    pub event_count: u32,
    /// The frame's append goes on in the next frame ([`FRAME_CONTINUES`]).
    pub continues: bool,
}

impl FrameHeader {
    /// Total size of the frame on disk.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_SIZE as u64 + u64::from(self.payload_len)
    }
    /// Position just after this frame's last event.
    pub fn next_position(&self) -> u64 {
        self.first_position + u64::from(self.event_count)
    }
}

/// Why a header or frame failed to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameDefect {
    /// Fewer bytes than a header.
    ShortHeader,
    /// The magic is wrong.
    BadMagic,
    /// The length or the event count is out of bounds.
    BadLength,
    /// The payload extends past the available bytes.
    ShortPayload,
    /// The CRC does not match.
    BadCrc,
}

impl std::fmt::Display for FrameDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            FrameDefect::ShortHeader => "incomplete frame header",
            FrameDefect::BadMagic => "bad frame magic",
            FrameDefect::BadLength => "frame length or event count out of bounds",
            FrameDefect::ShortPayload => "frame payload extends past the end of the segment",
            FrameDefect::BadCrc => "frame checksum mismatch",
        };
        f.write_str(s)
    }
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Decodes and bounds-checks a frame header (not the CRC, which needs the payload).
pub fn decode_header(bytes: &[u8]) -> Result<FrameHeader, FrameDefect> {
    let (
        Some(magic),
        Some(payload_len),
        Some(crc),
        Some(first_position),
        Some(durable_position),
        Some(count_word),
    ) = (
        read_u32(bytes, MAGIC_OFFSET),
        read_u32(bytes, LEN_OFFSET),
        read_u32(bytes, CRC_OFFSET),
        read_u64(bytes, POSITION_OFFSET),
        read_u64(bytes, DURABLE_OFFSET),
        read_u32(bytes, COUNT_OFFSET),
    )
    else {
        return Err(FrameDefect::ShortHeader);
    };
    if magic != FRAME_MAGIC {
        return Err(FrameDefect::BadMagic);
    }
    let continues = count_word & FRAME_CONTINUES != 0;
    let event_count = count_word & !FRAME_CONTINUES;
    if payload_len as usize > FRAME_PAYLOAD_SIZE_MAX
        || event_count == 0
        || event_count > FRAME_EVENT_COUNT_MAX
        || first_position.checked_add(u64::from(event_count)).is_none()
        || durable_position > first_position
    {
        return Err(FrameDefect::BadLength);
    }
    Ok(FrameHeader {
        payload_len,
        crc,
        first_position,
        durable_position,
        event_count,
        continues,
    })
}

fn checksum(len_bytes: &[u8], rest: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len_bytes);
    h.update(rest);
    h.finalize()
}

/// Decodes a whole frame from the start of `bytes`: the header, bounds and CRC.
/// Returns the header and the payload slice.
pub fn decode_frame(bytes: &[u8]) -> Result<(FrameHeader, &[u8]), FrameDefect> {
    let header = decode_header(bytes)?;
    let end = FRAME_HEADER_SIZE + header.payload_len as usize;
    let (Some(len_bytes), Some(covered)) = (
        bytes.get(LEN_OFFSET..LEN_OFFSET + 4),
        bytes.get(POSITION_OFFSET..end),
    ) else {
        return Err(FrameDefect::ShortPayload);
    };
    if checksum(len_bytes, covered) != header.crc {
        return Err(FrameDefect::BadCrc);
    }
    let payload = bytes
        .get(FRAME_HEADER_SIZE..end)
        .ok_or(FrameDefect::ShortPayload)?;
    Ok((header, payload))
}

/// Appends one frame to `out`, payload produced by `write_payload` directly into the buffer
/// (no intermediate copy). Checks the payload size before committing it to the buffer.
pub fn encode_frame_with(
    out: &mut Vec<u8>,
    first_position: u64,
    durable_position: u64,
    event_count: u32,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    encode_unit_frame_with(
        out,
        first_position,
        durable_position,
        event_count,
        false,
        write_payload,
    )
}

/// [`encode_frame_with`] for a frame of a unit: `continues` sets [`FRAME_CONTINUES`] (the
/// unit goes on in the next frame).
pub fn encode_unit_frame_with(
    out: &mut Vec<u8>,
    first_position: u64,
    durable_position: u64,
    event_count: u32,
    continues: bool,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    assert!((1..=FRAME_EVENT_COUNT_MAX).contains(&event_count));
    assert!(durable_position <= first_position);
    let start = out.len();
    let count_word = if continues {
        event_count | FRAME_CONTINUES
    } else {
        event_count
    };
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    out.extend_from_slice(&[0u8; 8]); // length and CRC, patched below
    out.extend_from_slice(&first_position.to_le_bytes());
    out.extend_from_slice(&durable_position.to_le_bytes());
    out.extend_from_slice(&count_word.to_le_bytes());
    if let Err(e) = write_payload(out) {
        out.truncate(start);
        return Err(e);
    }
    let payload_len = out.len() - start - FRAME_HEADER_SIZE;
    if payload_len > FRAME_PAYLOAD_SIZE_MAX {
        out.truncate(start);
        return Err(LogError::TooLarge {
            size: payload_len as u64,
            max: FRAME_PAYLOAD_SIZE_MAX as u64,
        });
    }
    let len_bytes = (payload_len as u32).to_le_bytes();
    let crc = checksum(&len_bytes, &out[start + POSITION_OFFSET..]);
    out[start + LEN_OFFSET..start + LEN_OFFSET + 4].copy_from_slice(&len_bytes);
    out[start + CRC_OFFSET..start + CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert!(decode_frame(&out[start..]).is_ok());
    Ok(())
}

/// Encodes a frame around an already-encoded payload.
pub fn encode_frame(
    first_position: u64,
    durable_position: u64,
    event_count: u32,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(FRAME_HEADER_SIZE + payload.len());
    encode_frame_with(
        &mut out,
        first_position,
        durable_position,
        event_count,
        |o| {
            o.extend_from_slice(payload);
            Ok(())
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let f = encode_frame(42, 40, 3, b"hello").unwrap();
        assert_eq!(f.len(), FRAME_HEADER_SIZE + 5);
        let (h, p) = decode_frame(&f).unwrap();
        assert_eq!(h.first_position, 42);
        assert_eq!(h.event_count, 3);
        assert_eq!(h.next_position(), 45);
        assert_eq!(p, b"hello");
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let f = encode_frame(7, 0, 1, b"payload bytes").unwrap();
        for bit in 0..f.len() * 8 {
            let mut g = f.clone();
            g[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_frame(&g).is_err(), "flip of bit {bit} undetected");
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let f = encode_frame(7, 0, 1, b"payload bytes").unwrap();
        for len in 0..f.len() {
            assert!(decode_frame(&f[..len]).is_err(), "truncation to {len}");
        }
    }

    #[test]
    fn the_continues_flag_round_trips_apart_from_the_count() {
        for continues in [false, true] {
            let mut f = Vec::new();
            encode_unit_frame_with(&mut f, 9, 0, 2, continues, |o| {
                o.extend_from_slice(b"xy");
                Ok(())
            })
            .unwrap();
            let (h, _) = decode_frame(&f).unwrap();
            assert_eq!((h.event_count, h.continues), (2, continues));
            assert_eq!(h.next_position(), 11);
        }
        // The flag does not hide a count out of bounds.
        let mut f = encode_frame(0, 0, 1, b"x").unwrap();
        f[28..32].copy_from_slice(&(FRAME_CONTINUES | (FRAME_EVENT_COUNT_MAX + 1)).to_le_bytes());
        assert_eq!(decode_header(&f), Err(FrameDefect::BadLength));
        f[28..32].copy_from_slice(&FRAME_CONTINUES.to_le_bytes());
        assert_eq!(decode_header(&f), Err(FrameDefect::BadLength));
    }

    #[test]
    fn huge_length_rejected_before_reading() {
        let mut f = encode_frame(0, 0, 1, b"x").unwrap();
        f[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_header(&f), Err(FrameDefect::BadLength));
    }
}
