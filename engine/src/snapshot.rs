//! The snapshot file store: one file per stream holding the latest aggregate snapshot.
//!
//! Snapshots are an optimisation, never the source of truth: the log can always rebuild an
//! aggregate from its events. That is why a damaged snapshot file is ignored (with a warning)
//! rather than reported as an error, and why a failed fsync during [`SnapshotStore::save`] is
//! returned to the caller but not latched: the next save writes and syncs a brand-new file.
//!
//! # File names
//!
//! A snapshot of stream `s` lives in `<dir>/<h>.snap`, where `h` is the first 32 lowercase hex
//! characters (128 bits) of SHA-256(`s`). The raw stream id never appears in a path, so ids such
//! as `../../etc/passwd` cannot escape the directory. The stream id is also stored in the header
//! and compared on load, so even a hash collision cannot return another stream's snapshot.
//!
//! # File format (version 2)
//!
//! All integers are little endian. The fixed-size header comes first so every field in it has a
//! constant offset; the variable-length parts follow in the order their lengths are declared.
//!
//! | offset      | size | field                                                        |
//! |-------------|------|--------------------------------------------------------------|
//! | 0           | 8    | magic `89 4F 58 53 0D 0A 1A 0A` (`\x89OXS\r\n\x1a\n`)          |
//! | 8           | 4    | format version, u32 (= [`SNAPSHOT_FORMAT_VERSION`])          |
//! | 12          | 8    | snapshot version, u64 (the stream version the state reflects)|
//! | 20          | 4    | stream id length `S`, u32, <= [`STREAM_ID_LEN_MAX`]          |
//! | 24          | 4    | aggregate type length `A`, u32, <= [`AGGREGATE_TYPE_LEN_MAX`]|
//! | 28          | 8    | uncompressed state length, u64, <= [`SNAPSHOT_STATE_SIZE_MAX`]|
//! | 36          | 8    | compressed body length `B`, u64, <= [`SNAPSHOT_BODY_SIZE_MAX`]|
//! | 44          | 16   | id of the event at the snapshot version (zeros: none named)  |
//! | 60          | S    | stream id, UTF-8                                             |
//! | 60+S        | A    | aggregate type, UTF-8                                        |
//! | 60+S+A      | B    | state as one zstd frame (level 3)                            |
//! | 60+S+A+B    | 4    | CRC32 (crc32fast, IEEE) of every byte before it              |
//!
//! The file length must equal `60 + S + A + B + 4` exactly. Files of format version 1 (no
//! event id) are not read: like a damaged file, they are ignored with a warning. The PNG-style magic catches
//! truncation to nothing, text-mode line-ending conversion (`\r\n`, `\n`) and 7-bit stripping
//! (`0x89`); the trailing CRC catches everything else, including any single flipped bit.
//!
//! # Save protocol
//!
//! 1. Encode and check limits in memory (nothing is written for an oversized snapshot).
//! 2. Write `<h>.snap.tmp` (created or truncated), then `sync_data` it.
//!    *Crash here:* the old `<h>.snap` is untouched; the stray temp file is removed by the next
//!    [`SnapshotStore::open`] and is never read.
//! 3. Rename `<h>.snap.tmp` over `<h>.snap`.
//!    *Crash here:* the rename is atomic, so the directory names either the old or the new
//!    file, and both are complete and synced.
//! 4. `sync_dir` so the rename itself is durable. *Crash before it completes:* as in 3.

// This module parses untrusted bytes: nothing in it may panic on its input.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orchestrix_log::fs::Vfs;
use uuid::Uuid;

/// The magic number at the start of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; MAGIC_LEN] = *b"\x89OXS\r\n\x1a\n";
/// The only file format version this code reads and writes.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;

/// Largest uncompressed state a snapshot may hold (256 MiB).
pub const SNAPSHOT_STATE_SIZE_MAX: u64 = 256 * 1024 * 1024;
/// Longest stream id, in bytes, a snapshot may name.
pub const STREAM_ID_LEN_MAX: usize = 1024;
/// Longest aggregate type, in bytes, a snapshot may name.
pub const AGGREGATE_TYPE_LEN_MAX: usize = 1024;
/// Largest compressed body: an upper bound on zstd's `ZSTD_COMPRESSBOUND` of
/// [`SNAPSHOT_STATE_SIZE_MAX`] (`n + n/256 + 128 KiB/2048`, rounded up generously).
pub const SNAPSHOT_BODY_SIZE_MAX: u64 =
    SNAPSHOT_STATE_SIZE_MAX + SNAPSHOT_STATE_SIZE_MAX / 256 + 64 * 1024;
/// Largest well-formed snapshot file; anything longer is damaged and is not read into memory.
pub const SNAPSHOT_FILE_SIZE_MAX: u64 = HEADER_LEN as u64
    + STREAM_ID_LEN_MAX as u64
    + AGGREGATE_TYPE_LEN_MAX as u64
    + SNAPSHOT_BODY_SIZE_MAX
    + CRC_LEN as u64;

/// zstd compression level for snapshot bodies.
const COMPRESSION_LEVEL: i32 = 3;
/// Extension of a complete snapshot file.
const SNAPSHOT_EXTENSION: &str = ".snap";
/// Suffix appended to the final name while a snapshot is being written.
const TEMP_SUFFIX: &str = ".tmp";
/// How many hex characters of the SHA-256 of the stream id name the file (128 bits).
const FILE_NAME_HEX_LEN: usize = 32;

const MAGIC_OFFSET: usize = 0;
const MAGIC_LEN: usize = 8;
const FORMAT_VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC_LEN;
const FORMAT_VERSION_LEN: usize = size_of::<u32>();
const SNAPSHOT_VERSION_OFFSET: usize = FORMAT_VERSION_OFFSET + FORMAT_VERSION_LEN;
const SNAPSHOT_VERSION_LEN: usize = size_of::<u64>();
const STREAM_ID_LEN_OFFSET: usize = SNAPSHOT_VERSION_OFFSET + SNAPSHOT_VERSION_LEN;
const STREAM_ID_LEN_LEN: usize = size_of::<u32>();
const AGGREGATE_TYPE_LEN_OFFSET: usize = STREAM_ID_LEN_OFFSET + STREAM_ID_LEN_LEN;
const AGGREGATE_TYPE_LEN_LEN: usize = size_of::<u32>();
const STATE_LEN_OFFSET: usize = AGGREGATE_TYPE_LEN_OFFSET + AGGREGATE_TYPE_LEN_LEN;
const STATE_LEN_LEN: usize = size_of::<u64>();
const BODY_LEN_OFFSET: usize = STATE_LEN_OFFSET + STATE_LEN_LEN;
const BODY_LEN_LEN: usize = size_of::<u64>();
const EVENT_ID_OFFSET: usize = BODY_LEN_OFFSET + BODY_LEN_LEN;
const EVENT_ID_LEN: usize = 16;
/// Length of the fixed-size header; the stream id starts here.
const HEADER_LEN: usize = EVENT_ID_OFFSET + EVENT_ID_LEN;
/// Length of the CRC32 trailer.
const CRC_LEN: usize = size_of::<u32>();

const _: () = assert!(HEADER_LEN == 60);
const _: () = assert!(SNAPSHOT_MAGIC[0] == 0x89);
const _: () = assert!(STREAM_ID_LEN_MAX <= u32::MAX as usize);
const _: () = assert!(AGGREGATE_TYPE_LEN_MAX <= u32::MAX as usize);
const _: () = assert!(SNAPSHOT_STATE_SIZE_MAX < SNAPSHOT_BODY_SIZE_MAX);
// The whole file is read into memory, so it must be addressable on this platform.
const _: () = assert!(SNAPSHOT_FILE_SIZE_MAX <= usize::MAX as u64);

/// One aggregate snapshot: the state of `stream` after applying its events up to `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream (aggregate id) this snapshot belongs to.
    pub stream: String,
    /// The stream version the state reflects.
    pub version: u64,
    /// The aggregate's type name, so a reader can pick the right deserializer.
    pub aggregate_type: String,
    /// The serialized aggregate state (stored zstd-compressed).
    pub state: Vec<u8>,
}

/// An error from [`SnapshotStore`] or [`encode_snapshot_file`].
///
/// A damaged file is not an error (it is ignored), so there is no decode variant here.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An I/O operation on `path` failed.
    #[error("snapshot I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory being operated on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The state exceeds [`SNAPSHOT_STATE_SIZE_MAX`] (or its compressed form exceeds
    /// [`SNAPSHOT_BODY_SIZE_MAX`]); nothing was written.
    #[error("snapshot state is {size} bytes, more than the maximum of {max}")]
    TooLarge {
        /// The offending size in bytes.
        size: u64,
        /// The limit in bytes.
        max: u64,
    },
    /// The stream id exceeds [`STREAM_ID_LEN_MAX`]; nothing was written.
    #[error("stream id is {len} bytes, more than the maximum of {max}")]
    StreamIdTooLong {
        /// The stream id's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The aggregate type exceeds [`AGGREGATE_TYPE_LEN_MAX`]; nothing was written.
    #[error("aggregate type is {len} bytes, more than the maximum of {max}")]
    AggregateTypeTooLong {
        /// The aggregate type's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// zstd failed to compress the state.
    #[error("snapshot compression failed: {0}")]
    Compress(#[source] io::Error),
}

/// Why a snapshot file's bytes were rejected by [`decode_snapshot_file`].
///
/// Offsets and lengths are in bytes from the start of the file.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SnapshotDecodeError {
    /// The file is shorter than its header declares.
    #[error("snapshot file truncated: needs {needed} bytes, has {available}")]
    Truncated {
        /// Bytes required.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// The file is longer than its header declares.
    #[error(
        "snapshot file has trailing bytes: header declares {declared} bytes, file has {actual}"
    )]
    TrailingBytes {
        /// Length declared by the header.
        declared: u64,
        /// Actual length.
        actual: u64,
    },
    /// The file does not start with [`SNAPSHOT_MAGIC`].
    #[error("bad snapshot magic {found:02x?}")]
    BadMagic {
        /// The first eight bytes found.
        found: [u8; MAGIC_LEN],
    },
    /// The format version is not [`SNAPSHOT_FORMAT_VERSION`].
    #[error("unsupported snapshot format version {found} (supported: {supported})")]
    UnsupportedFormatVersion {
        /// The version in the file.
        found: u32,
        /// The version this code supports.
        supported: u32,
    },
    /// A length field exceeds its limit.
    #[error("snapshot {field} length {len} exceeds the maximum of {max}")]
    LengthOutOfBounds {
        /// Which length field.
        field: &'static str,
        /// The value read from the file.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The CRC32 trailer does not match the file's contents.
    #[error(
        "snapshot checksum mismatch: trailer says {expected:#010x}, contents hash to {actual:#010x}"
    )]
    ChecksumMismatch {
        /// The CRC stored in the file.
        expected: u32,
        /// The CRC computed over the file's contents.
        actual: u32,
    },
    /// A text field is not valid UTF-8.
    #[error("snapshot {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which field.
        field: &'static str,
    },
    /// zstd rejected the body.
    #[error("snapshot body failed to decompress: {0}")]
    Decompress(#[source] io::Error),
    /// The body decompressed to a different length than the header declares.
    #[error("snapshot body decompressed to {actual} bytes, header declares {expected}")]
    DecompressedSizeMismatch {
        /// Length declared by the header.
        expected: u64,
        /// Length produced by zstd.
        actual: u64,
    },
    /// The file is intact but belongs to another stream (a hash collision or a misplaced file).
    #[error("snapshot file belongs to stream {found:?}, not {expected:?}")]
    StreamMismatch {
        /// The stream that was asked for.
        expected: String,
        /// The stream named in the file.
        found: String,
    },
}

/// Encodes `snapshot` into the bytes of a snapshot file (see the module docs for the layout).
///
/// Fails with [`SnapshotError::TooLarge`], [`SnapshotError::StreamIdTooLong`] or
/// [`SnapshotError::AggregateTypeTooLong`] before compressing anything if a limit is exceeded.
pub fn encode_snapshot_file(snapshot: &Snapshot) -> Result<Vec<u8>, SnapshotError> {
    encode_snapshot_file_at(snapshot, None)
}

/// [`encode_snapshot_file`], naming the id of the event at the snapshot's version (the
/// snapshot's anchor: a store trusts the snapshot only while that event is the one at that
/// version). `None` (or the nil id) names none.
pub fn encode_snapshot_file_at(
    snapshot: &Snapshot,
    event_id: Option<Uuid>,
) -> Result<Vec<u8>, SnapshotError> {
    let state_len = snapshot.state.len() as u64;
    if state_len > SNAPSHOT_STATE_SIZE_MAX {
        return Err(SnapshotError::TooLarge {
            size: state_len,
            max: SNAPSHOT_STATE_SIZE_MAX,
        });
    }
    let stream = snapshot.stream.as_bytes();
    if stream.len() > STREAM_ID_LEN_MAX {
        return Err(SnapshotError::StreamIdTooLong {
            len: stream.len(),
            max: STREAM_ID_LEN_MAX,
        });
    }
    let aggregate_type = snapshot.aggregate_type.as_bytes();
    if aggregate_type.len() > AGGREGATE_TYPE_LEN_MAX {
        return Err(SnapshotError::AggregateTypeTooLong {
            len: aggregate_type.len(),
            max: AGGREGATE_TYPE_LEN_MAX,
        });
    }
    let body = zstd::bulk::compress(&snapshot.state, COMPRESSION_LEVEL)
        .map_err(SnapshotError::Compress)?;
    let body_len = body.len() as u64;
    if body_len > SNAPSHOT_BODY_SIZE_MAX {
        // Unreachable while SNAPSHOT_BODY_SIZE_MAX bounds zstd's worst case, but the reader
        // would reject such a file, so never write one.
        return Err(SnapshotError::TooLarge {
            size: body_len,
            max: SNAPSHOT_BODY_SIZE_MAX,
        });
    }

    // The limits above bound every term, so these conversions and sums cannot overflow.
    let stream_len = u32::try_from(stream.len()).unwrap_or(u32::MAX);
    let aggregate_type_len = u32::try_from(aggregate_type.len()).unwrap_or(u32::MAX);
    let file_len = HEADER_LEN
        .saturating_add(stream.len())
        .saturating_add(aggregate_type.len())
        .saturating_add(body.len())
        .saturating_add(CRC_LEN);

    let mut out = Vec::with_capacity(file_len);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&snapshot.version.to_le_bytes());
    out.extend_from_slice(&stream_len.to_le_bytes());
    out.extend_from_slice(&aggregate_type_len.to_le_bytes());
    out.extend_from_slice(&state_len.to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(event_id.unwrap_or_default().as_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.extend_from_slice(stream);
    out.extend_from_slice(aggregate_type);
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), file_len);
    Ok(out)
}

/// Decodes and fully verifies the bytes of a snapshot file.
///
/// Every length is checked against its limit and against the bytes actually present before
/// anything is allocated, the CRC is verified before any field is interpreted as text or
/// decompressed, and decompression is bounded by the declared (and limited) state length.
/// Never panics, whatever `bytes` holds.
pub fn decode_snapshot_file(bytes: &[u8]) -> Result<Snapshot, SnapshotDecodeError> {
    decode_snapshot_file_at(bytes).map(|(snapshot, _)| snapshot)
}

/// [`decode_snapshot_file`], with the id of the event at the snapshot's version, if the file
/// names one (see [`encode_snapshot_file_at`]).
pub fn decode_snapshot_file_at(
    bytes: &[u8],
) -> Result<(Snapshot, Option<Uuid>), SnapshotDecodeError> {
    let available = bytes.len() as u64;
    let fixed_len = (HEADER_LEN + CRC_LEN) as u64;
    if available < fixed_len {
        // Report a damaged magic first: it is the more telling reason for a short file
        // that does not even start like a snapshot.
        if let Some(found) = bytes.get(MAGIC_OFFSET..MAGIC_OFFSET + MAGIC_LEN) {
            check_magic(found)?;
        }
        return Err(SnapshotDecodeError::Truncated {
            needed: fixed_len,
            available,
        });
    }

    let magic = field(bytes, MAGIC_OFFSET, MAGIC_LEN)?;
    check_magic(magic)?;
    let format_version = read_u32(bytes, FORMAT_VERSION_OFFSET)?;
    if format_version != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotDecodeError::UnsupportedFormatVersion {
            found: format_version,
            supported: SNAPSHOT_FORMAT_VERSION,
        });
    }
    let version = read_u64(bytes, SNAPSHOT_VERSION_OFFSET)?;
    let stream_len = u64::from(read_u32(bytes, STREAM_ID_LEN_OFFSET)?);
    let aggregate_type_len = u64::from(read_u32(bytes, AGGREGATE_TYPE_LEN_OFFSET)?);
    let state_len = read_u64(bytes, STATE_LEN_OFFSET)?;
    let body_len = read_u64(bytes, BODY_LEN_OFFSET)?;
    let event_id = field(bytes, EVENT_ID_OFFSET, EVENT_ID_LEN)?;
    let event_id = Some(Uuid::from_slice(event_id).unwrap_or_default()).filter(|id| !id.is_nil());

    check_limit("stream id", stream_len, STREAM_ID_LEN_MAX as u64)?;
    check_limit(
        "aggregate type",
        aggregate_type_len,
        AGGREGATE_TYPE_LEN_MAX as u64,
    )?;
    check_limit("state", state_len, SNAPSHOT_STATE_SIZE_MAX)?;
    check_limit("body", body_len, SNAPSHOT_BODY_SIZE_MAX)?;

    // All four terms are bounded by the limits just checked, so this cannot overflow; the
    // checked arithmetic is belt and braces.
    let declared = fixed_len
        .checked_add(stream_len)
        .and_then(|n| n.checked_add(aggregate_type_len))
        .and_then(|n| n.checked_add(body_len))
        .ok_or(SnapshotDecodeError::LengthOutOfBounds {
            field: "file",
            len: u64::MAX,
            max: SNAPSHOT_FILE_SIZE_MAX,
        })?;
    if declared > available {
        return Err(SnapshotDecodeError::Truncated {
            needed: declared,
            available,
        });
    }
    if declared < available {
        return Err(SnapshotDecodeError::TrailingBytes {
            declared,
            actual: available,
        });
    }

    // From here on, `declared == bytes.len()`, so every offset below fits in usize.
    let crc_offset = bytes.len().saturating_sub(CRC_LEN);
    let expected = read_u32(bytes, crc_offset)?;
    let actual = crc32fast::hash(field(bytes, 0, crc_offset)?);
    if expected != actual {
        return Err(SnapshotDecodeError::ChecksumMismatch { expected, actual });
    }

    let stream_offset = HEADER_LEN;
    let stream_len = to_usize(stream_len)?;
    let aggregate_type_offset = checked_offset(stream_offset, stream_len)?;
    let aggregate_type_len = to_usize(aggregate_type_len)?;
    let body_offset = checked_offset(aggregate_type_offset, aggregate_type_len)?;
    let body_len = to_usize(body_len)?;

    let stream = utf8(field(bytes, stream_offset, stream_len)?, "stream id")?;
    let aggregate_type = utf8(
        field(bytes, aggregate_type_offset, aggregate_type_len)?,
        "aggregate type",
    )?;
    let body = field(bytes, body_offset, body_len)?;

    let state = zstd::bulk::decompress(body, to_usize(state_len)?)
        .map_err(SnapshotDecodeError::Decompress)?;
    if state.len() as u64 != state_len {
        return Err(SnapshotDecodeError::DecompressedSizeMismatch {
            expected: state_len,
            actual: state.len() as u64,
        });
    }

    Ok((
        Snapshot {
            stream,
            version,
            aggregate_type,
            state,
        },
        event_id,
    ))
}

fn check_magic(found: &[u8]) -> Result<(), SnapshotDecodeError> {
    if found == SNAPSHOT_MAGIC {
        return Ok(());
    }
    let mut copy = [0u8; MAGIC_LEN];
    for (dst, src) in copy.iter_mut().zip(found) {
        *dst = *src;
    }
    Err(SnapshotDecodeError::BadMagic { found: copy })
}

fn check_limit(field: &'static str, len: u64, max: u64) -> Result<(), SnapshotDecodeError> {
    if len > max {
        return Err(SnapshotDecodeError::LengthOutOfBounds { field, len, max });
    }
    Ok(())
}

/// `bytes[offset..offset + len]`, or `Truncated` if that range is not inside `bytes`.
fn field(bytes: &[u8], offset: usize, len: usize) -> Result<&[u8], SnapshotDecodeError> {
    let truncated = || SnapshotDecodeError::Truncated {
        needed: (offset as u64).saturating_add(len as u64),
        available: bytes.len() as u64,
    };
    let end = offset.checked_add(len).ok_or_else(truncated)?;
    bytes.get(offset..end).ok_or_else(truncated)
}

fn read_u32(bytes: &[u8], offset: usize) -> Result<u32, SnapshotDecodeError> {
    let raw = field(bytes, offset, size_of::<u32>())?;
    let mut buf = [0u8; size_of::<u32>()];
    buf.copy_from_slice(raw);
    Ok(u32::from_le_bytes(buf))
}

fn read_u64(bytes: &[u8], offset: usize) -> Result<u64, SnapshotDecodeError> {
    let raw = field(bytes, offset, size_of::<u64>())?;
    let mut buf = [0u8; size_of::<u64>()];
    buf.copy_from_slice(raw);
    Ok(u64::from_le_bytes(buf))
}

fn to_usize(len: u64) -> Result<usize, SnapshotDecodeError> {
    usize::try_from(len).map_err(|_| SnapshotDecodeError::LengthOutOfBounds {
        field: "file",
        len,
        max: usize::MAX as u64,
    })
}

fn checked_offset(offset: usize, len: usize) -> Result<usize, SnapshotDecodeError> {
    offset
        .checked_add(len)
        .ok_or(SnapshotDecodeError::LengthOutOfBounds {
            field: "file",
            len: len as u64,
            max: SNAPSHOT_FILE_SIZE_MAX,
        })
}

fn utf8(bytes: &[u8], field: &'static str) -> Result<String, SnapshotDecodeError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| SnapshotDecodeError::InvalidUtf8 { field })
}

/// The file name (not path) of `stream`'s snapshot: 32 hex chars of SHA-256(stream) + `.snap`.
fn snapshot_file_name(stream: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, stream.as_bytes());
    let mut name = String::with_capacity(FILE_NAME_HEX_LEN + SNAPSHOT_EXTENSION.len());
    for byte in digest.as_ref().iter().take(FILE_NAME_HEX_LEN / 2) {
        // Writing to a String cannot fail.
        let _ = write!(name, "{byte:02x}");
    }
    name.push_str(SNAPSHOT_EXTENSION);
    name
}

/// Whether `name` is a temp file a save makes (`<32 hex>.snap.tmp`): only those are removed
/// on open, not whatever else ends in `.tmp`.
fn is_temp_file_name(name: &str) -> bool {
    name.strip_suffix(TEMP_SUFFIX)
        .and_then(|n| n.strip_suffix(SNAPSHOT_EXTENSION))
        .is_some_and(|h| {
            h.len() == FILE_NAME_HEX_LEN
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// A directory of snapshot files, one per stream, holding only the latest snapshot of each.
///
/// All I/O goes through the [`Vfs`] given to [`SnapshotStore::open`]. Saves are serialised
/// within one store; a directory must be owned by at most one store at a time. A stream's
/// file holds the snapshot of the highest version saved: a save of a lower version than the
/// one stored is skipped (two writers snapshotting one aggregate, the slower one behind).
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use orchestrix::snapshot::{Snapshot, SnapshotStore};
/// use orchestrix_log::fs::StdFs;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = SnapshotStore::open(Arc::new(StdFs), dir.path().join("snapshots"))?;
/// let snapshot = Snapshot {
///     stream: "order-42".to_owned(),
///     version: 7,
///     aggregate_type: "Order".to_owned(),
///     state: b"{\"total\":99}".to_vec(),
/// };
/// store.save(&snapshot)?;
/// assert_eq!(store.load("order-42")?, Some(snapshot));
/// assert_eq!(store.load("order-43")?, None);
/// store.delete("order-42")?;
/// assert_eq!(store.load("order-42")?, None);
/// # Ok(())
/// # }
/// ```
pub struct SnapshotStore {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    /// Serialises `save` and `delete`, which share the per-stream temp file name.
    write_lock: Mutex<()>,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SnapshotStore {
    /// Opens the snapshot directory `dir`, creating it if missing, and removes temp files left
    /// by saves that were interrupted by a crash.
    pub fn open(vfs: Arc<dyn Vfs>, dir: PathBuf) -> Result<Self, SnapshotError> {
        vfs.create_dir_all(&dir)
            .map_err(|source| io_error(&dir, source))?;
        let names = vfs.list(&dir).map_err(|source| io_error(&dir, source))?;
        for name in names {
            if is_temp_file_name(&name) {
                let path = dir.join(&name);
                // A leftover temp file is never read and is truncated by the next save of its
                // stream, so failing to remove it is worth a warning, not a failed open.
                if let Err(err) = vfs.remove(&path) {
                    tracing::warn!(
                        path = %path.display(),
                        error = %err,
                        "could not remove stale snapshot temp file"
                    );
                }
            }
        }
        Ok(Self {
            vfs,
            dir,
            write_lock: Mutex::new(()),
        })
    }

    /// The directory holding the snapshot files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `stream`'s snapshot file (always directly inside [`SnapshotStore::dir`]).
    pub fn path_for(&self, stream: &str) -> PathBuf {
        self.dir.join(snapshot_file_name(stream))
    }

    /// Durably replaces the snapshot of `snapshot.stream` (write temp, sync, rename, sync dir),
    /// unless the one stored (and intact) has a higher version: then nothing is written.
    ///
    /// On error the previous snapshot file, if any, is still in place and intact, except after
    /// a failed final directory sync, when the new (complete) file may or may not survive a
    /// power loss. An oversized snapshot fails with [`SnapshotError::TooLarge`] (or
    /// `StreamIdTooLong`/`AggregateTypeTooLong`) and writes nothing.
    pub fn save(&self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        self.save_at(snapshot, None, &|_, _| true)
    }

    /// [`SnapshotStore::save`], naming the id of the event at the snapshot's version (see
    /// [`encode_snapshot_file_at`]). The stored snapshot keeps its place only if `trusted`
    /// holds for its version and the event id it names: one that describes events the
    /// stream does not have (from elsewhere) is replaced whatever its version.
    pub fn save_at(
        &self,
        snapshot: &Snapshot,
        event_id: Option<Uuid>,
        trusted: &dyn Fn(u64, Option<Uuid>) -> bool,
    ) -> Result<(), SnapshotError> {
        let bytes = encode_snapshot_file_at(snapshot, event_id)?;
        let final_path = self.path_for(&snapshot.stream);
        let mut temp_name = snapshot_file_name(&snapshot.stream);
        temp_name.push_str(TEMP_SUFFIX);
        let temp_path = self.dir.join(temp_name);

        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((stored, stored_at)) = self.load_at(&snapshot.stream)? {
            if stored.version > snapshot.version && trusted(stored.version, stored_at) {
                tracing::debug!(
                    stream = snapshot.stream,
                    version = snapshot.version,
                    stored = stored.version,
                    "a snapshot older than the stored one is not saved"
                );
                return Ok(());
            }
        }
        if let Err(err) = self.write_temp(&temp_path, &bytes, &final_path) {
            // Best effort: the temp file is harmless (never read, removed on open).
            let _ = self.vfs.remove(&temp_path);
            return Err(err);
        }
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|source| io_error(&self.dir, source))
    }

    fn write_temp(
        &self,
        temp_path: &Path,
        bytes: &[u8],
        final_path: &Path,
    ) -> Result<(), SnapshotError> {
        let file = self
            .vfs
            .create(temp_path)
            .map_err(|source| io_error(temp_path, source))?;
        file.write_all_at(bytes, 0)
            .map_err(|source| io_error(temp_path, source))?;
        file.sync_data()
            .map_err(|source| io_error(temp_path, source))?;
        drop(file);
        self.vfs
            .rename(temp_path, final_path)
            .map_err(|source| io_error(final_path, source))
    }

    /// Loads the snapshot of `stream`.
    ///
    /// Returns `Ok(None)` if there is none, and also if the file is damaged in any way (bad
    /// magic, checksum, lengths, compression, or a different stream id in the header): such a
    /// file is logged with `tracing::warn!` and ignored, so the caller rebuilds from the log.
    /// I/O errors other than "not found" are returned.
    pub fn load(&self, stream: &str) -> Result<Option<Snapshot>, SnapshotError> {
        Ok(self.load_at(stream)?.map(|(snapshot, _)| snapshot))
    }

    /// [`SnapshotStore::load`], with the id of the event at the snapshot's version if the
    /// file names one.
    pub fn load_at(&self, stream: &str) -> Result<Option<(Snapshot, Option<Uuid>)>, SnapshotError> {
        let path = self.path_for(stream);
        let file = match self.vfs.open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io_error(&path, source)),
        };
        let file_len = file.len().map_err(|source| io_error(&path, source))?;
        if file_len > SNAPSHOT_FILE_SIZE_MAX {
            let reason = SnapshotDecodeError::LengthOutOfBounds {
                field: "file",
                len: file_len,
                max: SNAPSHOT_FILE_SIZE_MAX,
            };
            warn_damaged(&path, &reason);
            return Ok(None);
        }
        // Bounded by SNAPSHOT_FILE_SIZE_MAX, which fits in usize (asserted at compile time).
        let mut bytes = vec![0u8; usize::try_from(file_len).unwrap_or(0)];
        match file.read_exact_at(&mut bytes, 0) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                // The file shrank under us; treat it like any other truncated file.
                let reason = SnapshotDecodeError::Truncated {
                    needed: file_len,
                    available: 0,
                };
                warn_damaged(&path, &reason);
                return Ok(None);
            }
            Err(source) => return Err(io_error(&path, source)),
        }
        drop(file);

        match decode_snapshot_file_at(&bytes) {
            Ok((snapshot, event_id)) if snapshot.stream == stream => Ok(Some((snapshot, event_id))),
            Ok((snapshot, _)) => {
                let reason = SnapshotDecodeError::StreamMismatch {
                    expected: stream.to_owned(),
                    found: snapshot.stream,
                };
                warn_damaged(&path, &reason);
                Ok(None)
            }
            Err(reason) => {
                warn_damaged(&path, &reason);
                Ok(None)
            }
        }
    }

    /// Removes the snapshot of `stream`, if any, and syncs the directory.
    pub fn delete(&self, stream: &str) -> Result<(), SnapshotError> {
        let path = self.path_for(stream);
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match self.vfs.remove(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(io_error(&path, source)),
        }
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|source| io_error(&self.dir, source))
    }
}

fn io_error(path: &Path, source: io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn warn_damaged(path: &Path, reason: &SnapshotDecodeError) {
    tracing::warn!(path = %path.display(), reason = %reason, "ignoring damaged snapshot file");
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use orchestrix_log::fs::StdFs;

    fn store() -> (tempfile::TempDir, SnapshotStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(Arc::new(StdFs), tmp.path().join("snapshots")).unwrap();
        (tmp, store)
    }

    fn snapshot(stream: &str, version: u64, state: Vec<u8>) -> Snapshot {
        Snapshot {
            stream: stream.to_owned(),
            version,
            aggregate_type: "Order".to_owned(),
            state,
        }
    }

    #[test]
    fn roundtrip_empty_state() {
        let (_tmp, store) = store();
        let s = snapshot("order-1", 0, Vec::new());
        store.save(&s).unwrap();
        assert_eq!(store.load("order-1").unwrap(), Some(s));
    }

    #[test]
    fn roundtrip_large_compressible_state() {
        let (_tmp, store) = store();
        let state: Vec<u8> = b"{\"line\":\"widget\",\"qty\":1}"
            .iter()
            .copied()
            .cycle()
            .take(8 << 20)
            .collect();
        let s = snapshot("order-big", 12_345, state);
        store.save(&s).unwrap();
        let file_len = std::fs::metadata(store.path_for("order-big"))
            .unwrap()
            .len();
        assert!(
            file_len < 64 * 1024,
            "8 MiB of repetition compressed to {file_len} bytes"
        );
        assert_eq!(store.load("order-big").unwrap(), Some(s));
    }

    #[test]
    fn roundtrip_unicode_stream_ids() {
        let (_tmp, store) = store();
        let ids = ["заказ-1", "注文/2", "🦀 crab\u{0}nul", "a\\b:c*d?e", ""];
        for (i, id) in ids.iter().enumerate() {
            store
                .save(&snapshot(id, i as u64, id.as_bytes().to_vec()))
                .unwrap();
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                store.load(id).unwrap(),
                Some(snapshot(id, i as u64, id.as_bytes().to_vec()))
            );
        }
    }

    #[test]
    fn overwrite_with_newer_snapshot() {
        let (_tmp, store) = store();
        store.save(&snapshot("s", 1, b"one".to_vec())).unwrap();
        store.save(&snapshot("s", 2, b"two".to_vec())).unwrap();
        assert_eq!(
            store.load("s").unwrap(),
            Some(snapshot("s", 2, b"two".to_vec()))
        );
        let names = StdFs.list(store.dir()).unwrap();
        assert_eq!(names.len(), 1, "no temp file left behind: {names:?}");
    }

    #[test]
    fn missing_and_deleted_load_none() {
        let (_tmp, store) = store();
        assert_eq!(store.load("nope").unwrap(), None);
        store.delete("nope").unwrap();
        store.save(&snapshot("s", 1, b"x".to_vec())).unwrap();
        store.delete("s").unwrap();
        assert_eq!(store.load("s").unwrap(), None);
    }

    #[test]
    fn file_name_is_hashed_hex() {
        let name = snapshot_file_name("order-1");
        assert_eq!(name.len(), FILE_NAME_HEX_LEN + SNAPSHOT_EXTENSION.len());
        assert!(name.ends_with(".snap"));
        assert!(name[..FILE_NAME_HEX_LEN]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223...
        assert_eq!(
            snapshot_file_name("abc"),
            "ba7816bf8f01cfea414140de5dae2223.snap"
        );
    }

    #[test]
    fn oversized_state_is_rejected_and_nothing_written() {
        let (_tmp, store) = store();
        // calloc'd zeroes: cheap, and rejected before compression.
        let state = vec![0u8; (SNAPSHOT_STATE_SIZE_MAX + 1) as usize];
        let err = store.save(&snapshot("big", 1, state)).unwrap_err();
        let expected_size = SNAPSHOT_STATE_SIZE_MAX + 1;
        assert!(
            matches!(err, SnapshotError::TooLarge { size, max }
                if size == expected_size && max == SNAPSHOT_STATE_SIZE_MAX),
            "{err:?}"
        );
        assert!(StdFs.list(store.dir()).unwrap().is_empty());
    }

    #[test]
    fn overlong_stream_id_and_type_are_rejected() {
        let long = "x".repeat(STREAM_ID_LEN_MAX + 1);
        let err = encode_snapshot_file(&snapshot(&long, 1, Vec::new())).unwrap_err();
        assert!(
            matches!(err, SnapshotError::StreamIdTooLong { .. }),
            "{err:?}"
        );
        let mut s = snapshot("s", 1, Vec::new());
        s.aggregate_type = "t".repeat(AGGREGATE_TYPE_LEN_MAX + 1);
        let err = encode_snapshot_file(&s).unwrap_err();
        assert!(
            matches!(err, SnapshotError::AggregateTypeTooLong { .. }),
            "{err:?}"
        );
        // Exactly at the limit is fine.
        let s = snapshot(&"y".repeat(STREAM_ID_LEN_MAX), 1, Vec::new());
        assert_eq!(
            decode_snapshot_file(&encode_snapshot_file(&s).unwrap()).unwrap(),
            s
        );
    }

    #[test]
    fn encoded_layout_matches_documented_offsets() {
        let s = snapshot("ab", 0x0102_0304_0506_0708, b"state".to_vec());
        let id = Uuid::from_bytes([7; 16]);
        let bytes = encode_snapshot_file_at(&s, Some(id)).unwrap();
        assert_eq!(&bytes[..8], b"\x89OXS\r\n\x1a\n");
        assert_eq!(&bytes[FORMAT_VERSION_OFFSET..][..4], &2u32.to_le_bytes());
        assert_eq!(&bytes[EVENT_ID_OFFSET..][..16], &[7; 16]);
        assert_eq!(
            decode_snapshot_file_at(&bytes).unwrap(),
            (s.clone(), Some(id))
        );
        // No event named: zeros, read back as none.
        let none = encode_snapshot_file(&s).unwrap();
        assert_eq!(&none[EVENT_ID_OFFSET..][..16], &[0; 16]);
        assert_eq!(decode_snapshot_file_at(&none).unwrap(), (s.clone(), None));
        assert_eq!(
            &bytes[SNAPSHOT_VERSION_OFFSET..][..8],
            &0x0102_0304_0506_0708u64.to_le_bytes()
        );
        assert_eq!(&bytes[STREAM_ID_LEN_OFFSET..][..4], &2u32.to_le_bytes());
        assert_eq!(
            &bytes[AGGREGATE_TYPE_LEN_OFFSET..][..4],
            &5u32.to_le_bytes()
        );
        assert_eq!(&bytes[STATE_LEN_OFFSET..][..8], &5u64.to_le_bytes());
        let body_len =
            u64::from_le_bytes(bytes[BODY_LEN_OFFSET..][..8].try_into().unwrap()) as usize;
        assert_eq!(&bytes[HEADER_LEN..][..7], b"abOrder");
        assert_eq!(bytes.len(), HEADER_LEN + 2 + 5 + body_len + CRC_LEN);
        let crc_offset = bytes.len() - CRC_LEN;
        assert_eq!(
            &bytes[crc_offset..],
            &crc32fast::hash(&bytes[..crc_offset]).to_le_bytes()
        );
    }

    #[test]
    fn decode_rejects_lying_lengths_with_valid_crc() {
        // Re-sign the CRC after each edit so the length checks themselves are exercised.
        fn resign(mut bytes: Vec<u8>) -> Vec<u8> {
            let crc_offset = bytes.len() - CRC_LEN;
            let crc = crc32fast::hash(&bytes[..crc_offset]);
            bytes[crc_offset..].copy_from_slice(&crc.to_le_bytes());
            bytes
        }
        let good = encode_snapshot_file(&snapshot("s", 1, b"hello hello hello".to_vec())).unwrap();

        let mut b = good.clone();
        b[STATE_LEN_OFFSET..][..8].copy_from_slice(&(SNAPSHOT_STATE_SIZE_MAX + 1).to_le_bytes());
        assert!(matches!(
            decode_snapshot_file(&resign(b)),
            Err(SnapshotDecodeError::LengthOutOfBounds { field: "state", .. })
        ));

        let mut b = good.clone();
        b[STATE_LEN_OFFSET..][..8].copy_from_slice(&3u64.to_le_bytes());
        assert!(matches!(
            decode_snapshot_file(&resign(b)),
            Err(SnapshotDecodeError::Decompress(_))
        ));

        let mut b = good.clone();
        b[STATE_LEN_OFFSET..][..8].copy_from_slice(&100u64.to_le_bytes());
        let r = decode_snapshot_file(&resign(b));
        assert!(
            matches!(
                r,
                Err(SnapshotDecodeError::DecompressedSizeMismatch {
                    expected: 100,
                    actual: 17
                }) | Err(SnapshotDecodeError::Decompress(_))
            ),
            "{r:?}"
        );

        let mut b = good.clone();
        b[BODY_LEN_OFFSET..][..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_snapshot_file(&resign(b)),
            Err(SnapshotDecodeError::LengthOutOfBounds { field: "body", .. })
        ));

        let mut b = good.clone();
        b[STREAM_ID_LEN_OFFSET..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_snapshot_file(&resign(b)),
            Err(SnapshotDecodeError::LengthOutOfBounds {
                field: "stream id",
                ..
            })
        ));

        let mut b = good.clone();
        b[HEADER_LEN] = 0xff;
        assert!(matches!(
            decode_snapshot_file(&resign(b)),
            Err(SnapshotDecodeError::InvalidUtf8 { field: "stream id" })
        ));

        let mut b = good.clone();
        b.insert(HEADER_LEN, b'x');
        assert!(matches!(
            decode_snapshot_file(&b),
            Err(SnapshotDecodeError::TrailingBytes { .. })
        ));

        let mut b = good;
        b[FORMAT_VERSION_OFFSET] = 1;
        assert!(matches!(
            decode_snapshot_file(&b),
            Err(SnapshotDecodeError::UnsupportedFormatVersion { found: 1, .. })
        ));
    }

    #[test]
    fn load_ignores_snapshot_of_another_stream() {
        let (_tmp, store) = store();
        store.save(&snapshot("a", 1, b"a".to_vec())).unwrap();
        std::fs::copy(store.path_for("a"), store.path_for("b")).unwrap();
        assert_eq!(store.load("b").unwrap(), None);
        assert_eq!(
            store.load("a").unwrap(),
            Some(snapshot("a", 1, b"a".to_vec()))
        );
    }

    #[test]
    fn open_removes_stale_temp_files() {
        let (tmp, store) = store();
        store.save(&snapshot("s", 1, b"x".to_vec())).unwrap();
        let stale = store.path_for("s").with_extension("snap.tmp");
        std::fs::write(&stale, b"torn").unwrap();
        // Someone else's file that happens to end in `.tmp` is left alone.
        let other = tmp.path().join("snapshots").join("notes.tmp");
        std::fs::write(&other, b"mine").unwrap();
        drop(store);
        let store = SnapshotStore::open(Arc::new(StdFs), tmp.path().join("snapshots")).unwrap();
        assert!(!stale.exists());
        assert!(other.exists());
        assert_eq!(
            store.load("s").unwrap(),
            Some(snapshot("s", 1, b"x".to_vec()))
        );
    }

    #[test]
    fn decode_garbage_never_panics() {
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37)).collect();
            assert!(decode_snapshot_file(&bytes).is_err());
        }
    }
}
