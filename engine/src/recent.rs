//! The in-memory part of the index: frames committed to the log but not yet applied to the
//! persistent index, and the stream batches of segments whose stream index file is not
//! written yet (the active segment, and a sealed one until the indexer has written its file).
//! The writer adds a group to it before the group's fdatasync (staging); readers take only
//! entries below the committed position, so nothing unacknowledged shows. The indexer removes
//! what it persisted. Readers consult it first, then the persistent index, so a read never
//! misses an acknowledged event.

use std::collections::{BTreeMap, HashMap, VecDeque};

use orchestrix_index::streams::StreamEntry;
use orchestrix_index::{BatchEntry, FrameEntry, FrameSummary};

#[derive(Default)]
pub(crate) struct Recent {
    pub frames: BTreeMap<u64, FrameEntry>,
    /// Per stream number, in version order (frames are added in log order, and removed a
    /// segment at a time, oldest first).
    pub batches: HashMap<u64, VecDeque<BatchEntry>, foldhash::fast::RandomState>,
}

impl Recent {
    pub fn add(&mut self, f: &FrameSummary) {
        self.frames.insert(
            f.first_position,
            FrameEntry {
                location: f.location,
                first_position: f.first_position,
                event_count: f.event_count,
            },
        );
        for b in &f.batches {
            self.batches
                .entry(b.stream_number)
                .or_default()
                .push_back(BatchEntry {
                    first_version: b.first_version,
                    first_position: b.first_position,
                    count: b.count,
                    location: f.location,
                });
        }
    }

    /// Adds the batches of a segment read back from the log on open (its frames are indexed).
    pub fn add_entries(&mut self, segment: u64, entries: &[StreamEntry]) {
        for e in entries {
            self.batches
                .entry(e.stream_number)
                .or_default()
                .push_back(e.batch_entry(segment));
        }
    }

    /// Forgets frames that the persistent index now holds.
    pub fn remove_frames(&mut self, applied: &[FrameSummary]) {
        for f in applied {
            self.frames.remove(&f.first_position);
        }
    }

    /// Forgets the batches of `segment`, whose stream index file is written and registered.
    /// Only that segment's: an earlier segment whose file could not be written keeps its
    /// batches here, the only place reads find them until the file is written (by the
    /// indexer's retries, or rebuilt by a reopen).
    pub fn remove_segment(&mut self, segment: u64) {
        self.batches.retain(|_, v| {
            v.retain(|e| e.location.segment != segment);
            !v.is_empty()
        });
    }

    /// The batches of stream `number` that a page of a read from version `from` needs, at
    /// most `limit`: forwards, the first ones holding versions from `from` on; backwards, the
    /// last ones starting at or below it (in version order either way). Only committed ones
    /// (first position below `committed`). A look-up in the stream's list, not a copy of it:
    /// a hot stream has a whole segment's batches here.
    pub fn window(
        &self,
        number: u64,
        from: u64,
        backwards: bool,
        limit: usize,
        committed: u64,
    ) -> Vec<BatchEntry> {
        let Some(v) = self.batches.get(&number) else {
            return Vec::new();
        };
        let committed = |b: &&BatchEntry| b.first_position < committed;
        if backwards {
            let end = v.partition_point(|b| b.first_version <= from);
            let mut out: Vec<BatchEntry> = v
                .range(..end)
                .rev()
                .filter(committed)
                .take(limit)
                .copied()
                .collect();
            out.reverse();
            out
        } else {
            let start =
                v.partition_point(|b| b.first_version.saturating_add(u64::from(b.count)) <= from);
            v.range(start..)
                .filter(committed)
                .take(limit)
                .copied()
                .collect()
        }
    }

    pub fn frame_at(&self, position: u64) -> Option<FrameEntry> {
        let (_, f) = self.frames.range(..=position).next_back()?;
        (position < f.first_position + u64::from(f.event_count)).then_some(*f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrix_log::FrameLocation;

    /// Stream 1 with batches of 2 events at versions 0, 2, 4, ... (positions 10x the version),
    /// `per_segment` batches to a segment.
    fn recent(batches: u64, per_segment: u64) -> Recent {
        let mut r = Recent::default();
        let list = r.batches.entry(1).or_default();
        for i in 0..batches {
            list.push_back(BatchEntry {
                first_version: 2 * i,
                first_position: 20 * i,
                count: 2,
                location: FrameLocation {
                    segment: i / per_segment,
                    offset: i,
                    len: 1,
                },
            });
        }
        r
    }

    fn firsts(b: Vec<BatchEntry>) -> Vec<u64> {
        b.iter().map(|b| b.first_version).collect()
    }

    #[test]
    fn a_window_is_the_page_a_read_needs() {
        let r = recent(10, 100);
        let all = u64::MAX;
        // Forwards: from the batch holding `from`, at most `limit`.
        assert_eq!(firsts(r.window(1, 0, false, 3, all)), vec![0, 2, 4]);
        assert_eq!(firsts(r.window(1, 5, false, 3, all)), vec![4, 6, 8]);
        assert_eq!(firsts(r.window(1, 17, false, 3, all)), vec![16, 18]);
        assert_eq!(firsts(r.window(1, 19, false, 3, all)), vec![18]);
        assert!(r.window(1, 20, false, 3, all).is_empty());
        // Backwards: the last `limit` starting at or below `from`, in version order.
        assert_eq!(
            firsts(r.window(1, u64::MAX, true, 3, all)),
            vec![14, 16, 18]
        );
        assert_eq!(firsts(r.window(1, 5, true, 3, all)), vec![0, 2, 4]);
        assert_eq!(firsts(r.window(1, 1, true, 3, all)), vec![0]);
        assert_eq!(firsts(r.window(1, 9, true, 100, all)), vec![0, 2, 4, 6, 8]);
        // Only committed batches (first position below 100: versions up to 8).
        assert_eq!(firsts(r.window(1, 6, false, 5, 100)), vec![6, 8]);
        assert_eq!(firsts(r.window(1, u64::MAX, true, 2, 100)), vec![6, 8]);
        // Another stream, or none.
        assert!(r.window(2, 0, false, 3, all).is_empty());
        assert!(r.window(1, 0, false, 0, all).is_empty());
    }

    #[test]
    fn removing_a_segment_keeps_the_batches_of_others() {
        // Segments 0..=3, three batches each.
        let mut r = recent(12, 3);
        // Segment 1's file was written; segment 0's was not (it keeps its batches).
        r.remove_segment(1);
        assert_eq!(
            firsts(r.window(1, 0, false, 100, u64::MAX)),
            vec![0, 2, 4, 12, 14, 16, 18, 20, 22]
        );
        r.remove_segment(0);
        r.remove_segment(2);
        r.remove_segment(3);
        assert!(r.batches.is_empty(), "an emptied stream's list goes");
    }
}
