//! Stream heads: each stream's number and last version, kept in memory (they grow with the
//! number of streams, not events). The writer's copy decides optimistic concurrency; readers
//! see a published copy.

use std::collections::HashMap;
use std::sync::Arc;

use orchestrix_index::StreamHead;

/// The heads of all streams, and the number the next new stream gets.
#[derive(Default, Clone)]
pub(crate) struct StreamHeads {
    map: HashMap<Arc<str>, Entry, foldhash::fast::RandomState>,
    next_number: u64,
    /// In the readers' copy: the position below which every event is published, these heads
    /// included (readers bound themselves by it, so that an event they see has its stream's
    /// head here, and a head here has its events readable). Unused in the writer's copy.
    pub published_end: u64,
}

/// A stream's head, and its id shared with the key: the writer hands out clones of it (a
/// reference count, not a copy of the text) for every append's index summary.
#[derive(Clone)]
struct Entry {
    head: StreamHead,
    name: Arc<str>,
}

/// A map key and its entry, both holding `name`.
fn entry(name: Arc<str>, head: StreamHead) -> (Arc<str>, Entry) {
    (name.clone(), Entry { head, name })
}

impl StreamHeads {
    /// Heads as the index's durable checkpoint recorded them.
    pub fn from_checkpoint(heads: Vec<(String, StreamHead)>) -> Self {
        // Saturating: the numbers come from the index (derived data).
        let next_number = heads
            .iter()
            .map(|(_, h)| h.number.saturating_add(1))
            .max()
            .unwrap_or(0);
        StreamHeads {
            map: heads
                .into_iter()
                .map(|(name, head)| entry(name.into(), head))
                .collect(),
            next_number,
            published_end: 0,
        }
    }

    pub fn get(&self, stream: &str) -> Option<StreamHead> {
        self.map.get(stream).map(|e| e.head)
    }

    /// Records that `stream` now ends at `last_version`; a new stream gets the next number.
    /// Returns the stream's head and its shared id.
    pub fn advance(&mut self, stream: &str, last_version: u64) -> (StreamHead, Arc<str>) {
        match self.map.get_mut(stream) {
            Some(e) => {
                e.head.version = last_version;
                (e.head, e.name.clone())
            }
            None => {
                let head = StreamHead {
                    number: self.next_number,
                    version: last_version,
                };
                self.next_number += 1;
                let (name, e) = entry(stream.into(), head);
                self.map.insert(name.clone(), e);
                (head, name)
            }
        }
    }

    /// Sets a stream's head as the writer decided it (the readers' copy).
    pub fn set(&mut self, stream: &Arc<str>, head: StreamHead) {
        match self.map.get_mut(&**stream) {
            Some(e) => e.head = head,
            None => {
                // The writer's copy of the id, shared (no new string per new stream).
                let (name, e) = entry(stream.clone(), head);
                self.map.insert(name, e);
            }
        }
        self.next_number = self.next_number.max(head.number.saturating_add(1));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &StreamHead)> {
        self.map.iter().map(|(k, e)| (&**k, &e.head))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}
