//! The index of Orchestrix: derived from the log, written behind it, rebuildable.
//!
//! Tables (redb):
//! - `frames`: first position of a frame -> (segment, offset, length, event count);
//!   one entry per append, so locating a position is one range lookup.
//! - `stream_batches`: (stream, first version) -> (first position, count, segment, offset,
//!   length); one entry per stream per append.
//! - `streams`: stream -> last version (the stream heads, restored on open).
//! - `event_ids`: event id -> position (idempotency).
//! - `types`: (event type, frame first position) -> (); one entry per distinct type per frame.
//! - `times`: (earliest event time in the frame, frame first position) -> ().
//! - `meta`: the checkpoint: the log position up to which every frame is applied.
//!
//! Batches are committed without an fsync of their own ([`Durability::None`]); a periodic
//! durable commit records the checkpoint. After a crash redb returns to its last durable
//! commit, whose checkpoint says where replaying the log must start. Deleting the file is
//! harmless: the next open rebuilds it from the log.
#![deny(clippy::unwrap_used)]

use std::path::Path;

use orchestrix_log::{Checkpoint, FrameLocation};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

/// (segment, offset, length, event count) of a frame.
type FrameValue = (u64, u64, u64, u32);
/// (first position, count, segment, offset, length) of a stream batch.
type BatchValue = (u64, u32, u64, u64, u64);
type FrameItem<'a> = std::result::Result<
    (
        redb::AccessGuard<'a, u64>,
        redb::AccessGuard<'a, FrameValue>,
    ),
    redb::StorageError,
>;

const FRAMES: TableDefinition<u64, FrameValue> = TableDefinition::new("frames");
const STREAM_BATCHES: TableDefinition<(&str, u64), BatchValue> =
    TableDefinition::new("stream_batches");
const STREAMS: TableDefinition<&str, u64> = TableDefinition::new("streams");
const EVENT_IDS: TableDefinition<u128, u64> = TableDefinition::new("event_ids");
const TYPES: TableDefinition<(&str, u64), ()> = TableDefinition::new("types");
const TIMES: TableDefinition<(i64, u64), ()> = TableDefinition::new("times");
const META: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("meta");
const CHECKPOINT_KEY: &str = "checkpoint";

/// Errors of the index.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// redb failed (I/O, corruption, ...).
    #[error("index database error: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Db(e.to_string())
}

/// Result alias of the index crate.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// The part of one stream in one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    /// Stream id.
    pub stream: String,
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
    /// Event ids with their positions.
    pub ids: Vec<([u8; 16], u64)>,
    /// Distinct event types.
    pub types: Vec<String>,
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
        let mut db = Database::create(path).map_err(db_err)?;
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
            txn.open_table(STREAM_BATCHES).map_err(db_err)?;
            txn.open_table(STREAMS).map_err(db_err)?;
            txn.open_table(EVENT_IDS).map_err(db_err)?;
            txn.open_table(TYPES).map_err(db_err)?;
            txn.open_table(TIMES).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(Index { db })
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

    /// Every stream with its last version.
    pub fn stream_heads(&self) -> Result<Vec<(String, u64)>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(STREAMS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// Applies frames in log order and records `checkpoint`. With `durable`, the commit is
    /// fsynced; otherwise it survives a process crash only once a later durable commit lands.
    pub fn apply(
        &self,
        frames: &[FrameSummary],
        checkpoint: Checkpoint,
        durable: bool,
    ) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        {
            let mut t_frames = txn.open_table(FRAMES).map_err(db_err)?;
            let mut t_batches = txn.open_table(STREAM_BATCHES).map_err(db_err)?;
            let mut t_streams = txn.open_table(STREAMS).map_err(db_err)?;
            let mut t_ids = txn.open_table(EVENT_IDS).map_err(db_err)?;
            let mut t_types = txn.open_table(TYPES).map_err(db_err)?;
            let mut t_times = txn.open_table(TIMES).map_err(db_err)?;
            for f in frames {
                let l = f.location;
                t_frames
                    .insert(
                        f.first_position,
                        (l.segment, l.offset, l.len, f.event_count),
                    )
                    .map_err(db_err)?;
                for b in &f.batches {
                    t_batches
                        .insert(
                            (b.stream.as_str(), b.first_version),
                            (b.first_position, b.count, l.segment, l.offset, l.len),
                        )
                        .map_err(db_err)?;
                    t_streams
                        .insert(b.stream.as_str(), b.first_version + u64::from(b.count) - 1)
                        .map_err(db_err)?;
                }
                for (id, pos) in &f.ids {
                    t_ids
                        .insert(u128::from_be_bytes(*id), *pos)
                        .map_err(db_err)?;
                }
                for ty in &f.types {
                    t_types
                        .insert((ty.as_str(), f.first_position), ())
                        .map_err(db_err)?;
                }
                t_times
                    .insert((f.min_time_unix_nanos, f.first_position), ())
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

    /// Makes every earlier commit durable.
    pub fn flush(&self) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate);
        txn.commit().map_err(db_err)
    }

    /// The frame holding `position`, if indexed.
    pub fn frame_at(&self, position: u64) -> Result<Option<FrameEntry>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(FRAMES).map_err(db_err)?;
        let mut r = t.range(..=position).map_err(db_err)?;
        let Some(item) = r.next_back() else {
            return Ok(None);
        };
        let (k, v) = item.map_err(db_err)?;
        let (segment, offset, len, event_count) = v.value();
        let first_position = k.value();
        if position >= first_position + u64::from(event_count) {
            return Ok(None);
        }
        Ok(Some(FrameEntry {
            location: FrameLocation {
                segment,
                offset,
                len,
            },
            first_position,
            event_count,
        }))
    }

    /// Frames with a first position in `[from, to)`, ascending, at most `limit`.
    pub fn frames_in(
        &self,
        from: u64,
        to: u64,
        limit: usize,
        backwards: bool,
    ) -> Result<Vec<FrameEntry>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(FRAMES).map_err(db_err)?;
        let r = t.range(from..to).map_err(db_err)?;
        let conv = |item: FrameItem<'_>| -> Result<FrameEntry> {
            let (k, v) = item.map_err(db_err)?;
            let (segment, offset, len, event_count) = v.value();
            Ok(FrameEntry {
                location: FrameLocation {
                    segment,
                    offset,
                    len,
                },
                first_position: k.value(),
                event_count,
            })
        };
        if backwards {
            r.rev().take(limit).map(conv).collect()
        } else {
            r.take(limit).map(conv).collect()
        }
    }

    /// The batches of `stream` that hold versions at or after `from_version` (forwards) or at
    /// or before it (backwards), in that order, at most `limit` batches.
    pub fn stream_batches(
        &self,
        stream: &str,
        from_version: u64,
        backwards: bool,
        limit: usize,
    ) -> Result<Vec<BatchEntry>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(STREAM_BATCHES).map_err(db_err)?;
        let conv = |k: (&str, u64), v: (u64, u32, u64, u64, u64)| BatchEntry {
            first_version: k.1,
            first_position: v.0,
            count: v.1,
            location: FrameLocation {
                segment: v.2,
                offset: v.3,
                len: v.4,
            },
        };
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
            // The batch holding `from_version` may start before it.
            if let Some(item) = t
                .range((stream, 0)..=(stream, from_version))
                .map_err(db_err)?
                .next_back()
            {
                let (k, v) = item.map_err(db_err)?;
                let b = conv(k.value(), v.value());
                if b.first_version + u64::from(b.count) > from_version {
                    out.push(b);
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

    /// The position of the event with this id.
    pub fn position_of_id(&self, id: &[u8; 16]) -> Result<Option<u64>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(EVENT_IDS).map_err(db_err)?;
        Ok(t.get(u128::from_be_bytes(*id))
            .map_err(db_err)?
            .map(|v| v.value()))
    }

    /// A read snapshot for many id lookups.
    pub fn id_lookup(&self) -> Result<IdLookup> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(EVENT_IDS).map_err(db_err)?;
        Ok(IdLookup { table })
    }

    /// First positions of frames holding events of type `event_type`, from `from` on.
    pub fn frames_with_type(&self, event_type: &str, from: u64, limit: usize) -> Result<Vec<u64>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(TYPES).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t
            .range((event_type, from)..=(event_type, u64::MAX))
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

    /// Counts: frames, stream batches, streams, event ids.
    pub fn stats(&self) -> Result<IndexStats> {
        let txn = self.db.begin_read().map_err(db_err)?;
        Ok(IndexStats {
            frames: txn
                .open_table(FRAMES)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?,
            stream_batches: txn
                .open_table(STREAM_BATCHES)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?,
            streams: txn
                .open_table(STREAMS)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?,
            event_ids: txn
                .open_table(EVENT_IDS)
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
    /// Indexed stream batches.
    pub stream_batches: u64,
    /// Known streams.
    pub streams: u64,
    /// Indexed event ids.
    pub event_ids: u64,
}

/// A read snapshot of the event-id table.
pub struct IdLookup {
    table: redb::ReadOnlyTable<u128, u64>,
}

impl IdLookup {
    /// The position of the event with this id.
    pub fn get(&self, id: &[u8; 16]) -> Result<Option<u64>> {
        Ok(self
            .table
            .get(u128::from_be_bytes(*id))
            .map_err(db_err)?
            .map(|v| v.value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                first_version: v,
                first_position: pos,
                count: n,
            }],
            ids: (0..n)
                .map(|i| ([pos as u8 + i as u8; 16], pos + u64::from(i)))
                .collect(),
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
        idx.apply(
            &[
                frame(0, "a", 0, 2),
                frame(2, "b", 0, 1),
                frame(3, "a", 2, 3),
            ],
            cp,
            false,
        )
        .unwrap();
        assert_eq!(idx.checkpoint().unwrap(), Some(cp));
        assert_eq!(idx.frame_at(4).unwrap().unwrap().first_position, 3);
        assert_eq!(idx.frame_at(6).unwrap(), None);
        let b = idx.stream_batches("a", 1, false, 10).unwrap();
        assert_eq!(
            b.iter().map(|b| b.first_version).collect::<Vec<_>>(),
            vec![0, 2]
        );
        let b = idx.stream_batches("a", 3, false, 10).unwrap();
        assert_eq!(
            b.iter().map(|b| b.first_version).collect::<Vec<_>>(),
            vec![2]
        );
        let b = idx.stream_batches("a", 4, true, 10).unwrap();
        assert_eq!(
            b.iter().map(|b| b.first_version).collect::<Vec<_>>(),
            vec![2, 0]
        );
        assert_eq!(idx.position_of_id(&[4; 16]).unwrap(), Some(4));
        let mut heads = idx.stream_heads().unwrap();
        heads.sort();
        assert_eq!(heads, vec![("a".to_string(), 4), ("b".to_string(), 0)]);
        assert_eq!(idx.frames_with_type("T", 1, 10).unwrap(), vec![2, 3]);
        assert_eq!(idx.first_frame_at_or_after_time(1).unwrap(), Some(2));
    }
}
