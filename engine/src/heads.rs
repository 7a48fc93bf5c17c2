//! Stream heads: each stream's number and last version, kept in memory (they grow with the
//! number of streams, not events). The writer's copy decides optimistic concurrency; readers
//! see a published copy.

use std::collections::HashMap;

use orchestrix_index::StreamHead;

/// The heads of all streams, and the number the next new stream gets.
#[derive(Default, Clone)]
pub(crate) struct StreamHeads {
    map: HashMap<String, StreamHead, foldhash::fast::RandomState>,
    next_number: u64,
}

impl StreamHeads {
    /// Heads as the index's durable checkpoint recorded them.
    pub fn from_checkpoint(heads: Vec<(String, StreamHead)>) -> Self {
        let next_number = heads.iter().map(|(_, h)| h.number + 1).max().unwrap_or(0);
        StreamHeads {
            map: heads.into_iter().collect(),
            next_number,
        }
    }

    pub fn get(&self, stream: &str) -> Option<StreamHead> {
        self.map.get(stream).copied()
    }

    /// Records that `stream` now ends at `last_version`; a new stream gets the next number.
    /// Returns the stream's head.
    pub fn advance(&mut self, stream: &str, last_version: u64) -> StreamHead {
        match self.map.get_mut(stream) {
            Some(h) => {
                h.version = last_version;
                *h
            }
            None => {
                let h = StreamHead {
                    number: self.next_number,
                    version: last_version,
                };
                self.next_number += 1;
                self.map.insert(stream.to_string(), h);
                h
            }
        }
    }

    /// Sets a stream's head as the writer decided it (the readers' copy).
    pub fn set(&mut self, stream: &str, head: StreamHead) {
        match self.map.get_mut(stream) {
            Some(h) => *h = head,
            None => {
                self.map.insert(stream.to_string(), head);
            }
        }
        self.next_number = self.next_number.max(head.number + 1);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &StreamHead)> {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}
