//! The append-only segmented log of Orchestrix.
//!
//! The log is the source of truth: a directory of segment files, each a header followed by
//! CRC-checked frames: one per append to one stream, one per stream as a unit (whole or not at
//! all) for an append to several. A single [`LogWriter`] appends and commits in
//! groups; any number of [`LogReader`]s read committed frames concurrently. [`open`] recovers
//! the log, truncating a torn tail and refusing (with segment and offset) anything else.
#![deny(clippy::unwrap_used)]

pub mod cursor;
pub mod error;
pub mod frame;
pub mod fs;
mod log;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod testing;

pub use crate::error::{LogError, Result};
pub use crate::frame::FrameHeader;
pub use crate::log::{
    open, sync_failed_file_name, Checkpoint, FrameLocation, FrameVisitor, LogConfig, LogReader,
    LogScanner, LogWriter, PendingCommit, RecoveryReport, SegmentInfo, EARLY_WRITEBACK_BYTES,
    SYNC_FAILED_PREFIX,
};
pub use crate::record::{
    BatchSpans, EventRecord, EventSpans, EventView, FramePayload, FrameSpans, FrameView, Span,
    StreamBatch, StreamBatchView,
};
pub use bytes::Bytes;
