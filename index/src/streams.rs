//! The stream index of sealed segments: one immutable file per segment listing every stream
//! batch of that segment, sorted by (stream number, first version).
//!
//! While a segment is active its batches live in memory (the engine's recent index); when it
//! is sealed, the indexer writes them here in one sorted pass, and the persistent index gets
//! one row per *chunk* (at most [`CHUNK_ENTRIES_MAX`] consecutive entries of one stream),
//! naming the entries' place in the file and their CRC. Appending an event therefore costs no
//! B-tree row of its own; a stream read costs one B-tree range lookup (or a hit in the
//! chunk cache) and one read per chunk from the file's read-only map (`pread` if mapping
//! failed), whose CRC is checked on every read.
//!
//! The file is derived data: it is not fsynced. A missing or damaged one is rebuilt from its
//! segment on open; a chunk whose CRC does not match is reported as an error, and the caller
//! falls back to scanning the segment.
//!
//! File `{segment:020}.streams` (little endian):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `\x89OXS\r\n\x1a\n` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | reserved (0) |
//! | 16 | 8 | segment (first position) |
//! | 24 | 8 | entry count n |
//! | 32 | 4 | CRC32 of the entries |
//! | 36 | 4 | CRC32 of bytes 0..36 |
//! | 40 | 40n | entries |
//!
//! Entry (40 bytes): stream number (u64), first version (u64), first position (u64), frame
//! offset in the segment (u64), frame length (u32), event count (u32).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::{IndexError, Result};

const MAGIC: [u8; 8] = *b"\x89OXS\r\n\x1a\n";
const VERSION: u32 = 1;
/// Size of the file header.
pub const HEADER_SIZE: usize = 40;
/// Size of one entry.
pub const ENTRY_SIZE: usize = 40;
/// Most entries in one chunk (one persistent-index row).
pub const CHUNK_ENTRIES_MAX: usize = 128;
/// Largest entry count one file may declare (bounds allocation when decoding).
const ENTRIES_PER_FILE_MAX: u64 = 1 << 32;

/// One stream batch of a sealed segment: where its frame is and which versions it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamEntry {
    /// Stream number.
    pub stream_number: u64,
    /// Version of the first event.
    pub first_version: u64,
    /// Position of the first event.
    pub first_position: u64,
    /// Offset of the frame in its segment file.
    pub offset: u64,
    /// Length of the frame.
    pub len: u32,
    /// Number of events of the stream in the frame.
    pub count: u32,
}

impl StreamEntry {
    /// The batch this entry describes, in the file of `segment`.
    pub fn batch_entry(&self, segment: u64) -> crate::BatchEntry {
        crate::BatchEntry {
            first_version: self.first_version,
            first_position: self.first_position,
            count: self.count,
            location: orchestrix_log::FrameLocation {
                segment,
                offset: self.offset,
                len: u64::from(self.len),
            },
        }
    }

    /// The last version in the batch.
    pub fn last_version(&self) -> u64 {
        // Saturating: entries come from files (derived data, checked elsewhere).
        self.first_version
            .saturating_add(u64::from(self.count).max(1) - 1)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream_number.to_le_bytes());
        out.extend_from_slice(&self.first_version.to_le_bytes());
        out.extend_from_slice(&self.first_position.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
    }

    fn decode(b: &[u8]) -> StreamEntry {
        let u64_at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(b.get(o..o + 8).unwrap_or(&[0; 8]));
            u64::from_le_bytes(x)
        };
        let u32_at = |o: usize| {
            let mut x = [0u8; 4];
            x.copy_from_slice(b.get(o..o + 4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(x)
        };
        StreamEntry {
            stream_number: u64_at(0),
            first_version: u64_at(8),
            first_position: u64_at(16),
            offset: u64_at(24),
            len: u32_at(32),
            count: u32_at(36),
        }
    }
}

/// A run of at most [`CHUNK_ENTRIES_MAX`] consecutive entries of one stream in one file: what
/// the persistent index stores per stream and segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRow {
    /// Stream number.
    pub stream_number: u64,
    /// First version of the chunk's first entry.
    pub first_version: u64,
    /// Last version of the chunk's last entry.
    pub last_version: u64,
    /// The segment whose file holds the chunk.
    pub segment: u64,
    /// Index of the chunk's first entry in the file.
    pub entry_index: u64,
    /// Number of entries.
    pub count: u32,
    /// CRC32 of the chunk's entries as stored.
    pub crc: u32,
}

/// Splits sorted entries (as encoded in `body`) into chunks.
fn chunks(segment: u64, entries: &[StreamEntry], body: &[u8]) -> Vec<ChunkRow> {
    let mut rows = Vec::new();
    let mut i = 0;
    while let Some(first) = entries.get(i) {
        let mut j = i + 1;
        while j < entries.len()
            && j - i < CHUNK_ENTRIES_MAX
            && entries
                .get(j)
                .is_some_and(|e| e.stream_number == first.stream_number)
        {
            j += 1;
        }
        let last = entries.get(j - 1).copied().unwrap_or(*first);
        let bytes = body.get(i * ENTRY_SIZE..j * ENTRY_SIZE).unwrap_or_default();
        rows.push(ChunkRow {
            stream_number: first.stream_number,
            first_version: first.first_version,
            last_version: last.last_version(),
            segment,
            entry_index: i as u64,
            count: (j - i) as u32,
            crc: crc32fast::hash(bytes),
        });
        i = j;
    }
    rows
}

fn damaged(path: &Path, why: &str) -> IndexError {
    IndexError::Db(format!(
        "stream index file {} is damaged: {why}",
        path.display()
    ))
}

fn io_err(path: &Path, e: std::io::Error) -> IndexError {
    IndexError::Db(format!("{}: {e}", path.display()))
}

/// Checks a header; returns (segment, entry count, entries CRC).
fn decode_header(h: &[u8]) -> std::result::Result<(u64, u64, u32), &'static str> {
    if h.len() < HEADER_SIZE {
        return Err("shorter than its header");
    }
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[o..o + 8]);
        u64::from_le_bytes(b)
    };
    if h[..8] != MAGIC || u32_at(8) != VERSION {
        return Err("bad magic or version");
    }
    if u32_at(12) != 0 {
        return Err("reserved field is not zero");
    }
    if crc32fast::hash(&h[..36]) != u32_at(36) {
        return Err("header checksum mismatch");
    }
    let count = u64_at(24);
    if count > ENTRIES_PER_FILE_MAX {
        return Err("entry count out of bounds");
    }
    Ok((u64_at(16), count, u32_at(32)))
}

/// Decodes a whole file: its segment and its entries, every check applied (header, length,
/// entries CRC, order). Used when registering a file's chunks and by `verify`.
pub fn decode_file(bytes: &[u8]) -> std::result::Result<(u64, Vec<StreamEntry>), String> {
    let (segment, count, crc) = decode_header(bytes)?;
    let body = &bytes[HEADER_SIZE..];
    if body.len() as u64 != count * ENTRY_SIZE as u64 {
        return Err("length disagrees with the header".into());
    }
    if crc32fast::hash(body) != crc {
        return Err("entry checksum mismatch".into());
    }
    let entries: Vec<StreamEntry> = body
        .chunks_exact(ENTRY_SIZE)
        .map(StreamEntry::decode)
        .collect();
    for w in entries.windows(2) {
        if let [a, b] = w {
            if (a.stream_number, a.first_version) >= (b.stream_number, b.first_version) {
                return Err("entries out of order".into());
            }
        }
    }
    if entries.iter().any(|e| e.count == 0 || e.len == 0) {
        return Err("empty entry".into());
    }
    Ok((segment, entries))
}

/// Encodes a whole file from entries sorted by (stream number, first version); the inverse of
/// [`decode_file`].
pub fn encode_file(segment: u64, entries: &[StreamEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + entries.len() * ENTRY_SIZE);
    out.resize(HEADER_SIZE, 0);
    for e in entries {
        e.encode(&mut out);
    }
    let crc = crc32fast::hash(&out[HEADER_SIZE..]);
    let h = &mut out[..HEADER_SIZE];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&segment.to_le_bytes());
    h[24..32].copy_from_slice(&(entries.len() as u64).to_le_bytes());
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    let hc = crc32fast::hash(&h[..36]);
    h[36..40].copy_from_slice(&hc.to_le_bytes());
    out
}

struct SegmentFile {
    path: PathBuf,
    file: File,
    count: u64,
    /// The whole file mapped read-only, so that a chunk is read without a system call (and
    /// the file's pages are page cache, not process memory); `None` if mapping failed, and
    /// chunks are then read with `pread`.
    map: Option<memmap2::Mmap>,
}

/// The file name of a segment's stream index file.
pub fn file_name(segment: u64) -> String {
    crate::segment_file_name(segment, "streams")
}

fn load(path: &Path, segment: u64) -> Result<SegmentFile> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut h = [0u8; HEADER_SIZE];
    if len < HEADER_SIZE as u64 {
        return Err(damaged(path, "shorter than its header"));
    }
    file.read_exact_at(&mut h, 0).map_err(|e| io_err(path, e))?;
    let (seg, count, _) = decode_header(&h).map_err(|why| damaged(path, why))?;
    if seg != segment {
        return Err(damaged(path, "names another segment"));
    }
    if len != HEADER_SIZE as u64 + count * ENTRY_SIZE as u64 {
        return Err(damaged(path, "length disagrees with the header"));
    }
    // SAFETY: stream index files are immutable once renamed into place (written whole to a
    // temporary name first) and this process never writes them again; the length was
    // checked against the header above. What the map cannot guard against is another process
    // truncating or rewriting the file while it is open: a read of a page cut off would be
    // SIGBUS, as for the segment maps (docs/architecture.md, "Reads").
    let map = match unsafe { memmap2::Mmap::map(&file) } {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::debug!(error = %e, path = %path.display(), "stream index file not mapped; reading it with pread");
            None
        }
    };
    Ok(SegmentFile {
        path: path.to_path_buf(),
        file,
        count,
        map,
    })
}

/// The stream index files of the sealed segments.
pub struct StreamFiles {
    dir: PathBuf,
    sealed: RwLock<BTreeMap<u64, Arc<SegmentFile>>>,
}

impl StreamFiles {
    /// Opens the directory, loading every file whose header is valid. Files with a damaged
    /// header are removed (they are rebuilt from their segments).
    pub fn open(dir: &Path) -> Result<StreamFiles> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut sealed = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = dir.join(&name);
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(segment) = crate::parse_segment_file_name(&name, "streams") else {
                continue;
            };
            match load(&path, segment) {
                Ok(s) => {
                    sealed.insert(segment, Arc::new(s));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "damaged stream index file; it will be rebuilt");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(StreamFiles {
            dir: dir.to_path_buf(),
            sealed: RwLock::new(sealed),
        })
    }

    fn get(&self, segment: u64) -> Option<Arc<SegmentFile>> {
        self.sealed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&segment)
            .cloned()
    }

    /// Whether the file of `segment` is present.
    pub fn has_segment(&self, segment: u64) -> bool {
        self.get(segment).is_some()
    }

    /// Segments that have files, in order.
    pub fn segments(&self) -> Vec<u64> {
        self.sealed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Forgets (and deletes) the files of segments not in `keep`.
    pub fn retain_segments(&self, keep: &[u64]) {
        let mut g = self.sealed.write().unwrap_or_else(|p| p.into_inner());
        g.retain(|segment, s| {
            let k = keep.contains(segment);
            if !k {
                let _ = std::fs::remove_file(&s.path);
            }
            k
        });
    }

    /// Forgets and deletes one file (found damaged); the next open rebuilds it.
    pub fn discard(&self, segment: u64) {
        if let Some(s) = self
            .sealed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&segment)
        {
            let _ = std::fs::remove_file(&s.path);
        }
    }

    /// Writes the file of a sealed segment (temp file, rename) and starts using it; returns
    /// its chunks for the persistent index. `entries` need not be sorted (they are sorted in
    /// place, and kept for a retry should the write fail).
    pub fn write_segment(
        &self,
        segment: u64,
        entries: &mut [StreamEntry],
    ) -> Result<Vec<ChunkRow>> {
        entries.sort_unstable_by_key(|e| (e.stream_number, e.first_version));
        let bytes = encode_file(segment, entries);
        let path = self.dir.join(file_name(segment));
        let tmp = self.dir.join(format!("{}.tmp", file_name(segment)));
        {
            let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
            f.write_all(&bytes).map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        let loaded = Arc::new(load(&path, segment)?);
        self.sealed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(segment, loaded);
        Ok(chunks(
            segment,
            entries,
            bytes.get(HEADER_SIZE..).unwrap_or_default(),
        ))
    }

    /// Reads and checks a whole file; returns its entries.
    pub fn read_segment(&self, segment: u64) -> Result<Vec<StreamEntry>> {
        self.read_segment_bytes(segment).map(|(entries, _)| entries)
    }

    /// Reads and checks a whole file; returns its entries and its bytes.
    fn read_segment_bytes(&self, segment: u64) -> Result<(Vec<StreamEntry>, Vec<u8>)> {
        let s = self
            .get(segment)
            .ok_or_else(|| IndexError::Db(format!("no stream index file for segment {segment}")))?;
        let bytes = std::fs::read(&s.path).map_err(|e| io_err(&s.path, e))?;
        let (seg, entries) = decode_file(&bytes).map_err(|why| damaged(&s.path, &why))?;
        if seg != segment {
            return Err(damaged(&s.path, "names another segment"));
        }
        Ok((entries, bytes))
    }

    /// The chunks of a file, read back from it (to register a file whose rows the persistent
    /// index lost).
    pub fn chunk_rows(&self, segment: u64) -> Result<Vec<ChunkRow>> {
        let (entries, bytes) = self.read_segment_bytes(segment)?;
        Ok(chunks(
            segment,
            &entries,
            bytes.get(HEADER_SIZE..).unwrap_or_default(),
        ))
    }

    /// Reads the entries of one chunk, checking its CRC.
    pub fn read_chunk(&self, row: &ChunkRow) -> Result<Vec<StreamEntry>> {
        let s = self.get(row.segment).ok_or_else(|| {
            IndexError::Db(format!("no stream index file for segment {}", row.segment))
        })?;
        // A row is derived data too (and may be damaged): no arithmetic on it may overflow.
        let chunk_end = row.entry_index.checked_add(u64::from(row.count));
        if chunk_end.is_none_or(|end| end > s.count) || row.count == 0 {
            return Err(damaged(&s.path, "a chunk lies outside the file"));
        }
        let start = HEADER_SIZE as u64 + row.entry_index * ENTRY_SIZE as u64;
        let len = row.count as usize * ENTRY_SIZE;
        let read;
        let buf: &[u8] = match s.map.as_ref().and_then(|m| {
            let start = usize::try_from(start).ok()?;
            m.get(start..start.checked_add(len)?)
        }) {
            Some(mapped) => mapped,
            None => {
                let mut b = vec![0u8; len];
                s.file
                    .read_exact_at(&mut b, start)
                    .map_err(|e| io_err(&s.path, e))?;
                read = b;
                &read
            }
        };
        if crc32fast::hash(buf) != row.crc {
            return Err(damaged(&s.path, "chunk checksum mismatch"));
        }
        let entries: Vec<StreamEntry> = buf
            .chunks_exact(ENTRY_SIZE)
            .map(StreamEntry::decode)
            .collect();
        if entries.iter().any(|e| e.stream_number != row.stream_number) {
            return Err(damaged(&s.path, "a chunk holds another stream"));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: u64, v: u64, count: u32) -> StreamEntry {
        StreamEntry {
            stream_number: stream,
            first_version: v,
            first_position: stream * 1000 + v,
            offset: 32 + v * 64,
            len: 64,
            count,
        }
    }

    #[test]
    fn chunks_read_the_same_without_a_map() {
        let dir = tempfile::tempdir().unwrap();
        let files = StreamFiles::open(dir.path()).unwrap();
        let mut entries: Vec<StreamEntry> = (0..200).map(|v| entry(v % 3, v, 1)).collect();
        let rows = files.write_segment(8, &mut entries).unwrap();
        let mapped: Vec<_> = rows.iter().map(|r| files.read_chunk(r).unwrap()).collect();
        assert!(files.get(8).unwrap().map.is_some(), "read through a map");
        // As when the file cannot be mapped: the same chunks come from `pread`.
        let path = dir.path().join(file_name(8));
        let mut unmapped = load(&path, 8).unwrap();
        unmapped.map = None;
        files.sealed.write().unwrap().insert(8, Arc::new(unmapped));
        let read: Vec<_> = rows.iter().map(|r| files.read_chunk(r).unwrap()).collect();
        assert_eq!(read, mapped);
        assert_eq!(read.iter().map(Vec::len).sum::<usize>(), 200);
        // A chunk row pointing past the file's entries is refused either way.
        let mut bad = rows[0];
        bad.entry_index = 199;
        assert!(files.read_chunk(&bad).is_err());
        bad.entry_index = u64::MAX;
        assert!(
            files.read_chunk(&bad).is_err(),
            "an index that would overflow"
        );
    }

    #[test]
    fn write_read_chunks_reload_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let files = StreamFiles::open(dir.path()).unwrap();
        // Stream 1: 300 single-event batches (three chunks); stream 0: one batch of 5.
        let mut entries: Vec<StreamEntry> = (0..300).rev().map(|v| entry(1, v, 1)).collect();
        entries.push(entry(0, 0, 5));
        let rows = files.write_segment(64, &mut entries).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (
                    r.stream_number,
                    r.first_version,
                    r.last_version,
                    r.entry_index,
                    r.count
                ))
                .collect::<Vec<_>>(),
            vec![
                (0, 0, 4, 0, 1),
                (1, 0, 127, 1, 128),
                (1, 128, 255, 129, 128),
                (1, 256, 299, 257, 44)
            ]
        );
        let c = files.read_chunk(&rows[2]).unwrap();
        assert_eq!(c.len(), 128);
        assert_eq!(c[0], entry(1, 128, 1));
        assert_eq!(files.chunk_rows(64).unwrap(), rows);
        drop(files);

        let files = StreamFiles::open(dir.path()).unwrap();
        assert_eq!(files.segments(), vec![64]);
        assert_eq!(files.read_chunk(&rows[0]).unwrap(), vec![entry(0, 0, 5)]);
        // A flipped byte in an entry: that chunk's CRC fails, the others still read.
        let p = dir.path().join(file_name(64));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[HEADER_SIZE + 200 * ENTRY_SIZE + 3] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(files.read_chunk(&rows[2]).is_err());
        assert!(files.read_chunk(&rows[1]).is_ok());
        assert!(
            files.chunk_rows(64).is_err(),
            "the whole-file CRC catches it too"
        );
        // A flipped header byte: the file is dropped on open.
        bytes[17] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        drop(files);
        let files = StreamFiles::open(dir.path()).unwrap();
        assert!(files.segments().is_empty());
        assert!(!p.exists());
        assert!(files.read_chunk(&rows[0]).is_err());
    }

    /// Found by the `stream_file_decoder` fuzz target: a nonzero reserved field under a valid
    /// header CRC was accepted, so the file did not re-encode to the same bytes.
    #[test]
    fn nonzero_reserved_field_is_rejected() {
        let mut h = encode_file(0, &[]);
        h[12] = 181;
        let crc = crc32fast::hash(&h[..36]);
        h[36..40].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_file(&h).unwrap_err(),
            "reserved field is not zero".to_string()
        );
    }

    #[test]
    fn decode_file_rejects_bad_input() {
        let entries = vec![entry(0, 0, 1), entry(0, 1, 2)];
        let good = encode_file(7, &entries);
        assert_eq!(decode_file(&good).unwrap(), (7, entries.clone()));
        for cut in 0..good.len() {
            assert!(decode_file(&good[..cut]).is_err(), "cut at {cut}");
        }
        // Out of order (a well-formed file otherwise).
        let bad = encode_file(7, &[entry(0, 1, 1), entry(0, 0, 1)]);
        assert!(decode_file(&bad).is_err());
    }
}
