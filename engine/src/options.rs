//! Options of a store.

use std::time::Duration;

use crate::error::{Result, StoreError};
use crate::limits::{BATCH_SIZE_MAX, EVENT_SIZE_MAX_DEFAULT};
use orchestrix_log::segment::SEGMENT_SIZE_MIN;

/// The most appends [`Options::queue_depth`] lets wait for the writer.
pub const QUEUE_DEPTH_MAX: usize = 1 << 20;
/// The shortest sync interval (`Durability::Interval`) and index checkpoint interval: a
/// shorter one would keep a thread waking without pause.
pub const INTERVAL_MIN: Duration = Duration::from_millis(1);

/// When appends are made durable, and so what survives a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fdatasync every group commit before acknowledging it (the default). Survives process
    /// crash, kernel crash and power loss: every acknowledged append is kept.
    Always,
    /// Acknowledge after the write; fdatasync at most this long after. Survives a process
    /// crash (the page cache keeps the data); a kernel crash or power loss may lose the
    /// appends of the last interval, never in part and never leaving a gap.
    Interval(Duration),
    /// Never fdatasync (tests and benchmarks of the software path). Survives a process crash;
    /// a power loss may lose any suffix of the log.
    Never,
}

/// Options for [`crate::Store::open_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Durability mode.
    pub durability: Durability,
    /// Segment size; the test configuration uses 4 KiB so that segments roll often.
    pub segment_size_bytes_max: u64,
    /// Largest event accepted, from 1 byte to [`BATCH_SIZE_MAX`], the limit of a whole
    /// append. The size is [`crate::limits::event_size`]: the id's 16 bytes, the text fields,
    /// the metadata (2 bytes more per pair) and the data; not the encoding's length prefixes,
    /// option tags and time, so an event's frame bytes may exceed it by a few dozen.
    pub event_size_max: u64,
    /// How many appends may wait for the writer before callers block (backpressure).
    pub queue_depth: usize,
    /// How often the index is checkpointed durably.
    pub index_checkpoint_interval: Duration,
    /// Read segments through read-only memory maps (the default): reads make no system call
    /// and copy nothing. The cost: a disk read error while reading a mapped page stops the
    /// process with SIGBUS instead of returning an error. Set false to read with `pread`.
    pub map_segments: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Always,
            segment_size_bytes_max: orchestrix_log::segment::SEGMENT_SIZE_DEFAULT,
            event_size_max: EVENT_SIZE_MAX_DEFAULT,
            queue_depth: 4096,
            index_checkpoint_interval: Duration::from_secs(1),
            map_segments: true,
        }
    }
}

impl Options {
    /// Checks every option against its range; [`crate::Store::open_with`] calls it before
    /// it touches the directory.
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(StoreError::InvalidInput(what));
        if self.segment_size_bytes_max < SEGMENT_SIZE_MIN {
            return bad(format!(
                "segment_size_bytes_max {} is below the minimum of {SEGMENT_SIZE_MIN} bytes",
                self.segment_size_bytes_max
            ));
        }
        if self.event_size_max == 0 || self.event_size_max > BATCH_SIZE_MAX {
            return bad(format!(
                "event_size_max {} is outside 1 to {BATCH_SIZE_MAX} bytes (the limit of a whole \
                 append)",
                self.event_size_max
            ));
        }
        if self.queue_depth == 0 || self.queue_depth > QUEUE_DEPTH_MAX {
            return bad(format!(
                "queue_depth {} is outside 1 to {QUEUE_DEPTH_MAX}",
                self.queue_depth
            ));
        }
        if let Durability::Interval(d) = self.durability {
            if d < INTERVAL_MIN {
                return bad(format!(
                    "a sync interval of {d:?} is below the minimum of {INTERVAL_MIN:?} (it \
                     would sync without pause; use Durability::Always)"
                ));
            }
        }
        if self.index_checkpoint_interval < INTERVAL_MIN {
            return bad(format!(
                "index_checkpoint_interval {:?} is below the minimum of {INTERVAL_MIN:?}",
                self.index_checkpoint_interval
            ));
        }
        Ok(())
    }

    /// Small segments (4 KiB) so that rolling happens in every test.
    pub fn test() -> Self {
        Options {
            segment_size_bytes_max: orchestrix_log::segment::SEGMENT_SIZE_MIN,
            ..Options::default()
        }
    }
}
