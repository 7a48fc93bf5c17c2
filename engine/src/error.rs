//! Errors of the public API.

use std::path::PathBuf;

use crate::event::ExpectedVersion;

/// Everything a [`crate::Store`] call can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream is not at the version the append expected. It is returned once the
    /// `current` version it names is readable (the append it lost to is published), so a
    /// retry that re-reads the stream sees that version.
    #[error(
        "wrong expected version on stream {stream:?}: expected {expected:?}, current {current:?}"
    )]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's current (last) version; `None` if it does not exist.
        current: Option<u64>,
    },
    /// An event id is already stored somewhere other than where this append would put it.
    #[error("event id {id} is already stored at position {position}; it cannot be reused")]
    DuplicateEventId {
        /// The id, as a UUID string.
        id: String,
        /// Where it is stored.
        position: u64,
    },
    /// A stream id is not acceptable.
    #[error("invalid stream id: {reason}")]
    InvalidStreamId {
        /// Why.
        reason: &'static str,
    },
    /// An input is larger than its limit.
    #[error("{what} of {size} {unit} exceeds the maximum of {max} {unit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
        /// What `size` and `max` count: "bytes", or "events" for an append's event count.
        unit: &'static str,
    },
    /// Some other input is not acceptable.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Another process has the directory open, or this one does: another `Store`, or a
    /// subscription of a store dropped here (it holds the store's files until it is dropped).
    #[error("the store at {path} is locked: open in another process, or still held in this one (by another Store, or a subscription of a closed one)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The directory is not an Orchestrix store.
    #[error("{path} is not an Orchestrix store")]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },
    /// An earlier write or fsync failed: the store refuses writes until reopened.
    #[error(
        "the store is read-only after an earlier write or fsync failure; reopen it to recover"
    )]
    Poisoned,
    /// The write or fsync of the group holding this append failed (the first append of the
    /// group gets the underlying error itself); the store is now read-only until reopened.
    #[error("the write of this append failed ({0}); the store is now read-only until reopened")]
    WriteFailed(String),
    /// The index files of [`crate::SEGMENTS_HELD_MAX`] or more sealed segments could not be
    /// written, and their index entries are held in memory instead: new appends are refused
    /// so that memory does not grow without bound, until retries write the files (repeats of
    /// stored events are still answered). Reads keep working; reopening the store rebuilds
    /// the index from the log.
    #[error("appends are refused: the index files of {segments} sealed segments could not be written (latest failure: {reason}); reads keep working, the files are retried, and reopening the store rebuilds the index from the log")]
    IndexFailed {
        /// The latest failure.
        reason: String,
        /// Sealed segments held in memory.
        segments: u64,
    },
    /// The store is closed.
    #[error("the store is closed")]
    Closed,
    /// An I/O error outside the log.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The log failed (including `Corrupted { segment, offset }`). The log's own latch,
    /// `LogError::Poisoned`, is never returned in here but as [`StoreError::Poisoned`].
    #[error(transparent)]
    Log(orchestrix_log::LogError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] orchestrix_index::IndexError),
    /// The snapshot store failed.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
}

impl From<orchestrix_log::LogError> for StoreError {
    /// A latched log is a latched store: one error for callers to match.
    fn from(e: orchestrix_log::LogError) -> Self {
        match e {
            orchestrix_log::LogError::Poisoned => StoreError::Poisoned,
            e => StoreError::Log(e),
        }
    }
}

/// Result alias of the public API.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
