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

    /// Forgets the batches of segments up to `segment`, whose stream index files are written
    /// and registered.
    pub fn remove_segment(&mut self, segment: u64) {
        self.batches.retain(|_, v| {
            while v.front().is_some_and(|e| e.location.segment <= segment) {
                v.pop_front();
            }
            !v.is_empty()
        });
    }

    pub fn frame_at(&self, position: u64) -> Option<FrameEntry> {
        let (_, f) = self.frames.range(..=position).next_back()?;
        (position < f.first_position + u64::from(f.event_count)).then_some(*f)
    }
}
