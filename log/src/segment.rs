//! Segment files: a fixed header followed by frames. File names carry the first position.
//!
//! | offset | size | field            | meaning                                        |
//! |-------:|-----:|------------------|------------------------------------------------|
//! |      0 |    8 | `magic`          | [`SEGMENT_MAGIC`], PNG-style: catches text-mode and truncation damage |
//! |      8 |    4 | `format_version` | [`SEGMENT_FORMAT_VERSION`]                      |
//! |     12 |    4 | reserved         | zero                                           |
//! |     16 |    8 | `first_position` | position of the first event; equals the name   |
//! |     24 |    4 | reserved         | zero                                           |
//! |     28 |    4 | `crc`            | CRC32 of bytes 0..28                           |
//!
//! The file is named `{first_position:020}.seg`, so a directory listing sorts in log order.

use std::path::Path;

use crate::error::{LogError, Result};
use crate::fs::Vfs;

/// Segment magic: `\x89OXLOG\r\n` would be 9 bytes; this is the 8-byte variant.
pub const SEGMENT_MAGIC: [u8; 8] = *b"\x89OXL\r\n\x1a\n";
/// Current segment format version.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const RESERVED_A_OFFSET: usize = VERSION_OFFSET + 4;
const POSITION_OFFSET: usize = RESERVED_A_OFFSET + 4;
const RESERVED_B_OFFSET: usize = POSITION_OFFSET + 8;
const CRC_OFFSET: usize = RESERVED_B_OFFSET + 4;
/// Size of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_SIZE: usize = CRC_OFFSET + 4;
const _: () = assert!(SEGMENT_HEADER_SIZE == 32);

/// Smallest segment size the log accepts (the test configuration uses it).
pub const SEGMENT_SIZE_MIN: u64 = 4096;
/// Default segment size.
pub const SEGMENT_SIZE_DEFAULT: u64 = 256 * 1024 * 1024;
const SUFFIX: &str = ".seg";

/// Encodes a segment header.
pub fn encode_header(first_position: u64) -> [u8; SEGMENT_HEADER_SIZE] {
    let mut h = [0u8; SEGMENT_HEADER_SIZE];
    h[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&SEGMENT_MAGIC);
    h[VERSION_OFFSET..RESERVED_A_OFFSET].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    h[POSITION_OFFSET..RESERVED_B_OFFSET].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32fast::hash(&h[..CRC_OFFSET]);
    h[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a segment header and returns its first position, or why it is invalid.
pub fn decode_header(bytes: &[u8]) -> std::result::Result<u64, &'static str> {
    let h = bytes
        .get(..SEGMENT_HEADER_SIZE)
        .ok_or("incomplete segment header")?;
    if h[MAGIC_OFFSET..VERSION_OFFSET] != SEGMENT_MAGIC {
        return Err("bad segment magic");
    }
    let crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    if crc32fast::hash(&h[..CRC_OFFSET]) != crc {
        return Err("segment header checksum mismatch");
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != SEGMENT_FORMAT_VERSION {
        return Err("unsupported segment format version");
    }
    let mut p = [0u8; 8];
    p.copy_from_slice(&h[POSITION_OFFSET..RESERVED_B_OFFSET]);
    Ok(u64::from_le_bytes(p))
}

/// The file name of the segment that starts at `first_position`.
pub fn file_name(first_position: u64) -> String {
    format!("{first_position:020}{SUFFIX}")
}

/// Parses a segment file name; `None` for anything else.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The first positions of all segments in `dir`, ascending.
pub fn list(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<u64>> {
    let names = vfs.list(dir).map_err(|e| LogError::io(dir, e))?;
    Ok(firsts(&names))
}

/// The first positions of the segments among a directory's file `names`, ascending.
pub fn firsts(names: &[String]) -> Vec<u64> {
    let mut v: Vec<u64> = names.iter().filter_map(|n| parse_file_name(n)).collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_damage() {
        let h = encode_header(123);
        assert_eq!(decode_header(&h), Ok(123));
        for bit in 0..SEGMENT_HEADER_SIZE * 8 {
            let mut g = h;
            g[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_header(&g).is_err(), "bit {bit}");
        }
        assert!(decode_header(&h[..31]).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(file_name(5), "00000000000000000005.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("5.seg"), None);
        assert_eq!(parse_file_name("0000000000000000000x.seg"), None);
        assert_eq!(parse_file_name("00000000000000000005.seg.tmp"), None);
    }
}
