//! Sequential, buffered reading of the frames of one segment file.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::{decode_frame, decode_header, FrameDefect, FrameHeader, FRAME_HEADER_SIZE};
use crate::fs::VFile;

const READ_CHUNK_BYTES: usize = 1 << 20;

/// What the cursor found at its current offset.
pub enum CursorItem {
    /// A whole, CRC-valid frame.
    Frame {
        /// Offset of the frame in the segment.
        offset: u64,
        /// Its header.
        header: FrameHeader,
        /// Its payload: a shared slice of the cursor's read buffer (no copy).
        payload: Bytes,
    },
    /// A damaged or incomplete frame at `offset`.
    Defect {
        /// Offset of the damage.
        offset: u64,
        /// What is wrong.
        defect: FrameDefect,
    },
    /// The end offset was reached exactly.
    End,
}

/// Reads frames from `offset` up to `end` (exclusive) of a segment file.
pub struct FrameCursor {
    file: Arc<dyn VFile>,
    offset: u64,
    end: u64,
    /// The bytes read from `buf_offset` on. Payloads handed out share it; a refill reuses it
    /// when no payload is still held, and allocates a fresh one otherwise.
    buf: Bytes,
    buf_offset: u64,
    /// `buf` is a memory map (not bytes read into memory).
    buf_is_map: bool,
    /// Copy out payloads much smaller than a read buffer (see [`FrameCursor::detaching`]).
    detach: bool,
}

/// A payload held by a caller keeps the whole read buffer it is a slice of alive: one this
/// many times smaller than the buffer is copied out instead (when detaching).
const DETACH_RATIO: usize = 8;

impl FrameCursor {
    /// A cursor over `file` between `offset` and `end`.
    pub fn new(file: Arc<dyn VFile>, offset: u64, end: u64) -> Self {
        FrameCursor {
            file,
            offset,
            end,
            buf: Bytes::new(),
            buf_offset: offset,
            buf_is_map: false,
            detach: false,
        }
    }

    /// The same cursor, handing out payloads read into memory (not those of a map) as copies
    /// of their own when they are much smaller than the read buffer, for callers that keep
    /// them (read results, subscriptions): a kept slice would keep the whole buffer (1 MiB)
    /// alive, and a selective reader keeping one small event per buffer would hold a buffer
    /// for each.
    pub fn detaching(mut self) -> Self {
        self.detach = true;
        self
    }

    /// A cursor reading from `map`, a memory map of `file` from its start, for as far as the
    /// map reaches (then from the file).
    pub fn over_map(map: Bytes, file: Arc<dyn VFile>, offset: u64, end: u64) -> Self {
        FrameCursor {
            file,
            offset,
            end,
            buf: map,
            buf_offset: 0,
            buf_is_map: true,
            detach: false,
        }
    }

    /// The offset of the next frame.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Moves the end (a live segment grows).
    pub fn set_end(&mut self, end: u64) {
        self.end = end;
    }

    /// Makes sure `[offset, offset+len)` is in the buffer, as far as the file allows.
    fn fill(&mut self, len: usize) -> std::io::Result<()> {
        let have_start = self.buf_offset;
        let have_end = self.buf_offset + self.buf.len() as u64;
        let want_end = (self.offset + len as u64).min(self.end);
        if self.offset >= have_start && want_end <= have_end {
            return Ok(());
        }
        // Drop what was consumed, keep the rest, read more.
        let keep_from = if self.offset >= have_start && self.offset <= have_end {
            (self.offset - have_start) as usize
        } else {
            self.buf.len()
        };
        let target = (len.max(READ_CHUNK_BYTES) as u64).min(self.end - self.offset) as usize;
        let mut buf = match std::mem::take(&mut self.buf).try_into_mut() {
            Ok(mut b) => {
                b.advance(keep_from.min(b.len()));
                b
            }
            Err(shared) => {
                // Keep at most what the new buffer is for (the old one may be a whole map).
                let kept = shared.get(keep_from..).unwrap_or(&[]);
                let mut b = BytesMut::with_capacity(target);
                b.extend_from_slice(kept.get(..target.min(kept.len())).unwrap_or(&[]));
                b
            }
        };
        self.buf_offset = self.offset;
        buf.reserve(target.saturating_sub(buf.len()));
        let result = loop {
            if buf.len() >= target {
                break Ok(());
            }
            let old = buf.len();
            buf.resize(target, 0);
            match self
                .file
                .read_at(&mut buf[old..], self.buf_offset + old as u64)
            {
                Ok(n) => {
                    buf.truncate(old + n);
                    if n == 0 {
                        break Ok(());
                    }
                }
                Err(e) => {
                    buf.truncate(old);
                    break Err(e);
                }
            }
        };
        self.buf = buf.freeze();
        self.buf_is_map = false;
        result
    }

    fn window(&self) -> &[u8] {
        let start = (self.offset - self.buf_offset) as usize;
        self.buf.get(start..).unwrap_or(&[])
    }

    /// Reads the next item. On `Frame` the cursor moves past it; on `Defect` and `End` it stays.
    pub fn next_item(&mut self) -> std::io::Result<CursorItem> {
        if self.offset >= self.end {
            return Ok(CursorItem::End);
        }
        self.fill(FRAME_HEADER_SIZE)?;
        let header = match decode_header(self.window()) {
            Ok(h) => h,
            Err(defect) => {
                return Ok(CursorItem::Defect {
                    offset: self.offset,
                    defect,
                })
            }
        };
        let frame_len = header.frame_len();
        if self.offset + frame_len > self.end {
            return Ok(CursorItem::Defect {
                offset: self.offset,
                defect: FrameDefect::ShortPayload,
            });
        }
        self.fill(frame_len as usize)?;
        let offset = self.offset;
        let start = (self.offset - self.buf_offset) as usize;
        match decode_frame(self.buf.get(start..).unwrap_or(&[])) {
            Ok((header, _)) => {
                self.offset += frame_len;
                let payload_start = start + FRAME_HEADER_SIZE;
                let range = payload_start..payload_start + header.payload_len as usize;
                let copy = self.detach
                    && !self.buf_is_map
                    && range.len().saturating_mul(DETACH_RATIO) < self.buf.len();
                let payload = if copy {
                    Bytes::copy_from_slice(self.buf.get(range).unwrap_or_default())
                } else {
                    self.buf.slice(range)
                };
                Ok(CursorItem::Frame {
                    offset,
                    header,
                    payload,
                })
            }
            Err(defect) => Ok(CursorItem::Defect { offset, defect }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;
    use crate::fs::{StdFs, Vfs};

    fn frames(cursor: &mut FrameCursor) -> Vec<(u64, u64, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            match cursor.next_item().expect("read") {
                CursorItem::Frame {
                    offset,
                    header,
                    payload,
                } => out.push((offset, header.first_position, payload.to_vec())),
                CursorItem::End => return out,
                CursorItem::Defect { offset, defect } => panic!("defect at {offset}: {defect}"),
            }
        }
    }

    /// A detaching cursor reading into memory hands out small payloads as copies of their
    /// own (a kept one does not keep its read buffer alive); a plain one, and one over a map,
    /// hand out slices.
    #[test]
    fn a_detaching_cursor_copies_small_payloads_out_of_its_read_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StdFs.create(&dir.path().join("f")).expect("create");
        let mut bytes = Vec::new();
        for i in 0..50u64 {
            bytes.extend(encode_frame(i, i, 1, &[i as u8; 200]).expect("frame"));
        }
        // One payload far larger than an eighth of the buffer: shared, not copied.
        bytes.extend(encode_frame(50, 50, 1, &vec![7u8; 400_000]).expect("frame"));
        file.write_all_at(&bytes, 0).expect("write");
        let end = bytes.len() as u64;
        let map = file.map(end).expect("map").expect("StdFs maps");
        for (what, mut c, copies_small) in [
            ("plain", FrameCursor::new(file.clone(), 0, end), false),
            (
                "detaching",
                FrameCursor::new(file.clone(), 0, end).detaching(),
                true,
            ),
            (
                "detaching over a map",
                FrameCursor::over_map(map, file.clone(), 0, end).detaching(),
                false,
            ),
        ] {
            let mut held = Vec::new();
            while let CursorItem::Frame { payload, .. } = c.next_item().expect("read") {
                let in_buffer = c.buf.as_ptr_range().contains(&payload.as_ptr());
                let small = payload.len() < 1000;
                assert_eq!(
                    in_buffer,
                    !(copies_small && small),
                    "{what}: {}",
                    held.len()
                );
                held.push(payload);
            }
            assert_eq!(held.len(), 51, "{what}");
            for (i, p) in held.iter().enumerate().take(50) {
                assert_eq!(&p[..], &[i as u8; 200][..], "{what}: payload {i}");
            }
        }
    }

    /// A map that ends before the cursor's end (a segment that outgrew it) is read as far as
    /// it reaches, then the rest from the file, frame for frame the same as reading it all.
    #[test]
    fn a_cursor_over_a_short_map_reads_the_rest_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StdFs.create(&dir.path().join("f")).expect("create");
        let mut bytes = Vec::new();
        for i in 0..200u64 {
            let payload = vec![i as u8; 100 + (i as usize * 37) % 3000];
            bytes.extend(encode_frame(i, i, 1, &payload).expect("frame"));
        }
        file.write_all_at(&bytes, 0).expect("write");
        let end = bytes.len() as u64;
        let expected = frames(&mut FrameCursor::new(file.clone(), 0, end));
        assert_eq!(expected.len(), 200);
        for map_len in [1, 4096, end / 3, end - 1, end] {
            let map = file.map(map_len).expect("map").expect("StdFs maps");
            let got = frames(&mut FrameCursor::over_map(map, file.clone(), 0, end));
            assert_eq!(got, expected, "map of {map_len} bytes");
        }
        // A cursor whose end moves past its map later (a growing segment).
        // (Ends move from frame boundary to frame boundary, as commits publish them.)
        let map = file.map(end / 2).expect("map").expect("StdFs maps");
        let first_end = expected[expected.len() / 4].0;
        let mut c = FrameCursor::over_map(map, file.clone(), 0, first_end);
        let mut got = frames(&mut c);
        assert_eq!(got.len(), expected.len() / 4);
        c.set_end(end);
        got.extend(frames(&mut c));
        assert_eq!(got, expected);
    }
}
