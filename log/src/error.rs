//! Errors of the log crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the log.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A frame or segment header failed its checks where no torn tail can explain it.
    #[error("corrupted log: segment {segment} at byte offset {offset}: {reason}")]
    Corrupted {
        /// The segment file name.
        segment: String,
        /// Byte offset of the damaged frame or header within the segment.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A frame is larger than the log accepts.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The size that was asked for.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// An earlier write or fsync failed; the log refuses writes until it is reopened.
    #[error("the log is read-only after an earlier write or fsync failure; reopen to recover")]
    Poisoned,
    /// A configuration value is outside its range.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// A checkpoint does not fit the log (the derived state must be rebuilt).
    #[error("checkpoint does not match the log: {0}")]
    CheckpointMismatch(String),
    /// The payload of a frame could not be decoded.
    #[error("malformed frame payload: {0}")]
    Payload(String),
}

impl LogError {
    /// Builds an [`LogError::Io`] for a path.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the log crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
