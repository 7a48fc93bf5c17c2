//! The index of Orchestrix: derived from the log, written behind it, rebuildable.
//!
//! Tables (redb):
//! - `frames`: first position of a frame -> (segment, offset, length, event count); a sparse
//!   index (Kafka's `.index`): one entry at the start of each segment and then one per
//!   [`FRAME_INDEX_INTERVAL_BYTES`] of log, so locating a position is a range lookup plus a
//!   short scan.
//! - `stream_chunks`: (stream number, first version) -> (segment, last version, entry index,
//!   entry count, CRC): one row per chunk of a sealed segment's stream index file (see
//!   [`streams`]; at most [`streams::CHUNK_ENTRIES_MAX`] batches of one stream per row). The
//!   active segment's batches are not here: the engine holds them in memory until the segment
//!   is sealed and its file written, so an append costs no row of its own. Lookups go
//!   through a bounded in-memory cache of whole chunk lists (`chunk_cache`).
//! - `stream_segments`: segment -> number of chunks: the sealed segments whose chunks are in
//!   `stream_chunks` (a segment missing here after a crash is registered again from its file).
//! - `streams`: stream -> (stream number, last version): the stream heads, restored on open;
//!   written only by durable checkpoints, together with the checkpoint. Stream numbers are
//!   dense and given in order of first appearance in the log, so replaying the log assigns
//!   the same ones again; fixed-width keys keep `stream_batches` inserts cheap.
//! - `types`: (event type, page) -> (): the 1024-position pages holding events of a type.
//! - `times`: (earliest event time in the frame, frame first position) -> (), one entry per
//!   100 ms of event time.
//! - `meta`: `checkpoint` (written only by durable commits) and `indexed` (the position after
//!   the last applied frame, written by every commit).
//!
//! Event ids are not in redb either: see [`ids`], one immutable file per sealed segment.
//!
//! Frames are applied without an fsync of their own ([`Durability::None`]); a periodic durable
//! commit records the checkpoint and the stream heads. After a crash redb returns to a commit
//! whose checkpoint says where replaying the log must start; rows past it are re-applied
//! identically. Deleting the file is harmless: the next open rebuilds it from the log.
#![deny(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

mod chunk_cache;
mod id_map;
pub mod ids;
pub mod streams;

use orchestrix_log::{Checkpoint, FrameLocation};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use streams::ChunkRow;

/// The name of a per-segment file: the segment's first position in 20 digits, then
/// `.{extension}` (`ids`, `group`, `streams`), so that names sort in log order.
pub(crate) fn segment_file_name(segment: u64, extension: &str) -> String {
    format!("{segment:020}.{extension}")
}

/// The segment a name made by [`segment_file_name`] with `extension` stands for.
pub(crate) fn parse_segment_file_name(name: &str, extension: &str) -> Option<u64> {
    let digits = name.strip_suffix(extension)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// (segment, offset, length, event count) of a frame.
type FrameValue = (u64, u64, u64, u32);
/// (segment, last version, entry index, entry count, CRC) of a stream chunk.
type ChunkValue = (u64, u64, u64, u32, u32);

const FRAMES: TableDefinition<u64, FrameValue> = TableDefinition::new("frames");
const STREAM_CHUNKS: TableDefinition<(u64, u64), ChunkValue> =
    TableDefinition::new("stream_chunks");
const STREAM_SEGMENTS: TableDefinition<u64, u64> = TableDefinition::new("stream_segments");
const STREAMS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("streams");
const TYPES: TableDefinition<(&str, u64), ()> = TableDefinition::new("types");
const TIMES: TableDefinition<(i64, u64), ()> = TableDefinition::new("times");
const META: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("meta");
const CHECKPOINT_KEY: &str = "checkpoint";
const INDEXED_KEY: &str = "indexed";

/// A `frames` entry is written at least every this many bytes of log.
pub const FRAME_INDEX_INTERVAL_BYTES: u64 = 32 * 1024;
/// redb's page cache: bounded, so that resident memory does not grow with the index.
pub const INDEX_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Granularity of the type index, in positions.
pub const TYPE_PAGE_EVENTS: u64 = 1024;
/// Granularity of the time index, in nanoseconds.
pub const TIME_BUCKET_NANOS: i64 = 100_000_000;

/// What the sparse tables last recorded, to decide whether the next frame needs a row.
#[derive(Default)]
struct SparseState {
    last_frame: Option<(u64, u64)>,
    type_pages: HashMap<Arc<str>, u64>,
    last_time_bucket: Option<i64>,
}

/// Errors of the index.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// redb failed (I/O, corruption, ...).
    #[error("index database error: {0}")]
    Db(String),
}

/// `n` zeros, written: for tables that are read before they are written (a probe, a bit
/// set). A large zeroed allocation is fresh pages that the kernel maps on first touch, and a
/// read maps its shared zero page, so that the write after it takes a copy-on-write fault
/// whose TLB flush interrupts every other CPU running the process (a costly exit on a
/// virtual machine). Writing the zeros up front takes each page's fault once, with no flush.
#[allow(
    clippy::slow_vector_initialization,
    reason = "vec![0; n] is the zeroed allocation this avoids"
)]
pub(crate) fn written_zeros(n: usize) -> Vec<u64> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, 0);
    v
}

fn db_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Db(e.to_string())
}

/// Result alias of the index crate.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// A stream's number and last version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHead {
    /// Dense number of the stream, in order of first appearance in the log.
    pub number: u64,
    /// Last version.
    pub version: u64,
}

/// The part of one stream in one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    /// Stream id (shared with the stream heads: no copy per append).
    pub stream: Arc<str>,
    /// Stream number.
    pub stream_number: u64,
    /// Version of the first event.
    pub first_version: u64,
    /// Position of the first event.
    pub first_position: u64,
    /// Number of events.
    pub count: u32,
}

/// What the index needs to know about one frame.
#[derive(Debug, Clone)]
pub struct FrameSummary {
    /// Where the frame is.
    pub location: FrameLocation,
    /// Its first position.
    pub first_position: u64,
    /// Its number of events.
    pub event_count: u32,
    /// Per-stream batches.
    pub batches: Vec<BatchSummary>,
    /// Distinct event types (shared: the writer keeps one copy of each type name).
    pub types: Vec<Arc<str>>,
    /// Earliest event time (Unix nanoseconds).
    pub min_time_unix_nanos: i64,
}

/// An indexed frame: where it is and which positions it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    /// Where the frame is.
    pub location: FrameLocation,
    /// First position.
    pub first_position: u64,
    /// Number of events.
    pub event_count: u32,
}

/// An indexed stream batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEntry {
    /// Version of the first event.
    pub first_version: u64,
    /// Position of the first event.
    pub first_position: u64,
    /// Number of events.
    pub count: u32,
    /// The frame holding it.
    pub location: FrameLocation,
}

/// The persistent index.
pub struct Index {
    db: Database,
    sparse: Mutex<SparseState>,
    chunks: chunk_cache::ChunkCache,
}

impl Index {
    /// Opens or creates the index file.
    pub fn open(path: &Path) -> Result<Index> {
        // redb panics on some kinds of damage (a truncated file, zeroed pages) instead of
        // returning an error. The index is derived data, so any failure here, panic or error,
        // becomes an error that makes the caller rebuild it from the log.
        match std::panic::catch_unwind(|| Self::open_checked(path)) {
            Ok(r) => r,
            Err(_) => Err(IndexError::Db(format!(
                "index file {} is damaged (the database engine panicked while opening it)",
                path.display()
            ))),
        }
    }

    fn open_checked(path: &Path) -> Result<Index> {
        let mut db = Database::builder()
            .set_cache_size(INDEX_CACHE_BYTES)
            .create(path)
            .map_err(db_err)?;
        // Verifies every page's checksum; damage at rest is found here, not in a later read.
        if !db.check_integrity().map_err(db_err)? {
            return Err(IndexError::Db(format!(
                "index file {} failed its integrity check",
                path.display()
            )));
        }
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(FRAMES).map_err(db_err)?;
            txn.open_table(STREAM_CHUNKS).map_err(db_err)?;
            txn.open_table(STREAM_SEGMENTS).map_err(db_err)?;
            txn.open_table(STREAMS).map_err(db_err)?;
            txn.open_table(TYPES).map_err(db_err)?;
            txn.open_table(TIMES).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(Index {
            db,
            sparse: Mutex::new(SparseState::default()),
            chunks: chunk_cache::ChunkCache::default(),
        })
    }

    /// The checkpoint: every frame before it is applied.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(META).map_err(db_err)?;
        Ok(t.get(CHECKPOINT_KEY).map_err(db_err)?.map(|v| {
            let (segment, offset, next_position) = v.value();
            Checkpoint {
                segment,
                offset,
                next_position,
            }
        }))
    }

    /// Every stream with its number and last version, as of the durable checkpoint.
    pub fn stream_heads(&self) -> Result<Vec<(String, StreamHead)>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(STREAMS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let (number, version) = v.value();
            out.push((k.value().to_string(), StreamHead { number, version }));
        }
        Ok(out)
    }

    /// Applies frames in log order, without an fsync. Rows past the durable checkpoint are
    /// re-applied identically after a crash, so this needs no durability of its own.
    pub fn apply(&self, frames: &[FrameSummary]) -> Result<()> {
        let Some(last) = frames.last() else {
            return Ok(());
        };
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::None);
        {
            let mut sparse = self.sparse.lock().unwrap_or_else(|p| p.into_inner());
            let mut t_frames = txn.open_table(FRAMES).map_err(db_err)?;
            let mut t_types = txn.open_table(TYPES).map_err(db_err)?;
            let mut t_times = txn.open_table(TIMES).map_err(db_err)?;
            for f in frames {
                let l = f.location;
                let new_entry = match sparse.last_frame {
                    Some((seg, off)) => {
                        seg != l.segment
                            || l.offset.saturating_sub(off) >= FRAME_INDEX_INTERVAL_BYTES
                    }
                    None => true,
                };
                if new_entry {
                    t_frames
                        .insert(
                            f.first_position,
                            (l.segment, l.offset, l.len, f.event_count),
                        )
                        .map_err(db_err)?;
                    sparse.last_frame = Some((l.segment, l.offset));
                }
                let first_page = f.first_position / TYPE_PAGE_EVENTS;
                let last_page =
                    (f.first_position + u64::from(f.event_count) - 1) / TYPE_PAGE_EVENTS;
                for ty in &f.types {
                    for page in first_page..=last_page {
                        if sparse.type_pages.get(&**ty) != Some(&page) {
                            t_types
                                .insert((&**ty, page * TYPE_PAGE_EVENTS), ())
                                .map_err(db_err)?;
                            sparse.type_pages.insert(ty.clone(), page);
                        }
                    }
                }
                let bucket = f.min_time_unix_nanos.div_euclid(TIME_BUCKET_NANOS);
                if sparse.last_time_bucket != Some(bucket) {
                    t_times
                        .insert((f.min_time_unix_nanos, f.first_position), ())
                        .map_err(db_err)?;
                    sparse.last_time_bucket = Some(bucket);
                }
            }
            let mut t_meta = txn.open_table(META).map_err(db_err)?;
            let next = last.first_position + u64::from(last.event_count);
            t_meta.insert(INDEXED_KEY, (next, 0, 0)).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Durably records the checkpoint and the stream heads that changed since the last one.
    /// Everything applied before is made durable with it.
    pub fn checkpoint_durably(
        &self,
        checkpoint: Checkpoint,
        heads: &[(String, StreamHead)],
    ) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut t_streams = txn.open_table(STREAMS).map_err(db_err)?;
            for (stream, h) in heads {
                t_streams
                    .insert(stream.as_str(), (h.number, h.version))
                    .map_err(db_err)?;
            }
            let mut t_meta = txn.open_table(META).map_err(db_err)?;
            t_meta
                .insert(
                    CHECKPOINT_KEY,
                    (
                        checkpoint.segment,
                        checkpoint.offset,
                        checkpoint.next_position,
                    ),
                )
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Commits durably without moving the checkpoint: lets redb reuse the pages of earlier
    /// non-durable commits (it frees pages only in durable commits).
    pub fn flush(&self) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate);
        txn.commit().map_err(db_err)
    }

    /// The position after the last frame any commit (durable or not) applied.
    pub fn indexed_position(&self) -> Result<Option<u64>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(META).map_err(db_err)?;
        Ok(t.get(INDEXED_KEY).map_err(db_err)?.map(|v| v.value().0))
    }

    /// The last indexed frame starting at or before `position` (the index is sparse: the
    /// frame holding `position` is found by scanning forwards from here).
    pub fn frame_floor(&self, position: u64) -> Result<Option<FrameEntry>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(FRAMES).map_err(db_err)?;
        let mut r = t.range(..=position).map_err(db_err)?;
        let Some(item) = r.next_back() else {
            return Ok(None);
        };
        let (k, v) = item.map_err(db_err)?;
        let (segment, offset, len, event_count) = v.value();
        Ok(Some(FrameEntry {
            location: FrameLocation {
                segment,
                offset,
                len,
            },
            first_position: k.value(),
            event_count,
        }))
    }

    /// Registers the chunks of a sealed segment's stream index file (written by
    /// [`streams::StreamFiles::write_segment`]), without an fsync: after a crash, a segment
    /// missing from [`Index::stream_segments`] is registered again from its file.
    pub fn add_stream_chunks(&self, segment: u64, rows: &[ChunkRow]) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::None);
        {
            let mut t = txn.open_table(STREAM_CHUNKS).map_err(db_err)?;
            for r in rows {
                t.insert(
                    (r.stream_number, r.first_version),
                    (r.segment, r.last_version, r.entry_index, r.count, r.crc),
                )
                .map_err(db_err)?;
            }
            let mut t = txn.open_table(STREAM_SEGMENTS).map_err(db_err)?;
            t.insert(segment, rows.len() as u64).map_err(db_err)?;
        }
        let r = txn.commit().map_err(db_err);
        self.chunks.invalidate();
        r
    }

    /// Sealed segments whose stream chunks are registered.
    pub fn stream_segments(&self) -> Result<Vec<u64>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(STREAM_SEGMENTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            out.push(item.map_err(db_err)?.0.value());
        }
        Ok(out)
    }

    /// The chunks of stream number `stream` that hold versions at or after `from_version`
    /// (forwards) or at or before it (backwards), in that order, at most `limit` chunks.
    pub fn stream_chunks(
        &self,
        stream: u64,
        from_version: u64,
        backwards: bool,
        limit: usize,
    ) -> Result<Vec<ChunkRow>> {
        use chunk_cache::Chunks;
        let generation = match self.chunks.get(stream) {
            Ok(Chunks::All(all)) => {
                return Ok(chunk_cache::select(&all, from_version, backwards, limit))
            }
            Ok(Chunks::Many) => None,
            Err(generation) => Some(generation),
        };
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(STREAM_CHUNKS).map_err(db_err)?;
        let conv = |k: (u64, u64), v: ChunkValue| ChunkRow {
            stream_number: k.0,
            first_version: k.1,
            segment: v.0,
            last_version: v.1,
            entry_index: v.2,
            count: v.3,
            crc: v.4,
        };
        // Most streams have few chunks: read them all, and keep them for the next read. (A
        // stream known to have many goes straight to the range it needs.)
        if let Some(generation) = generation {
            let mut all = Vec::new();
            for item in t.range((stream, 0)..=(stream, u64::MAX)).map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                all.push(conv(k.value(), v.value()));
                if all.len() > chunk_cache::STREAM_CHUNKS_CACHED_MAX {
                    break;
                }
            }
            let many = all.len() > chunk_cache::STREAM_CHUNKS_CACHED_MAX;
            let all: std::sync::Arc<[ChunkRow]> = all.into();
            self.chunks
                .insert(stream, generation, Chunks::All(all.clone()));
            if !many {
                return Ok(chunk_cache::select(&all, from_version, backwards, limit));
            }
        }
        let mut out = Vec::new();
        if backwards {
            for item in t
                .range((stream, 0)..=(stream, from_version))
                .map_err(db_err)?
                .rev()
            {
                let (k, v) = item.map_err(db_err)?;
                out.push(conv(k.value(), v.value()));
                if out.len() >= limit {
                    break;
                }
            }
        } else {
            // The chunk holding `from_version` may start before it.
            if let Some(item) = t
                .range((stream, 0)..=(stream, from_version))
                .map_err(db_err)?
                .next_back()
            {
                let (k, v) = item.map_err(db_err)?;
                let c = conv(k.value(), v.value());
                if c.last_version >= from_version {
                    out.push(c);
                }
            }
            if out.len() < limit {
                for item in t
                    .range((stream, from_version.saturating_add(1))..=(stream, u64::MAX))
                    .map_err(db_err)?
                {
                    let (k, v) = item.map_err(db_err)?;
                    out.push(conv(k.value(), v.value()));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// First positions of the [`TYPE_PAGE_EVENTS`]-position pages holding events of type
    /// `event_type`, from the page of `from` on.
    pub fn pages_with_type(&self, event_type: &str, from: u64, limit: usize) -> Result<Vec<u64>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(TYPES).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t
            .range((event_type, from - from % TYPE_PAGE_EVENTS)..=(event_type, u64::MAX))
            .map_err(db_err)?
            .take(limit)
        {
            let (k, _) = item.map_err(db_err)?;
            out.push(k.value().1);
        }
        Ok(out)
    }

    /// The first position of the earliest frame whose earliest event time is at or after `t`.
    pub fn first_frame_at_or_after_time(&self, t_unix_nanos: i64) -> Result<Option<u64>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(TIMES).map_err(db_err)?;
        let mut r = t.range((t_unix_nanos, 0)..).map_err(db_err)?;
        Ok(match r.next() {
            Some(item) => Some(item.map_err(db_err)?.0.value().1),
            None => None,
        })
    }

    /// Counts: sparse frame entries, stream chunks, checkpointed streams.
    pub fn stats(&self) -> Result<IndexStats> {
        let txn = self.db.begin_read().map_err(db_err)?;
        Ok(IndexStats {
            frames: txn
                .open_table(FRAMES)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?,
            stream_chunks: txn
                .open_table(STREAM_CHUNKS)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?,
            streams: txn
                .open_table(STREAMS)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?,
        })
    }
}

/// Sizes of the index tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Indexed frames.
    pub frames: u64,
    /// Stream chunks of sealed segments.
    pub stream_chunks: u64,
    /// Streams in the last durable checkpoint.
    pub streams: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_file_names_round_trip_and_reject_others() {
        assert_eq!(
            segment_file_name(817_200, "ids"),
            "00000000000000817200.ids"
        );
        assert_eq!(
            parse_segment_file_name("00000000000000817200.ids", "ids"),
            Some(817_200)
        );
        assert_eq!(
            parse_segment_file_name("00000000000000817200.ids", "group"),
            None
        );
        assert_eq!(
            parse_segment_file_name("00000000000000817200ids", "ids"),
            None
        );
        assert_eq!(
            parse_segment_file_name("0000000000000817200.ids", "ids"),
            None
        );
        assert_eq!(
            parse_segment_file_name("0000000000000081720x.ids", "ids"),
            None
        );
        assert_eq!(
            parse_segment_file_name("00000000000000817200.ids.tmp", "ids"),
            None
        );
    }

    fn frame(pos: u64, stream: &str, v: u64, n: u32) -> FrameSummary {
        FrameSummary {
            location: FrameLocation {
                segment: 0,
                offset: 32 + pos * 100,
                len: 100,
            },
            first_position: pos,
            event_count: n,
            batches: vec![BatchSummary {
                stream: stream.into(),
                stream_number: u64::from(stream.as_bytes()[0]),
                first_version: v,
                first_position: pos,
                count: n,
            }],
            types: vec!["T".into()],
            min_time_unix_nanos: pos as i64,
        }
    }

    #[test]
    fn apply_and_query() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("index.redb")).unwrap();
        assert_eq!(idx.checkpoint().unwrap(), None);
        let cp = Checkpoint {
            segment: 0,
            offset: 500,
            next_position: 6,
        };
        idx.apply(&[
            frame(0, "a", 0, 2),
            frame(2, "b", 0, 1),
            frame(3, "a", 2, 3),
        ])
        .unwrap();
        assert_eq!(idx.indexed_position().unwrap(), Some(6));
        assert_eq!(
            idx.checkpoint().unwrap(),
            None,
            "only durable commits checkpoint"
        );
        let h = |number: u8, version| StreamHead {
            number: u64::from(number),
            version,
        };
        idx.checkpoint_durably(cp, &[("a".into(), h(b'a', 4)), ("b".into(), h(b'b', 0))])
            .unwrap();
        assert_eq!(idx.checkpoint().unwrap(), Some(cp));
        // Frames 100 bytes apart: sparse entries every 4 KiB, so only the first one.
        assert_eq!(idx.frame_floor(4).unwrap().unwrap().first_position, 0);
        // Stream chunks: registered per sealed segment; queried by version.
        let row = |v: u64, last: u64, seg: u64| ChunkRow {
            stream_number: 9,
            first_version: v,
            last_version: last,
            segment: seg,
            entry_index: 0,
            count: 1,
            crc: 0,
        };
        idx.add_stream_chunks(0, &[row(0, 1, 0)]).unwrap();
        idx.add_stream_chunks(100, &[row(2, 4, 100)]).unwrap();
        assert_eq!(idx.stream_segments().unwrap(), vec![0, 100]);
        let firsts = |c: Vec<ChunkRow>| c.iter().map(|c| c.first_version).collect::<Vec<_>>();
        assert_eq!(
            firsts(idx.stream_chunks(9, 1, false, 10).unwrap()),
            vec![0, 2]
        );
        assert_eq!(firsts(idx.stream_chunks(9, 3, false, 10).unwrap()), vec![2]);
        assert_eq!(
            firsts(idx.stream_chunks(9, 5, false, 10).unwrap()),
            Vec::<u64>::new()
        );
        assert_eq!(
            firsts(idx.stream_chunks(9, 4, true, 10).unwrap()),
            vec![2, 0]
        );
        assert_eq!(firsts(idx.stream_chunks(9, 1, true, 10).unwrap()), vec![0]);
        assert_eq!(firsts(idx.stream_chunks(9, 0, false, 1).unwrap()), vec![0]);
        assert!(idx.stream_chunks(8, 0, false, 10).unwrap().is_empty());
        let mut heads = idx.stream_heads().unwrap();
        heads.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            heads,
            vec![("a".to_string(), h(b'a', 4)), ("b".to_string(), h(b'b', 0))]
        );
        assert_eq!(idx.pages_with_type("T", 1, 10).unwrap(), vec![0]);
        assert_eq!(
            idx.first_frame_at_or_after_time(1).unwrap(),
            None,
            "one entry per 100 ms bucket"
        );
        assert_eq!(idx.first_frame_at_or_after_time(0).unwrap(), Some(0));
    }

    /// A stream with more chunks than the cache keeps: the first lookup finds that out, later
    /// ones go to the range they need; both answer like a lookup of a short stream would.
    #[test]
    fn a_stream_with_many_chunks_is_looked_up_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("index.redb")).unwrap();
        let n = chunk_cache::STREAM_CHUNKS_CACHED_MAX as u64 + 6;
        // Chunk k holds versions 2k and 2k + 1, in segment k.
        for k in 0..n {
            let row = ChunkRow {
                stream_number: 3,
                first_version: 2 * k,
                last_version: 2 * k + 1,
                segment: k,
                entry_index: 0,
                count: 2,
                crc: 0,
            };
            idx.add_stream_chunks(k, &[row]).unwrap();
        }
        let firsts = |c: Vec<ChunkRow>| c.iter().map(|c| c.first_version).collect::<Vec<_>>();
        for _ in 0..2 {
            assert_eq!(
                firsts(idx.stream_chunks(3, 0, false, 3).unwrap()),
                vec![0, 2, 4]
            );
            assert_eq!(
                firsts(idx.stream_chunks(3, 51, false, 2).unwrap()),
                vec![50, 52]
            );
            assert_eq!(
                firsts(idx.stream_chunks(3, 51, true, 3).unwrap()),
                vec![50, 48, 46]
            );
            let last = 2 * (n - 1);
            assert_eq!(
                firsts(idx.stream_chunks(3, u64::MAX, true, 2).unwrap()),
                vec![last, last - 2]
            );
            assert!(idx.stream_chunks(3, 2 * n, false, 5).unwrap().is_empty());
        }
    }
}
