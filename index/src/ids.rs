//! The event-id index: one immutable file per sealed segment, with a bloom filter read
//! through a memory map, so that checking an id on the append path costs one probe of one
//! cache line per sealed segment instead of a B-tree lookup, and indexing an event costs
//! nothing until its segment is sealed.
//!
//! Ids of the active segment are held in memory by the writer; when a segment is sealed they
//! are written here, sorted. A missing or damaged file is rebuilt from its segment on open.
//!
//! File `{segment:020}.ids` (little endian unless noted):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `\x89OXI\r\n\x1a\n` |
//! | 8 | 4 | format version (2) |
//! | 12 | 4 | bits set per id in its filter block (8) |
//! | 16 | 8 | segment (first position) |
//! | 24 | 8 | entry count n |
//! | 32 | 8 | filter words w (8 per 512-bit block) |
//! | 40 | 16 | smallest id (big endian, as the id's bytes) |
//! | 56 | 16 | largest id |
//! | 72 | 4 | CRC32 of the entries |
//! | 76 | 4 | CRC32 of bytes 0..76, 80..128 and the filter words |
//! | 80 | 48 | reserved, zero |
//! | 128 | 8w | bloom filter of 512-bit blocks (64-byte aligned in the file) |
//! | 128+8w | 24n | entries sorted by id: id (16 bytes), position (u64) |
//!
//! The filter is a split-block bloom filter (as Parquet's): an id's hash picks one 512-bit
//! block and sets one bit in each of its eight 64-bit words, so a probe reads one cache line
//! and divides nothing; about 1% false "maybe"s at 12 bits per id. Version 1 files (a classic
//! filter, up to seven cache lines and seven divisions a probe) are rebuilt on open like
//! damaged ones.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::{IndexError, Result};

const MAGIC: [u8; 8] = *b"\x89OXI\r\n\x1a\n";
const VERSION: u32 = 2;
/// Header size: the filter after it starts on a cache-line boundary of the map.
const HEADER_SIZE: usize = 128;
const ENTRY_SIZE: usize = 24;
/// Filter bits per id (about 1% false positives with 8 bits set per id in 512-bit blocks).
const BLOOM_BITS_PER_ID: u64 = 12;
/// Bits set per id: one in each word of its block.
const BLOOM_HASHES: u32 = 8;
/// Words per filter block (512 bits, one cache line).
const BLOCK_WORDS: usize = 8;
/// Odd multipliers that spread an id's 32-bit key over the words of its block.
const BLOCK_SALTS: [u32; BLOCK_WORDS] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];
/// Largest number of ids one file may declare (bounds allocation when loading).
const IDS_PER_SEGMENT_MAX: u64 = 1 << 32;

/// Ids of one segment, as the writer collects them: id -> position.
pub type IdMap = HashMap<[u8; 16], u64, foldhash::fast::RandomState>;

fn io_err(path: &Path, e: std::io::Error) -> IndexError {
    IndexError::Db(format!("{}: {e}", path.display()))
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stable 64-bit hash of an id for the filters (they are stored, so it is not seeded).
fn filter_hash(id: &[u8; 16]) -> u64 {
    let k = u128::from_le_bytes(*id);
    let (hi, lo) = ((k >> 64) as u64, k as u64);
    mix64(hi ^ mix64(lo ^ 0x9e37_79b9_7f4a_7c15))
}

/// Where a filter's words live: in memory while a file is being written, in a read-only
/// map of the file once it is loaded, so that the filters of sealed segments are page cache
/// (loaded by the kernel when probed, dropped by it under memory pressure) rather than memory
/// of the process growing with every event stored.
enum Words {
    Owned(Vec<u64>),
    Mapped(memmap2::Mmap),
}

impl Words {
    fn len(&self) -> usize {
        match self {
            Words::Owned(w) => w.len(),
            Words::Mapped(m) => m.len() / 8,
        }
    }

    fn get(&self, i: usize) -> Option<u64> {
        match self {
            Words::Owned(w) => w.get(i).copied(),
            Words::Mapped(m) => {
                let b = m.get(i * 8..i * 8 + 8)?;
                let mut w = [0u8; 8];
                w.copy_from_slice(b);
                Some(u64::from_le_bytes(w))
            }
        }
    }
}

struct Bloom {
    words: Words,
}

/// Filter words for `n` ids: whole blocks, at least one.
fn bloom_words_for(n: u64) -> u64 {
    (n.max(1) * BLOOM_BITS_PER_ID).div_ceil(64 * BLOCK_WORDS as u64) * BLOCK_WORDS as u64
}

impl Bloom {
    fn with_capacity(n: usize) -> Bloom {
        Bloom {
            words: Words::Owned(vec![0; bloom_words_for(n as u64) as usize]),
        }
    }

    /// The first word of the block of the id whose hash is `h` (see [`filter_hash`]) and
    /// the bit to set in each word of it.
    fn locate(&self, h: u64) -> (usize, [u64; BLOCK_WORDS]) {
        let blocks = (self.words.len() / BLOCK_WORDS) as u64;
        let block = (((h >> 32) * blocks) >> 32) as usize;
        let key = h as u32;
        let bits = BLOCK_SALTS.map(|salt| 1u64 << (key.wrapping_mul(salt) >> 26));
        (block * BLOCK_WORDS, bits)
    }

    fn insert(&mut self, id: &[u8; 16]) {
        let (first, bits) = self.locate(filter_hash(id));
        if let Words::Owned(words) = &mut self.words {
            for (i, bit) in bits.iter().enumerate() {
                if let Some(word) = words.get_mut(first + i) {
                    *word |= bit;
                }
            }
        }
    }

    /// Whether the id whose hash is `h` may be in the filter (false: it certainly is not).
    fn may_contain(&self, h: u64) -> bool {
        let (first, bits) = self.locate(h);
        // Every word tested, without stopping at the first clear bit: no branch to predict,
        // so the probes of several files' filters overlap (see `IdIndex::lookup`).
        bits.iter().enumerate().fold(true, |all, (i, bit)| {
            all & self.words.get(first + i).is_some_and(|w| w & bit != 0)
        })
    }

    /// The words as stored: little endian.
    fn to_bytes(&self) -> Vec<u8> {
        (0..self.words.len())
            .filter_map(|i| self.words.get(i))
            .flat_map(u64::to_le_bytes)
            .collect()
    }
}

struct SegmentIds {
    segment: u64,
    path: PathBuf,
    file: File,
    count: u64,
    entries_offset: u64,
    entries_crc: u32,
    entries_verified: AtomicBool,
    min: [u8; 16],
    max: [u8; 16],
    bloom: Bloom,
}

impl SegmentIds {
    fn verify_entries(&self) -> Result<()> {
        if self.entries_verified.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut h = crc32fast::Hasher::new();
        hash_range(
            &self.file,
            &self.path,
            &mut h,
            self.entries_offset,
            self.count * ENTRY_SIZE as u64,
        )?;
        if h.finalize() != self.entries_crc {
            return Err(IndexError::Db(format!(
                "id file {} is damaged (entry checksum mismatch)",
                self.path.display()
            )));
        }
        self.entries_verified.store(true, Ordering::Release);
        Ok(())
    }

    fn entry(&self, i: u64) -> Result<([u8; 16], u64)> {
        let mut e = [0u8; ENTRY_SIZE];
        self.file
            .read_exact_at(&mut e, self.entries_offset + i * ENTRY_SIZE as u64)
            .map_err(|err| io_err(&self.path, err))?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&e[..16]);
        let mut p = [0u8; 8];
        p.copy_from_slice(&e[16..]);
        Ok((id, u64::from_le_bytes(p)))
    }

    /// Whether this segment may hold `id`, whose filter hash is `h` (false: it does not).
    fn may_hold(&self, id: &[u8; 16], h: u64) -> bool {
        (self.count > 0) & (id >= &self.min) & (id <= &self.max) & self.bloom.may_contain(h)
    }

    /// The position of `id` in this segment, by binary search of its entries.
    fn search(&self, id: &[u8; 16]) -> Result<Option<u64>> {
        self.verify_entries()?;
        let (mut lo, mut hi) = (0u64, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (k, p) = self.entry(mid)?;
            match k.cmp(id) {
                std::cmp::Ordering::Equal => return Ok(Some(p)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }
}

/// The id files of all sealed segments.
pub struct IdIndex {
    dir: PathBuf,
    sealed: RwLock<Sealed>,
}

/// The loaded id files, in segment order, and the largest id of any of them: an id above it
/// (every new time-ordered id) is in none of them, whatever their number.
struct Sealed {
    files: Vec<Arc<SegmentIds>>,
    max: Option<[u8; 16]>,
}

impl Sealed {
    fn new(mut files: Vec<Arc<SegmentIds>>) -> Sealed {
        files.sort_by_key(|s| s.segment);
        let max = files.iter().filter(|s| s.count > 0).map(|s| s.max).max();
        Sealed { files, max }
    }
}

/// The file name of a segment's id file.
pub fn file_name(segment: u64) -> String {
    format!("{segment:020}.ids")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".ids")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn load(path: &Path) -> Result<SegmentIds> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let damaged =
        |why: &str| IndexError::Db(format!("id file {} is damaged: {why}", path.display()));
    let mut h = [0u8; HEADER_SIZE];
    if len < HEADER_SIZE as u64 {
        return Err(damaged("shorter than its header"));
    }
    file.read_exact_at(&mut h, 0).map_err(|e| io_err(path, e))?;
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[o..o + 8]);
        u64::from_le_bytes(b)
    };
    if h[..8] != MAGIC || u32_at(8) != VERSION {
        return Err(damaged("bad magic or version"));
    }
    let k = u32_at(12);
    let segment = u64_at(16);
    let count = u64_at(24);
    let words = u64_at(32);
    if k != BLOOM_HASHES
        || count > IDS_PER_SEGMENT_MAX
        || words != bloom_words_for(count)
        || h[80..].iter().any(|b| *b != 0)
    {
        return Err(damaged("header field out of bounds"));
    }
    let expected_len = HEADER_SIZE as u64 + words * 8 + count * ENTRY_SIZE as u64;
    if len != expected_len {
        return Err(damaged("length disagrees with the header"));
    }
    // The checksum is computed through a bounded buffer, not through the map, so that
    // loading does not make the filter resident: only the words that lookups probe are.
    let bloom_len = words * 8;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[..76]);
    crc.update(&h[80..]);
    hash_range(&file, path, &mut crc, HEADER_SIZE as u64, bloom_len)?;
    if crc.finalize() != u32_at(76) {
        return Err(damaged("header checksum mismatch"));
    }
    let bloom_words = map_words(&file, bloom_len).map_err(|e| io_err(path, e))?;
    let mut min = [0u8; 16];
    let mut max = [0u8; 16];
    min.copy_from_slice(&h[40..56]);
    max.copy_from_slice(&h[56..72]);
    Ok(SegmentIds {
        segment,
        path: path.to_path_buf(),
        file,
        count,
        entries_offset: HEADER_SIZE as u64 + words * 8,
        entries_crc: u32_at(72),
        entries_verified: AtomicBool::new(false),
        min,
        max,
        bloom: Bloom { words: bloom_words },
    })
}

/// Feeds `len` bytes of `file` from `offset` to `crc`, reading at most 1 MiB at a time.
fn hash_range(
    file: &File,
    path: &Path,
    crc: &mut crc32fast::Hasher,
    offset: u64,
    len: u64,
) -> Result<()> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(1 << 20)];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, offset + done)
            .map_err(|e| io_err(path, e))?;
        crc.update(chunk);
        done += n as u64;
    }
    Ok(())
}

/// Maps the filter of an id file (`len` bytes after the header) read-only.
fn map_words(file: &File, len: u64) -> std::io::Result<Words> {
    let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    if len == 0 {
        return Ok(Words::Owned(Vec::new()));
    }
    // SAFETY: id files are immutable once renamed into place (written whole to a temporary
    // name first) and this process never writes them again; the length was checked against
    // the file's size above. What the map cannot guard against is another process truncating
    // or rewriting the file while it is open: a probe of a page cut off would be SIGBUS, as
    // for the segment maps (docs/architecture.md, "Reads").
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(HEADER_SIZE as u64)
            .len(len)
            .map(file)?
    };
    Ok(Words::Mapped(map))
}

impl IdIndex {
    /// Opens the directory of id files, loading every valid one. Damaged files are removed
    /// (they are rebuilt from their segments).
    pub fn open(dir: &Path) -> Result<IdIndex> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut sealed = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = dir.join(&name);
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(segment) = parse_file_name(&name) else {
                continue;
            };
            match load(&path) {
                Ok(s) if s.segment == segment => sealed.push(Arc::new(s)),
                Ok(_) | Err(_) => {
                    tracing::warn!(file = %path.display(), "damaged id file; it will be rebuilt");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(IdIndex {
            dir: dir.to_path_buf(),
            sealed: RwLock::new(Sealed::new(sealed)),
        })
    }

    fn sealed(&self) -> Vec<Arc<SegmentIds>> {
        self.sealed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .files
            .clone()
    }

    /// Whether the id file of `segment` is present.
    pub fn has_segment(&self, segment: u64) -> bool {
        self.sealed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .files
            .iter()
            .any(|s| s.segment == segment)
    }

    /// Segments that have id files.
    pub fn segments(&self) -> Vec<u64> {
        self.sealed().iter().map(|s| s.segment).collect()
    }

    /// Forgets (and deletes) the id files of segments not in `keep`.
    pub fn retain_segments(&self, keep: &[u64]) {
        let mut g = self.sealed.write().unwrap_or_else(|p| p.into_inner());
        let mut files = std::mem::take(&mut g.files);
        files.retain(|s| {
            let k = keep.contains(&s.segment);
            if !k {
                let _ = std::fs::remove_file(&s.path);
            }
            k
        });
        *g = Sealed::new(files);
    }

    /// The position of `id` in a sealed segment, if any.
    pub fn lookup(&self, id: &[u8; 16]) -> Result<Option<u64>> {
        let damaged = {
            let sealed = self.sealed.read().unwrap_or_else(|p| p.into_inner());
            if sealed.max.is_none_or(|max| id > &max) {
                return Ok(None);
            }
            let h = filter_hash(id);
            // Newest files first, 64 at a time: first every filter of the batch (independent
            // probes without branches, so that their cache and TLB misses overlap), then a
            // search of the few files whose filter let the id through.
            let mut damaged = None;
            'files: for batch in sealed.files.rchunks(64) {
                let mut maybe = 0u64;
                for (i, s) in batch.iter().enumerate() {
                    maybe |= u64::from(s.may_hold(id, h)) << i;
                }
                while maybe != 0 {
                    let i = 63 - maybe.leading_zeros() as usize;
                    maybe &= !(1 << i);
                    let Some(s) = batch.get(i) else { break };
                    match s.search(id) {
                        Ok(Some(p)) => return Ok(Some(p)),
                        Ok(None) => {}
                        Err(e) => {
                            damaged = Some((s.segment, e));
                            break 'files;
                        }
                    }
                }
            }
            damaged
        };
        match damaged {
            None => Ok(None),
            Some((segment, e)) => {
                // Forget the damaged file; the next open rebuilds it from its segment.
                let keep: Vec<u64> = self
                    .segments()
                    .into_iter()
                    .filter(|&x| x != segment)
                    .collect();
                self.retain_segments(&keep);
                Err(e)
            }
        }
    }

    /// Writes the id file of a sealed segment (temp file, rename) and starts using it. The
    /// file is derived data: it is not fsynced; a damaged one is rebuilt on open.
    pub fn write_segment(&self, segment: u64, ids: &IdMap) -> Result<()> {
        // Sorted as big-endian integers: the same order as the bytes', at a fraction of the
        // cost of comparing arrays byte by byte.
        let mut entries: Vec<(u128, u64)> = ids
            .iter()
            .map(|(k, v)| (u128::from_be_bytes(*k), *v))
            .collect();
        entries.sort_unstable();
        let mut bloom = Bloom::with_capacity(entries.len());
        let mut body = Vec::with_capacity(entries.len() * ENTRY_SIZE);
        for (id, p) in &entries {
            let id = id.to_be_bytes();
            bloom.insert(&id);
            body.extend_from_slice(&id);
            body.extend_from_slice(&p.to_le_bytes());
        }
        let mut h = [0u8; HEADER_SIZE];
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&BLOOM_HASHES.to_le_bytes());
        h[16..24].copy_from_slice(&segment.to_le_bytes());
        h[24..32].copy_from_slice(&(entries.len() as u64).to_le_bytes());
        h[32..40].copy_from_slice(&(bloom.words.len() as u64).to_le_bytes());
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            h[40..56].copy_from_slice(&first.0.to_be_bytes());
            h[56..72].copy_from_slice(&last.0.to_be_bytes());
        }
        h[72..76].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
        let bloom_bytes = bloom.to_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h[..76]);
        crc.update(&h[80..]);
        crc.update(&bloom_bytes);
        h[76..80].copy_from_slice(&crc.finalize().to_le_bytes());
        let path = self.dir.join(file_name(segment));
        let tmp = self.dir.join(format!("{}.tmp", file_name(segment)));
        {
            let mut f = std::io::BufWriter::new(File::create(&tmp).map_err(|e| io_err(&tmp, e))?);
            f.write_all(&h).map_err(|e| io_err(&tmp, e))?;
            f.write_all(&bloom_bytes).map_err(|e| io_err(&tmp, e))?;
            f.write_all(&body).map_err(|e| io_err(&tmp, e))?;
            f.flush().map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        let loaded = Arc::new(load(&path)?);
        let mut g = self.sealed.write().unwrap_or_else(|p| p.into_inner());
        let mut files = std::mem::take(&mut g.files);
        files.retain(|s| s.segment != segment);
        files.push(loaded);
        *g = Sealed::new(files);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&mix64(n).to_be_bytes());
        b[8..].copy_from_slice(&n.to_be_bytes());
        b
    }

    #[test]
    fn write_lookup_reload_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let idx = IdIndex::open(dir.path()).unwrap();
        let mut m = IdMap::default();
        for n in 0..5000u64 {
            m.insert(id(n), n + 100);
        }
        idx.write_segment(100, &m).unwrap();
        let mut m2 = IdMap::default();
        m2.insert(id(9999), 7);
        idx.write_segment(7, &m2).unwrap();
        for n in 0..5000u64 {
            assert_eq!(idx.lookup(&id(n)).unwrap(), Some(n + 100));
        }
        assert_eq!(idx.lookup(&id(9999)).unwrap(), Some(7));
        let mut false_hits = 0;
        for n in 10_000..20_000u64 {
            assert_eq!(idx.lookup(&id(n)).unwrap(), None);
            if idx.sealed()[1].bloom.may_contain(filter_hash(&id(n))) {
                false_hits += 1;
            }
        }
        assert!(false_hits < 300, "bloom false positives: {false_hits}");
        // Loaded filters are read through maps of their files, not copied into memory.
        assert!(idx
            .sealed()
            .iter()
            .all(|s| matches!(s.bloom.words, Words::Mapped(_))));
        drop(idx);
        let idx = IdIndex::open(dir.path()).unwrap();
        assert_eq!(idx.segments(), vec![7, 100]);
        assert_eq!(idx.lookup(&id(42)).unwrap(), Some(142));
        // A flipped byte in the header is detected on open and the file dropped.
        let p = dir.path().join(file_name(100));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        drop(idx);
        let idx = IdIndex::open(dir.path()).unwrap();
        assert_eq!(idx.segments(), vec![7]);
        // A flipped byte in the entries is detected on the first lookup that reaches them.
        let p = dir.path().join(file_name(7));
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        drop(idx);
        let idx = IdIndex::open(dir.path()).unwrap();
        assert!(idx.lookup(&id(9999)).is_err());
        drop(idx);
        // A header that declares entries but no filter words is refused, not divided by.
        let p = dir.path().join(file_name(100));
        idx_file_with_words(&p, 0);
        let idx = IdIndex::open(dir.path()).unwrap();
        assert!(!idx.has_segment(100));
    }

    #[test]
    fn the_largest_id_bound_follows_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let idx = IdIndex::open(dir.path()).unwrap();
        let low = |n: u8| [n; 16];
        let mut a = IdMap::default();
        a.insert(low(1), 10);
        a.insert(low(2), 11);
        idx.write_segment(10, &a).unwrap();
        let mut b = IdMap::default();
        b.insert(low(9), 20);
        idx.write_segment(20, &b).unwrap();
        assert_eq!(idx.lookup(&low(9)).unwrap(), Some(20));
        assert_eq!(idx.lookup(&low(2)).unwrap(), Some(11));
        assert_eq!(idx.lookup(&low(10)).unwrap(), None);
        // Without the file holding the largest id, the ids of the others are still found.
        idx.retain_segments(&[10]);
        assert_eq!(idx.lookup(&low(9)).unwrap(), None);
        assert_eq!(idx.lookup(&low(1)).unwrap(), Some(10));
        idx.retain_segments(&[]);
        assert_eq!(idx.lookup(&low(1)).unwrap(), None);
    }

    #[test]
    fn lookups_search_every_file_across_batches_of_filters() {
        // More files than one batch of filter probes (64), random ids as v4 ones are: the
        // range check skips none, every lookup goes through the filters.
        let dir = tempfile::tempdir().unwrap();
        let idx = IdIndex::open(dir.path()).unwrap();
        let files = 70u64;
        for f in 0..files {
            let mut m = IdMap::default();
            for i in 0..200 {
                m.insert(id(f * 1000 + i), f * 1000 + i + 1);
            }
            idx.write_segment(f * 1000, &m).unwrap();
        }
        for f in [0, 5, 63, 64, 69] {
            for i in [0, 57, 199] {
                let n = f * 1000 + i;
                assert_eq!(idx.lookup(&id(n)).unwrap(), Some(n + 1), "id {n}");
            }
        }
        for n in (0..files * 1000).step_by(7).filter(|n| n % 1000 >= 200) {
            assert_eq!(idx.lookup(&id(n)).unwrap(), None, "id {n}");
        }
    }

    #[test]
    fn a_file_of_the_previous_format_is_dropped_on_open_to_be_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let idx = IdIndex::open(dir.path()).unwrap();
        let mut m = IdMap::default();
        m.insert(id(1), 1);
        idx.write_segment(1, &m).unwrap();
        drop(idx);
        let p = dir.path().join(file_name(1));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let idx = IdIndex::open(dir.path()).unwrap();
        assert!(!idx.has_segment(1));
        assert_eq!(idx.lookup(&id(1)).unwrap(), None);
        assert!(!p.exists());
    }

    /// Writes a one-entry id file at `path` whose header declares `words` filter words,
    /// with valid checksums.
    fn idx_file_with_words(path: &Path, words: u64) {
        let mut h = [0u8; HEADER_SIZE];
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&BLOOM_HASHES.to_le_bytes());
        h[16..24].copy_from_slice(&100u64.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&words.to_le_bytes());
        h[40..56].copy_from_slice(&id(1));
        h[56..72].copy_from_slice(&id(1));
        let mut body = id(1).to_vec();
        body.extend_from_slice(&100u64.to_le_bytes());
        h[72..76].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
        let bloom = vec![0xffu8; words as usize * 8];
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h[..76]);
        crc.update(&h[80..]);
        crc.update(&bloom);
        h[76..80].copy_from_slice(&crc.finalize().to_le_bytes());
        let mut bytes = h.to_vec();
        bytes.extend_from_slice(&bloom);
        bytes.extend_from_slice(&body);
        std::fs::write(path, bytes).unwrap();
    }
}
