//! A bounded in-memory cache of the streams' chunk lists, in front of redb's `stream_chunks`
//! table: a stream read then costs no database transaction.
//!
//! An entry holds every chunk of one stream (streams with more than
//! [`STREAM_CHUNKS_CACHED_MAX`] chunks are not cached). Registering a segment's chunks changes
//! every stream it holds, so it empties the cache and moves its generation on; a lookup that
//! started before that (and may have read the older rows) does not insert what it read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::streams::ChunkRow;

/// Streams with more chunks than this are read from redb on every lookup.
pub const STREAM_CHUNKS_CACHED_MAX: usize = 64;
/// At most this many chunk rows are cached in all (48 bytes each: about 12 MiB).
pub const CACHED_ROWS_MAX: usize = 256 * 1024;

#[derive(Default)]
struct State {
    generation: u64,
    rows: usize,
    streams: HashMap<u64, Arc<[ChunkRow]>>,
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

    /// The cached chunks of `stream`, or the generation to pass to [`ChunkCache::insert`].
    pub(crate) fn get(&self, stream: u64) -> Result<Arc<[ChunkRow]>, u64> {
        let s = self.lock();
        match s.streams.get(&stream) {
            Some(rows) => Ok(rows.clone()),
            None => Err(s.generation),
        }
    }

    /// Caches the chunks of `stream`, read in full after [`ChunkCache::get`] returned
    /// `generation`, unless chunks were registered since.
    pub(crate) fn insert(&self, stream: u64, generation: u64, rows: Arc<[ChunkRow]>) {
        if rows.len() > STREAM_CHUNKS_CACHED_MAX {
            return;
        }
        let mut s = self.lock();
        if s.generation != generation {
            return;
        }
        while s.rows + rows.len() > CACHED_ROWS_MAX {
            let Some(&victim) = s.streams.keys().next() else {
                break;
            };
            if let Some(old) = s.streams.remove(&victim) {
                s.rows -= old.len();
            }
        }
        s.rows += rows.len();
        if let Some(old) = s.streams.insert(stream, rows) {
            s.rows -= old.len();
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
        let g = c.get(1).unwrap_err();
        c.invalidate();
        c.insert(1, g, Arc::from(vec![row(0, 1)]));
        assert!(c.get(1).is_err());
        let g = c.get(1).unwrap_err();
        c.insert(1, g, Arc::from(vec![row(0, 1)]));
        assert_eq!(c.get(1).map(|r| r.len()), Ok(1));
    }

    #[test]
    fn the_cache_stays_within_its_row_budget() {
        let c = ChunkCache::default();
        let rows: Arc<[ChunkRow]> = Arc::from(vec![row(0, 1); STREAM_CHUNKS_CACHED_MAX]);
        let streams = CACHED_ROWS_MAX / STREAM_CHUNKS_CACHED_MAX + 10;
        for s in 0..streams as u64 {
            let g = c.get(s).unwrap_err();
            c.insert(s, g, rows.clone());
        }
        let st = c.lock();
        assert!(st.rows <= CACHED_ROWS_MAX);
        assert_eq!(st.rows, st.streams.values().map(|r| r.len()).sum::<usize>());
        assert_eq!(st.streams.len(), CACHED_ROWS_MAX / STREAM_CHUNKS_CACHED_MAX);
        // A stream with too many chunks is not cached.
        drop(st);
        let g = c.get(u64::MAX).unwrap_err();
        c.insert(
            u64::MAX,
            g,
            Arc::from(vec![row(0, 1); STREAM_CHUNKS_CACHED_MAX + 1]),
        );
        assert!(c.get(u64::MAX).is_err());
    }
}
