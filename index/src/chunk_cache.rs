//! A bounded in-memory cache of the streams' chunk lists, in front of redb's `stream_chunks`
//! table: a stream read then costs no database transaction.
//!
//! An entry holds every chunk of one stream, or, for a stream with more than
//! [`STREAM_CHUNKS_CACHED_MAX`] chunks, only that fact (its lookups then go to redb with the
//! range they need, without first reading the start of its chunk list again). Registering a segment's chunks changes
//! every stream it holds, so it empties the cache and moves its generation on; a lookup that
//! started before that (and may have read the older rows) does not insert what it read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::streams::ChunkRow;

/// Streams with more chunks than this are read from redb on every lookup.
pub const STREAM_CHUNKS_CACHED_MAX: usize = 64;
/// At most this many chunk rows are cached in all (48 bytes each: about 12 MiB).
pub const CACHED_ROWS_MAX: usize = 256 * 1024;

/// What the cache knows of one stream.
#[derive(Clone)]
pub(crate) enum Chunks {
    /// All its chunks, sorted.
    All(Arc<[ChunkRow]>),
    /// It has more than [`STREAM_CHUNKS_CACHED_MAX`] chunks.
    Many,
}

impl Chunks {
    /// The rows it takes from the cache's budget.
    fn rows(&self) -> usize {
        match self {
            Chunks::All(rows) => rows.len(),
            Chunks::Many => 1,
        }
    }
}

#[derive(Default)]
struct State {
    generation: u64,
    rows: usize,
    streams: HashMap<u64, Chunks>,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct ChunkCache {
    state: Mutex<State>,
}

impl ChunkCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is cached of `stream`, or the generation to pass to [`ChunkCache::insert`].
    pub(crate) fn get(&self, stream: u64) -> Result<Chunks, u64> {
        let s = self.lock();
        match s.streams.get(&stream) {
            Some(rows) => Ok(rows.clone()),
            None => Err(s.generation),
        }
    }

    /// Caches the chunks of `stream` (all of them, or [`Chunks::Many`]), read after
    /// [`ChunkCache::get`] returned `generation`, unless chunks were registered since.
    pub(crate) fn insert(&self, stream: u64, generation: u64, chunks: Chunks) {
        let chunks = match chunks {
            Chunks::All(rows) if rows.len() > STREAM_CHUNKS_CACHED_MAX => Chunks::Many,
            c => c,
        };
        let mut s = self.lock();
        if s.generation != generation {
            return;
        }
        while s.rows + chunks.rows() > CACHED_ROWS_MAX {
            let Some(&victim) = s.streams.keys().next() else {
                break;
            };
            if let Some(old) = s.streams.remove(&victim) {
                s.rows -= old.rows();
            }
        }
        s.rows += chunks.rows();
        if let Some(old) = s.streams.insert(stream, chunks) {
            s.rows -= old.rows();
        }
    }

    /// Chunks were registered: every cached list may be short of them.
    pub(crate) fn invalidate(&self) {
        let mut s = self.lock();
        s.generation += 1;
        s.rows = 0;
        s.streams.clear();
    }
}

/// The chunks of a stream's full, sorted chunk list `all` that hold versions at or after
/// `from_version` (forwards) or at or before it (backwards), in that order, at most `limit`.
pub(crate) fn select(
    all: &[ChunkRow],
    from_version: u64,
    backwards: bool,
    limit: usize,
) -> Vec<ChunkRow> {
    // Chunks starting at or before `from_version`.
    let upto = all.partition_point(|c| c.first_version <= from_version);
    if backwards {
        return all[..upto].iter().rev().take(limit).copied().collect();
    }
    // The chunk holding `from_version` may start before it.
    let start = match upto.checked_sub(1) {
        Some(i) if all[i].last_version >= from_version => i,
        _ => upto,
    };
    all[start..].iter().take(limit).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(first: u64, last: u64) -> ChunkRow {
        ChunkRow {
            stream_number: 1,
            first_version: first,
            last_version: last,
            segment: first,
            entry_index: 0,
            count: 1,
            crc: 0,
        }
    }

    fn firsts(v: Vec<ChunkRow>) -> Vec<u64> {
        v.into_iter().map(|c| c.first_version).collect()
    }

    #[test]
    fn select_matches_the_range_lookup() {
        let all = [row(0, 1), row(2, 4), row(5, 9)];
        assert_eq!(firsts(select(&all, 0, false, 10)), vec![0, 2, 5]);
        assert_eq!(firsts(select(&all, 1, false, 10)), vec![0, 2, 5]);
        assert_eq!(firsts(select(&all, 3, false, 10)), vec![2, 5]);
        assert_eq!(firsts(select(&all, 3, false, 1)), vec![2]);
        assert_eq!(firsts(select(&all, 10, false, 10)), Vec::<u64>::new());
        assert_eq!(firsts(select(&all, 4, true, 10)), vec![2, 0]);
        assert_eq!(firsts(select(&all, 9, true, 2)), vec![5, 2]);
        assert_eq!(firsts(select(&all, 0, true, 10)), vec![0]);
        assert_eq!(firsts(select(&[], 0, false, 10)), Vec::<u64>::new());
    }

    #[test]
    fn a_lookup_older_than_a_registration_is_not_cached() {
        let c = ChunkCache::default();
        let g = c.get(1).err().expect("not cached yet");
        c.invalidate();
        c.insert(1, g, Chunks::All(Arc::from(vec![row(0, 1)])));
        assert!(c.get(1).is_err());
        let g = c.get(1).err().expect("not cached");
        c.insert(1, g, Chunks::All(Arc::from(vec![row(0, 1)])));
        assert!(matches!(c.get(1), Ok(Chunks::All(r)) if r.len() == 1));
    }

    #[test]
    fn the_cache_stays_within_its_row_budget() {
        let c = ChunkCache::default();
        let rows: Arc<[ChunkRow]> = Arc::from(vec![row(0, 1); STREAM_CHUNKS_CACHED_MAX]);
        let streams = CACHED_ROWS_MAX / STREAM_CHUNKS_CACHED_MAX + 10;
        for s in 0..streams as u64 {
            let g = c.get(s).err().expect("not cached");
            c.insert(s, g, Chunks::All(rows.clone()));
        }
        let st = c.lock();
        assert!(st.rows <= CACHED_ROWS_MAX);
        assert_eq!(
            st.rows,
            st.streams.values().map(Chunks::rows).sum::<usize>()
        );
        assert_eq!(st.streams.len(), CACHED_ROWS_MAX / STREAM_CHUNKS_CACHED_MAX);
        // A stream with too many chunks is not cached as rows, only as having many.
        drop(st);
        let g = c.get(u64::MAX).err().expect("not cached");
        c.insert(
            u64::MAX,
            g,
            Chunks::All(Arc::from(vec![row(0, 1); STREAM_CHUNKS_CACHED_MAX + 1])),
        );
        assert!(matches!(c.get(u64::MAX), Ok(Chunks::Many)));
        let st = c.lock();
        assert!(st.rows <= CACHED_ROWS_MAX);
        assert_eq!(
            st.rows,
            st.streams.values().map(Chunks::rows).sum::<usize>()
        );
    }
}
