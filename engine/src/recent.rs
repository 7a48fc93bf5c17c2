//! The in-memory index of frames committed to the log but not yet applied to the persistent
//! index. The writer adds to it before acknowledging; the indexer removes what it applied.
//! Readers consult it first, then the persistent index, so a read never misses an
//! acknowledged event.

use std::collections::{BTreeMap, HashMap, VecDeque};

use orchestrix_index::{BatchEntry, FrameEntry, FrameSummary};

#[derive(Default)]
pub(crate) struct Recent {
    pub frames: BTreeMap<u64, FrameEntry>,
    /// Per stream, in version order (frames are added and removed in log order).
    pub batches: HashMap<String, VecDeque<BatchEntry>>,
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
            let entry = BatchEntry {
                first_version: b.first_version,
                first_position: b.first_position,
                count: b.count,
                location: f.location,
            };
            match self.batches.get_mut(&b.stream) {
                Some(v) => v.push_back(entry),
                None => {
                    self.batches
                        .insert(b.stream.clone(), VecDeque::from([entry]));
                }
            }
        }
    }

    /// Forgets frames that the persistent index now holds.
    pub fn remove(&mut self, applied: &[FrameSummary]) {
        for f in applied {
            self.frames.remove(&f.first_position);
            for b in &f.batches {
                if let Some(v) = self.batches.get_mut(&b.stream) {
                    while v
                        .front()
                        .is_some_and(|e| e.first_position <= b.first_position)
                    {
                        v.pop_front();
                    }
                    if v.is_empty() {
                        self.batches.remove(&b.stream);
                    }
                }
            }
        }
    }

    pub fn frame_at(&self, position: u64) -> Option<FrameEntry> {
        let (_, f) = self.frames.range(..=position).next_back()?;
        (position < f.first_position + u64::from(f.event_count)).then_some(*f)
    }
}
