//! The event-id index: one immutable file per sealed segment, with a bloom filter read
//! through a memory map, and one group filter file per [`GROUP_SEGMENTS`] sealed segments, so
//! that checking an id on the append path costs one probe of one cache line per group (and
//! per segment not in a group yet) instead of a B-tree lookup, and indexing an event costs
//! nothing until its segment is sealed. A time-ordered (v7) id newer than every sealed id
//! skips all of it with one comparison.
//!
//! Ids of the active segment are held in memory by the writer; when a segment is sealed they
//! are written here, sorted. A missing or damaged file is rebuilt from its segment on open; a
//! missing or damaged group filter from its segments' id files.
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

pub use crate::id_map::IdMap;

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
            words: Words::Owned(crate::written_zeros(bloom_words_for(n as u64) as usize)),
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
    /// Checks the entries against their checksum (once: the answer is kept).
    fn verify_entries(&self) -> Result<()> {
        if self.entries_verified.load(Ordering::Acquire) {
            return Ok(());
        }
        self.for_each_id(|_| {})
    }

    /// Passes every id of the file, in order, to `visit`, reading the entries in large
    /// chunks; fails (after the visits) if they do not match their checksum, and otherwise
    /// records them as verified.
    fn for_each_id(&self, mut visit: impl FnMut(&[u8; 16])) -> Result<()> {
        const CHUNK_BYTES: usize = 32 * 1024 * ENTRY_SIZE;
        let mut crc = crc32fast::Hasher::new();
        let len = self.count * ENTRY_SIZE as u64;
        for_each_chunk(
            &self.file,
            &self.path,
            self.entries_offset,
            len,
            CHUNK_BYTES,
            |chunk| {
                crc.update(chunk);
                for e in chunk.chunks_exact(ENTRY_SIZE) {
                    if let Some(id) = e.first_chunk::<16>() {
                        visit(id);
                    }
                }
            },
        )?;
        if crc.finalize() != self.entries_crc {
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
    /// Held while group filters are built: one builder at a time (the indexer, and the writer
    /// when it rebuilds a damaged id file), so that two never write the same file.
    building: std::sync::Mutex<()>,
}

/// The loaded id files, in segment order, the group filters over them, and the largest id of
/// any of them: an id above it (every new time-ordered id) is in none of them, whatever their
/// number.
struct Sealed {
    files: Vec<Arc<SegmentIds>>,
    groups: Vec<Arc<GroupFilter>>,
    /// What a look-up probes, oldest first: each group with the indices (in `files`) of its
    /// members, and each file no group covers.
    units: Vec<Unit>,
    max: Option<[u8; 16]>,
}

enum Unit {
    File(usize),
    Group {
        group: usize,
        members: Vec<usize>,
        min: [u8; 16],
        max: [u8; 16],
    },
}

impl Sealed {
    fn new(mut files: Vec<Arc<SegmentIds>>, mut groups: Vec<Arc<GroupFilter>>) -> Sealed {
        files.sort_by_key(|s| s.segment);
        groups.sort_by_key(|g| g.first_segment());
        let max = files.iter().filter(|s| s.count > 0).map(|s| s.max).max();
        let mut units = Vec::new();
        let mut covered = vec![false; files.len()];
        let mut pending_groups = groups.iter().enumerate().peekable();
        for (i, f) in files.iter().enumerate() {
            // A group takes its place at its first member: every member it has among the files.
            while let Some((gi, g)) =
                pending_groups.next_if(|(_, g)| g.first_segment() <= f.segment)
            {
                let members: Vec<usize> = files
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| g.segments.contains(&f.segment))
                    .map(|(j, _)| j)
                    .collect();
                for &j in &members {
                    if let Some(c) = covered.get_mut(j) {
                        *c = true;
                    }
                }
                let held = || {
                    members
                        .iter()
                        .filter_map(|&j| files.get(j))
                        .filter(|f| f.count > 0)
                };
                if let (Some(min), Some(max)) =
                    (held().map(|f| f.min).min(), held().map(|f| f.max).max())
                {
                    units.push(Unit::Group {
                        group: gi,
                        members,
                        min,
                        max,
                    });
                }
            }
            if !covered.get(i).copied().unwrap_or(true) {
                units.push(Unit::File(i));
            }
        }
        Sealed {
            files,
            groups,
            units,
            max,
        }
    }

    /// Whether `unit` may hold `id` (filter hash `h`): a file's range and filter, or a
    /// group's range and filter.
    fn may_hold(&self, unit: &Unit, id: &[u8; 16], h: u64) -> bool {
        match unit {
            Unit::File(i) => self.files.get(*i).is_some_and(|f| f.may_hold(id, h)),
            Unit::Group {
                group, min, max, ..
            } => {
                (id >= min)
                    & (id <= max)
                    & self
                        .groups
                        .get(*group)
                        .is_some_and(|g| g.bloom.may_contain(h))
            }
        }
    }

    /// Searches the files of `indices` (newest first) whose filters let `id` through; stops at
    /// the first damaged one, returned with the error.
    fn search(
        &self,
        indices: &[usize],
        id: &[u8; 16],
        h: u64,
    ) -> std::result::Result<Option<u64>, (u64, IndexError)> {
        first_found(
            indices,
            |&f| self.files.get(f).is_some_and(|f| f.may_hold(id, h)),
            |&f| match self.files.get(f) {
                Some(f) => f.search(id).map_err(|e| (f.segment, e)),
                None => Ok(None),
            },
        )
    }

    /// The position of `id` in any file: the units' filters first (a group's stands for its
    /// members), then the members of the groups that said "maybe", then the searches.
    fn lookup(&self, id: &[u8; 16]) -> std::result::Result<Option<u64>, (u64, IndexError)> {
        let h = filter_hash(id);
        first_found(
            &self.units,
            |u| self.may_hold(u, id, h),
            |u| match u {
                Unit::File(f) => self.search(std::slice::from_ref(f), id, h),
                Unit::Group { members, .. } => self.search(members, id, h),
            },
        )
    }
}

/// The first answer `visit` finds among the items (newest, the last, first) that `may` lets
/// through. Up to 64 items are tested at a time before any is visited: independent probes
/// without branches, so that their cache and TLB misses overlap; then only the few that said
/// "maybe" are visited.
fn first_found<T, E>(
    items: &[T],
    may: impl Fn(&T) -> bool,
    mut visit: impl FnMut(&T) -> std::result::Result<Option<u64>, E>,
) -> std::result::Result<Option<u64>, E> {
    for batch in items.rchunks(64) {
        let mut maybe = 0u64;
        for (i, item) in batch.iter().enumerate() {
            maybe |= u64::from(may(item)) << i;
        }
        while maybe != 0 {
            let i = 63 - maybe.leading_zeros() as usize;
            maybe &= !(1 << i);
            let Some(item) = batch.get(i) else { continue };
            if let Some(found) = visit(item)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// Sealed segments one group filter covers.
pub const GROUP_SEGMENTS: usize = 8;
const GROUP_MAGIC: [u8; 8] = *b"\x89OXG\r\n\x1a\n";
const GROUP_VERSION: u32 = 1;
/// Where a group file's checksum lies: after the fields and the segments.
const GROUP_CRC_AT: usize = 32 + 8 * GROUP_SEGMENTS;
/// Group file header: fields, the segments, the checksum, zeros up to a cache line boundary.
const GROUP_HEADER_SIZE: usize = (GROUP_CRC_AT + 4).next_multiple_of(64);

/// One bloom filter over the ids of [`GROUP_SEGMENTS`] sealed segments, so that a look-up of
/// an id that is not time-ordered probes one filter per group instead of one per segment.
///
/// File `{first segment:020}.group` (little endian), derived like the id files and rebuilt
/// from them when missing or damaged:
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 8 | magic `\x89OXG\r\n\x1a\n` |
/// | 8 | 4 | format version (1) |
/// | 12 | 4 | segment count g (8) |
/// | 16 | 8 | id count n |
/// | 24 | 8 | filter words w (as in an id file) |
/// | 32 | 64 | the segments (first positions), ascending |
/// | 96 | 4 | CRC32 of bytes 0..96, 100..128 and the filter words |
/// | 100 | 28 | zero |
/// | 128 | 8w | split-block bloom filter of all the segments' ids |
struct GroupFilter {
    segments: Vec<u64>,
    bloom: Bloom,
}

impl GroupFilter {
    fn first_segment(&self) -> u64 {
        self.segments.first().copied().unwrap_or(0)
    }
}

/// The file name of the group filter whose first segment is `segment`.
fn group_file_name(segment: u64) -> String {
    crate::segment_file_name(segment, "group")
}

fn group_header(segments: &[u64], ids: u64, words: u64) -> [u8; GROUP_HEADER_SIZE] {
    let mut h = [0u8; GROUP_HEADER_SIZE];
    h[..8].copy_from_slice(&GROUP_MAGIC);
    h[8..12].copy_from_slice(&GROUP_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(segments.len() as u32).to_le_bytes());
    h[16..24].copy_from_slice(&ids.to_le_bytes());
    h[24..32].copy_from_slice(&words.to_le_bytes());
    for (slot, s) in h[32..GROUP_CRC_AT].chunks_exact_mut(8).zip(segments) {
        slot.copy_from_slice(&s.to_le_bytes());
    }
    h
}

fn load_group(path: &Path) -> Result<GroupFilter> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let damaged =
        |why: &str| IndexError::Db(format!("group file {} is damaged: {why}", path.display()));
    if len < GROUP_HEADER_SIZE as u64 {
        return Err(damaged("shorter than its header"));
    }
    let mut h = [0u8; GROUP_HEADER_SIZE];
    file.read_exact_at(&mut h, 0).map_err(|e| io_err(path, e))?;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let (ids, words) = (u64_at(16), u64_at(24));
    let segments: Vec<u64> = (0..GROUP_SEGMENTS).map(|i| u64_at(32 + 8 * i)).collect();
    if h[..8] != GROUP_MAGIC
        || u32_at(8) != GROUP_VERSION
        || u32_at(12) as usize != GROUP_SEGMENTS
        || ids > IDS_PER_SEGMENT_MAX * GROUP_SEGMENTS as u64
        || words != bloom_words_for(ids)
        || segments.windows(2).any(|w| w[0] >= w[1])
        || h[GROUP_CRC_AT + 4..].iter().any(|b| *b != 0)
    {
        return Err(damaged("header field out of bounds"));
    }
    if len != GROUP_HEADER_SIZE as u64 + words * 8 {
        return Err(damaged("length disagrees with the header"));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[..GROUP_CRC_AT]);
    crc.update(&h[GROUP_CRC_AT + 4..]);
    hash_range(&file, path, &mut crc, GROUP_HEADER_SIZE as u64, words * 8)?;
    if crc.finalize() != u32_at(GROUP_CRC_AT) {
        return Err(damaged("checksum mismatch"));
    }
    let words =
        map_words(&file, GROUP_HEADER_SIZE as u64, words * 8).map_err(|e| io_err(path, e))?;
    Ok(GroupFilter {
        segments,
        bloom: Bloom { words },
    })
}

/// The file name of a segment's id file.
pub fn file_name(segment: u64) -> String {
    crate::segment_file_name(segment, "ids")
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
    let bloom_words =
        map_words(&file, HEADER_SIZE as u64, bloom_len).map_err(|e| io_err(path, e))?;
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

/// Writes `parts` one after the other to `dir/name` as a whole: to a temporary name first,
/// then renamed into place (not fsynced: these files are derived and rebuilt when damaged).
fn write_whole(dir: &Path, name: &str, parts: &[&[u8]]) -> Result<PathBuf> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::io::BufWriter::new(File::create(&tmp).map_err(|e| io_err(&tmp, e))?);
        for part in parts {
            f.write_all(part).map_err(|e| io_err(&tmp, e))?;
        }
        f.flush().map_err(|e| io_err(&tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
    Ok(path)
}

/// Passes `len` bytes of `file` from `offset` to `visit`, in chunks of at most `chunk_len`
/// bytes (every chunk but the last exactly that long).
fn for_each_chunk(
    file: &File,
    path: &Path,
    offset: u64,
    len: u64,
    chunk_len: usize,
    mut visit: impl FnMut(&[u8]),
) -> Result<()> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(chunk_len)];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, offset + done)
            .map_err(|e| io_err(path, e))?;
        visit(chunk);
        done += n as u64;
    }
    Ok(())
}

/// Feeds `len` bytes of `file` from `offset` to `crc`, reading at most 1 MiB at a time.
fn hash_range(
    file: &File,
    path: &Path,
    crc: &mut crc32fast::Hasher,
    offset: u64,
    len: u64,
) -> Result<()> {
    for_each_chunk(file, path, offset, len, 1 << 20, |chunk| crc.update(chunk))
}

/// Maps the filter of an id file or a group file (`len` bytes at `offset`) read-only.
fn map_words(file: &File, offset: u64, len: u64) -> std::io::Result<Words> {
    let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    if len == 0 {
        return Ok(Words::Owned(Vec::new()));
    }
    // SAFETY: id files and group files are immutable once renamed into place (written whole to a temporary
    // name first) and this process never writes them again; the length was checked against
    // the file's size above. What the map cannot guard against is another process truncating
    // or rewriting the file while it is open: a probe of a page cut off would be SIGBUS, as
    // for the segment maps (docs/architecture.md, "Reads").
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
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
        let mut groups = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = dir.join(&name);
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if let Some(first) = crate::parse_segment_file_name(&name, "group") {
                match load_group(&path) {
                    Ok(g) if g.first_segment() == first => groups.push(Arc::new(g)),
                    Ok(_) | Err(_) => {
                        tracing::warn!(file = %path.display(), "damaged group filter; it will be rebuilt");
                        let _ = std::fs::remove_file(&path);
                    }
                }
                continue;
            }
            let Some(segment) = crate::parse_segment_file_name(&name, "ids") else {
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
        let idx = IdIndex {
            dir: dir.to_path_buf(),
            sealed: RwLock::new(Sealed::new(sealed, groups)),
            building: std::sync::Mutex::new(()),
        };
        idx.build_missing_groups();
        Ok(idx)
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

    /// Forgets (and deletes) the id files of segments not in `keep`, and the group filters
    /// that name any such segment: a group takes in the id file of each segment it names, so
    /// a stale group would stand in for the file of a new segment that later gets one of its
    /// numbers (a log restored from an older copy grows again from the same positions), and
    /// answer for it from the old ids.
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
        let mut groups = std::mem::take(&mut g.groups);
        self.drop_groups(&mut groups, |gr| {
            gr.segments.iter().any(|s| !keep.contains(s))
        });
        *g = Sealed::new(files, groups);
    }

    /// Removes (and deletes the files of) the groups for which `stale` holds.
    fn drop_groups(
        &self,
        groups: &mut Vec<Arc<GroupFilter>>,
        stale: impl Fn(&GroupFilter) -> bool,
    ) {
        groups.retain(|gr| {
            if !stale(gr) {
                return true;
            }
            let _ = std::fs::remove_file(self.dir.join(group_file_name(gr.first_segment())));
            false
        });
    }

    /// The position of `id` in a sealed segment, if any.
    pub fn lookup(&self, id: &[u8; 16]) -> Result<Option<u64>> {
        let damaged = {
            let sealed = self.sealed.read().unwrap_or_else(|p| p.into_inner());
            if sealed.max.is_none_or(|max| id > &max) {
                return Ok(None);
            }
            match sealed.lookup(id) {
                Ok(found) => return Ok(found),
                Err(damaged) => damaged,
            }
        };
        // Forget the damaged file; the next open rebuilds it from its segment.
        let (segment, e) = damaged;
        let keep: Vec<u64> = self
            .segments()
            .into_iter()
            .filter(|&x| x != segment)
            .collect();
        self.retain_segments(&keep);
        Err(e)
    }

    /// Writes the id file of a sealed segment (temp file, rename) and starts using it. The
    /// file is derived data: it is not fsynced; a damaged one is rebuilt on open.
    pub fn write_segment(&self, segment: u64, ids: &IdMap) -> Result<()> {
        // Sorted as big-endian integers: the same order as the bytes', at a fraction of the
        // cost of comparing arrays byte by byte.
        let mut entries: Vec<(u128, u64)> = ids
            .iter()
            .map(|(k, v)| (u128::from_be_bytes(*k), v))
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
        let path = write_whole(&self.dir, &file_name(segment), &[&h, &bloom_bytes, &body])?;
        let loaded = Arc::new(load(&path)?);
        {
            let mut g = self.sealed.write().unwrap_or_else(|p| p.into_inner());
            let mut files = std::mem::take(&mut g.files);
            files.retain(|s| s.segment != segment);
            files.push(loaded);
            // A group naming the segment was built from other ids than these (a file
            // rebuilt after damage, or a segment of the same number in another history):
            // built again with them.
            let mut groups = std::mem::take(&mut g.groups);
            self.drop_groups(&mut groups, |gr| gr.segments.contains(&segment));
            *g = Sealed::new(files, groups);
        }
        self.build_missing_groups();
        Ok(())
    }

    /// [`IdIndex::build_groups`], a failure only logged: the filters speed look-ups up, the
    /// id files alone answer them.
    fn build_missing_groups(&self) {
        if let Err(e) = self.build_groups() {
            tracing::warn!(error = %e, "cannot write a group filter; look-ups probe each id file");
        }
    }

    /// Writes the group filter of every [`GROUP_SEGMENTS`] consecutive id files that no group
    /// covers yet (oldest first), from their entries, and starts using it. Derived data like
    /// the id files: not fsynced; a file whose entries fail their checksum leaves its group
    /// unbuilt (its look-ups report the damage).
    pub fn build_groups(&self) -> Result<()> {
        let _one_builder = self.building.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let todo: Vec<Arc<SegmentIds>> = {
                let g = self.sealed.read().unwrap_or_else(|p| p.into_inner());
                g.files
                    .iter()
                    .filter(|f| !g.groups.iter().any(|gr| gr.segments.contains(&f.segment)))
                    .take(GROUP_SEGMENTS)
                    .cloned()
                    .collect()
            };
            if todo.len() < GROUP_SEGMENTS {
                return Ok(());
            }
            let ids: u64 = todo.iter().map(|f| f.count).sum();
            let mut bloom = Bloom::with_capacity(usize::try_from(ids).unwrap_or(usize::MAX));
            for f in &todo {
                if f.for_each_id(|id| bloom.insert(id)).is_err() {
                    tracing::warn!(file = %f.path.display(), "damaged id file; its group filter waits for its rebuild");
                    return Ok(());
                }
            }
            let segments: Vec<u64> = todo.iter().map(|f| f.segment).collect();
            let first = segments.first().copied().unwrap_or(0);
            let words = bloom.words.len() as u64;
            let mut h = group_header(&segments, ids, words);
            let bloom_bytes = bloom.to_bytes();
            let mut crc = crc32fast::Hasher::new();
            crc.update(&h[..GROUP_CRC_AT]);
            crc.update(&h[GROUP_CRC_AT + 4..]);
            crc.update(&bloom_bytes);
            h[GROUP_CRC_AT..GROUP_CRC_AT + 4].copy_from_slice(&crc.finalize().to_le_bytes());
            let path = write_whole(&self.dir, &group_file_name(first), &[&h, &bloom_bytes])?;
            let loaded = Arc::new(load_group(&path)?);
            let mut g = self.sealed.write().unwrap_or_else(|p| p.into_inner());
            let files = std::mem::take(&mut g.files);
            let mut groups = std::mem::take(&mut g.groups);
            groups.retain(|gr| gr.first_segment() != first);
            groups.push(loaded);
            *g = Sealed::new(files, groups);
        }
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
        // More units (groups and files alone) than one batch of filter probes (64), random
        // ids as v4 ones are: the range checks skip none, every lookup goes through the
        // filters.
        let dir = tempfile::tempdir().unwrap();
        let files = 64 * GROUP_SEGMENTS as u64 + 10;
        let idx = index_of_files(dir.path(), files);
        let g = GROUP_SEGMENTS as u64;
        let units = idx.sealed.read().unwrap().units.len() as u64;
        assert_eq!(units, files / g + files % g);
        assert!(units > 64);
        for f in [0, 5, 9, 10, 300, files - 11, files - 10, files - 1] {
            for i in [0, 57, 199] {
                let n = f * 1000 + i;
                assert_eq!(idx.lookup(&id(n)).unwrap(), Some(n + 1), "id {n}");
            }
        }
        for n in (0..files * 1000).step_by(97).filter(|n| n % 1000 >= 200) {
            assert_eq!(idx.lookup(&id(n)).unwrap(), None, "id {n}");
        }
    }

    /// An index of `files` id files of 200 ids each (segment f * 1000 holds ids f * 1000 ..
    /// f * 1000 + 199 at position id + 1).
    fn index_of_files(dir: &Path, files: u64) -> IdIndex {
        let idx = IdIndex::open(dir).unwrap();
        for f in 0..files {
            let mut m = IdMap::default();
            for i in 0..200 {
                m.insert(id(f * 1000 + i), f * 1000 + i + 1);
            }
            idx.write_segment(f * 1000, &m).unwrap();
        }
        idx
    }

    /// Flips a bit of the last byte of the file at `p`; returns the damaged bytes.
    fn flip_last_byte(p: &Path) -> Vec<u8> {
        let mut bytes = std::fs::read(p).unwrap();
        if let Some(b) = bytes.last_mut() {
            *b ^= 0x10;
        }
        std::fs::write(p, &bytes).unwrap();
        bytes
    }

    fn group_count(idx: &IdIndex) -> usize {
        idx.sealed.read().unwrap().groups.len()
    }

    #[test]
    fn every_eight_files_get_a_group_filter_that_lookups_go_through() {
        let dir = tempfile::tempdir().unwrap();
        let idx = index_of_files(dir.path(), 20);
        // 20 files: two groups, 4 files alone.
        assert_eq!(group_count(&idx), 2);
        let units = idx.sealed.read().unwrap().units.len();
        assert_eq!(units, 2 + 4);
        for p in [
            dir.path().join(group_file_name(0)),
            dir.path().join(group_file_name(8_000)),
        ] {
            assert!(p.exists(), "{}", p.display());
        }
        let check = |idx: &IdIndex| {
            for n in [0, 199, 7_000, 7_123, 8_000, 15_199, 16_000, 19_199] {
                assert_eq!(idx.lookup(&id(n)).unwrap(), Some(n + 1), "id {n}");
            }
            for n in [200, 7_500, 19_200, 20_000] {
                assert_eq!(idx.lookup(&id(n)).unwrap(), None, "id {n}");
            }
        };
        check(&idx);
        // Reopened, the groups are loaded, not rebuilt.
        drop(idx);
        let before = std::fs::metadata(dir.path().join(group_file_name(0)))
            .unwrap()
            .modified()
            .unwrap();
        let idx = IdIndex::open(dir.path()).unwrap();
        assert_eq!(group_count(&idx), 2);
        let after = std::fs::metadata(dir.path().join(group_file_name(0)))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
        check(&idx);
        // A group filter that says "no" for an id hides it: the files alone are not probed.
        let g = idx.sealed.read().unwrap().groups[0].clone();
        assert!(!g.bloom.may_contain(filter_hash(&id(8_000))));
        assert!(g.bloom.may_contain(filter_hash(&id(5_007))));
    }

    #[test]
    fn a_damaged_or_missing_group_filter_is_rebuilt_on_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(index_of_files(dir.path(), 17));
        let p = dir.path().join(group_file_name(8_000));
        let bytes = flip_last_byte(&p);
        std::fs::remove_file(dir.path().join(group_file_name(0))).unwrap();
        let idx = IdIndex::open(dir.path()).unwrap();
        assert_eq!(group_count(&idx), 2);
        assert_ne!(std::fs::read(&p).unwrap(), bytes);
        for n in [3, 8_003, 15_199, 16_199] {
            assert_eq!(idx.lookup(&id(n)).unwrap(), Some(n + 1), "id {n}");
        }
        // A group file whose segments are not in order is refused too.
        drop(idx);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.swap(32, 40);
        std::fs::write(&p, &bytes).unwrap();
        assert!(load_group(&p).is_err());
    }

    #[test]
    fn a_group_filter_that_cannot_be_written_leaves_the_id_files_working() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the group's temporary file would go: creating it fails.
        std::fs::create_dir(dir.path().join(format!("{}.tmp", group_file_name(0)))).unwrap();
        let idx = index_of_files(dir.path(), GROUP_SEGMENTS as u64 + 1);
        assert_eq!(group_count(&idx), 0);
        assert_eq!(idx.segments().len(), GROUP_SEGMENTS + 1);
        for n in [3, 5_003, 8_199] {
            assert_eq!(idx.lookup(&id(n)).unwrap(), Some(n + 1), "id {n}");
        }
        assert_eq!(idx.lookup(&id(8_200)).unwrap(), None);
    }

    #[test]
    fn a_damaged_member_of_a_group_is_reported_by_the_lookup_that_reaches_it() {
        let dir = tempfile::tempdir().unwrap();
        drop(index_of_files(dir.path(), 8));
        flip_last_byte(&dir.path().join(file_name(5_000)));
        let idx = IdIndex::open(dir.path()).unwrap();
        assert_eq!(group_count(&idx), 1);
        assert!(idx.lookup(&id(5_003)).is_err());
        // The damaged file is forgotten; the rest is still found through the group.
        assert!(!idx.has_segment(5_000));
        assert_eq!(idx.lookup(&id(7_003)).unwrap(), Some(7_004));
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
