//! The log: opening with recovery, the single writer, and concurrent readers.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;

use crate::cursor::{CursorItem, FrameCursor};
use crate::error::{LogError, Result};
use crate::frame::{self, decode_frame, FrameHeader, FRAME_HEADER_SIZE, FRAME_MAGIC};
use crate::fs::{VFile, Vfs};
use crate::recovery::{decide, DefectFacts, Verdict};
use crate::segment::{self, SEGMENT_HEADER_SIZE, SEGMENT_SIZE_DEFAULT, SEGMENT_SIZE_MIN};

/// Read size when checking that the rest of a segment is zeros.
const ZERO_CHECK_CHUNK_BYTES: usize = 1 << 20;
/// Zeros written ahead of the frames at a time (see [`LogWriter::zero_fill_ahead`]).
pub const ZERO_FILL_CHUNK_BYTES: u64 = 1 << 20;
/// More zeros are written once fewer than this many are left ahead of the frames.
const ZERO_FILL_MARGIN_BYTES: u64 = 256 * 1024;
static ZEROS: [u8; 256 * 1024] = [0; 256 * 1024];

/// Configuration of the log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment rolls before a frame would take it past this size (a single larger frame
    /// gets a segment of its own).
    pub segment_size_bytes_max: u64,
    /// Readers read segments through read-only memory maps (no system call and no copy per
    /// read) instead of `pread`. A disk read error then reaches the reading thread as SIGBUS
    /// rather than as an error; see `docs/architecture.md`.
    pub map_segments: bool,
    /// Start the disk write of every [`EARLY_WRITEBACK_BYTES`] written, without waiting (for
    /// durability modes that do not fdatasync every group): the fdatasync at a segment roll
    /// then finds little left to write, instead of a whole segment of dirty pages.
    pub early_writeback: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size_bytes_max: SEGMENT_SIZE_DEFAULT,
            map_segments: true,
            early_writeback: false,
        }
    }
}

/// With [`LogConfig::early_writeback`], how much is written between two writeback starts.
pub const EARLY_WRITEBACK_BYTES: u64 = 8 << 20;

/// How the name of the file an fdatasync failure leaves in the log directory begins (see
/// [`sync_failed_file_name`]).
pub const SYNC_FAILED_PREFIX: &str = "SYNC_FAILED.";

/// The name of the file an fdatasync failure leaves in the log directory during the boot
/// `boot` (a [`Vfs::boot_id`]): the next open in the same boot writes the bytes after the
/// segment's last successful fdatasync again before trusting them. The boot is in the name,
/// which a file system creates at once with the file, so that a file of an earlier boot is
/// known for one even when its contents were lost.
pub fn sync_failed_file_name(boot: &str) -> String {
    let boot = if boot.is_empty() {
        "unknown-boot"
    } else {
        boot
    };
    format!("{SYNC_FAILED_PREFIX}{boot}")
}

/// Bytes read and written at a time when recovery writes a tail again.
const REWRITE_CHUNK_BYTES: usize = 1 << 20;

/// Where a frame lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameLocation {
    /// First position of the segment (its name).
    pub segment: u64,
    /// Byte offset of the frame in the segment.
    pub offset: u64,
    /// Length of the whole frame in bytes.
    pub len: u64,
}

/// A point in the log up to which a consumer (the index) has applied every frame.
/// Everything before it was durable when the checkpoint was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Segment holding the next frame.
    pub segment: u64,
    /// Offset of the next frame in that segment.
    pub offset: u64,
    /// Position of the next frame's first event.
    pub next_position: u64,
}

/// What recovery did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Frames replayed after the checkpoint.
    pub frames_replayed: u64,
    /// Events in those frames.
    pub events_replayed: u64,
    /// A torn tail that was cut: segment name, offset, bytes dropped.
    pub truncated: Option<(String, u64, u64)>,
    /// Position the next append gets.
    pub next_position: u64,
    /// Number of segments.
    pub segments: usize,
}

struct SegmentHandle {
    first_position: u64,
    name: String,
    file: Arc<dyn VFile>,
    /// Bytes readers may read: the committed end for the active segment, the final size of a
    /// sealed one.
    end: AtomicU64,
    /// Bytes of the file known to be on the disk: the end covered by the last successful
    /// fdatasync (see [`Shared::sync_segment`]).
    synced: AtomicU64,
    /// The read-only map readers use, made by the first read that needs it (after recovery
    /// is done with the file); `None` when maps are off or the file cannot be mapped. It is
    /// held as [`MAP_STRIPES`] buffers over the same map, each with a reference count of its
    /// own: every event read holds a reference, and readers on different threads take
    /// different buffers, so that they do not all update one count (one cache line bouncing
    /// between cores) for every event.
    map: OnceLock<Option<[Bytes; MAP_STRIPES]>>,
}

/// Buffers per segment map (see [`SegmentHandle::map`]).
const MAP_STRIPES: usize = 8;

/// This thread's map buffer: threads take them in turn.
fn map_stripe() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static STRIPE: usize = (NEXT.fetch_add(1, Ordering::Relaxed) % MAP_STRIPES as u64) as usize;
    }
    STRIPE.with(|s| *s)
}

impl SegmentHandle {
    fn new(first_position: u64, name: String, file: Arc<dyn VFile>, end: u64) -> Self {
        SegmentHandle {
            first_position,
            name,
            file,
            end: AtomicU64::new(end),
            synced: AtomicU64::new(end),
            map: OnceLock::new(),
        }
    }

    /// The segment's map, made on first use. It spans the segment's size limit (or its
    /// current end, when a large frame took it past the limit): the active segment grows into
    /// it, and readers touch only bytes below `end`, which the file always holds.
    fn mapped(&self, shared: &Shared) -> Option<&Bytes> {
        self.map
            .get_or_init(|| {
                if !shared.map_segments {
                    return None;
                }
                let len = shared
                    .segment_size_bytes_max
                    .max(self.end.load(Ordering::Acquire));
                match self.file.map(len) {
                    Ok(m) => m.map(|m| std::array::from_fn(|_| Bytes::from_owner(m.clone()))),
                    Err(e) => {
                        tracing::warn!(segment = %self.name, error = %e, "cannot map segment; reading it with pread");
                        None
                    }
                }
            })
            .as_ref()
            .map(|stripes| &stripes[map_stripe()])
    }
}

struct Shared {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    segments: RwLock<Vec<Arc<SegmentHandle>>>,
    /// Position after the last committed (readable) event.
    committed_position: AtomicU64,
    /// Whether readers map segments ([`LogConfig::map_segments`]).
    map_segments: bool,
    /// [`LogConfig::segment_size_bytes_max`].
    segment_size_bytes_max: u64,
    /// Held across every fdatasync of a segment after open; true once one has failed (see
    /// [`Shared::sync_segment`]).
    sync_failed: Mutex<bool>,
}

impl Shared {
    /// fdatasyncs a segment file whose bytes up to `end` are written. Every fdatasync of the
    /// open log goes through here, one at a time, and the first failure latches the log before
    /// the next one starts: the kernel reports a writeback error to one fdatasync only, so a
    /// later one that succeeds says nothing of the pages the failed one covered (written by a
    /// group that the syncer is about to acknowledge, say, while the writer's roll got the
    /// error). After a failure every call fails with [`LogError::Poisoned`] until the log is
    /// reopened.
    fn sync_segment(&self, handle: &SegmentHandle, end: u64) -> Result<()> {
        let mut failed = self.sync_failed.lock().unwrap_or_else(|p| p.into_inner());
        if *failed {
            return Err(LogError::Poisoned);
        }
        match handle.file.sync_data() {
            Ok(()) => {
                handle.synced.fetch_max(end, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                *failed = true;
                let e = LogError::io(self.dir.join(&handle.name), e);
                leave_sync_failed_file(
                    self.vfs.as_ref(),
                    &self.dir,
                    &handle.name,
                    handle.synced.load(Ordering::Acquire),
                    &e,
                );
                Err(e)
            }
        }
    }

    fn segments(&self) -> Vec<Arc<SegmentHandle>> {
        match self.segments.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn segment(&self, first_position: u64) -> Option<Arc<SegmentHandle>> {
        let segs = match self.segments.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        segs.binary_search_by_key(&first_position, |s| s.first_position)
            .ok()
            .map(|i| segs[i].clone())
    }
}

/// Read access to the log; cheap to clone and share between threads.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

/// The single writer of the log.
pub struct LogWriter {
    shared: Arc<Shared>,
    config: LogConfig,
    active: Arc<SegmentHandle>,
    /// Bytes of the active segment already written to the file.
    written: u64,
    /// End of the active segment file: frames up to `written`, then zeros written ahead of
    /// them (see [`LogWriter::zero_fill_ahead`]).
    zeroed: u64,
    /// Bytes of the active segment whose writeback has been started (early writeback).
    writeback_started: u64,
    /// Frames appended but not yet written.
    buf: Vec<u8>,
    next_position: u64,
    /// Position up to which the log is known durable.
    durable_position: u64,
    poisoned: bool,
    /// Segments sealed by a roll since the last commit, with their final sizes. Readers keep
    /// seeing their last committed end until the next commit publishes these.
    sealed_unpublished: Vec<(Arc<SegmentHandle>, u64)>,
    /// Segments created by a roll since the last commit; readers learn of them at the next
    /// commit, after the final ends of the segments before them.
    created_unpublished: Vec<Arc<SegmentHandle>>,
    /// The unit being appended (see [`LogWriter::begin_unit`]): where the buffer and the
    /// positions stood before its first frame.
    unit: Option<(usize, u64)>,
}

fn corrupted(segment: &str, offset: u64, reason: impl Into<String>) -> LogError {
    LogError::Corrupted {
        segment: segment.to_string(),
        offset,
        reason: reason.into(),
    }
}

/// The log has lost bytes below `cp`. A checkpoint is recorded only once the log is durable
/// up to it, so these bytes held durable, acknowledged events: that is damage to report, not
/// a torn tail to cut (cutting would drop them silently).
fn missing_below_checkpoint(segment: &str, offset: u64, cp: &Checkpoint, what: &str) -> LogError {
    corrupted(
        segment,
        offset,
        format!(
            "{what}, but the index checkpoint records durable events up to position {} at \
             byte {} of segment {} (a log restored from an older copy needs its index \
             deleted too)",
            cp.next_position,
            cp.offset,
            segment::file_name(cp.segment)
        ),
    )
}

/// Called by [`open`] for every frame replayed after the checkpoint.
pub type FrameVisitor<'a> = dyn FnMut(FrameLocation, &FrameHeader, &[u8]) -> Result<()> + 'a;

/// Opens (or creates) the log in `dir`, recovering from the last checkpoint.
///
/// Every frame after `checkpoint` is passed to `on_frame` in order, so that the caller can
/// bring derived state (stream heads, the index) up to date. A torn tail is truncated;
/// any other damage is an error naming the segment and offset.
pub fn open(
    vfs: Arc<dyn Vfs>,
    dir: &Path,
    config: LogConfig,
    checkpoint: Option<Checkpoint>,
    on_frame: &mut FrameVisitor<'_>,
) -> Result<(LogReader, LogWriter, RecoveryReport)> {
    if config.segment_size_bytes_max < SEGMENT_SIZE_MIN {
        return Err(LogError::InvalidConfig(format!(
            "segment size {} is below the minimum of {SEGMENT_SIZE_MIN} bytes",
            config.segment_size_bytes_max
        )));
    }
    // A new directory (and each new ancestor) is an entry of its parent: without their
    // syncs, a power loss can take the whole log, acknowledged appends included, with it.
    crate::fs::create_dir_durably(vfs.as_ref(), dir).map_err(|e| LogError::io(dir, e))?;
    let shared = Arc::new(Shared {
        vfs: vfs.clone(),
        dir: dir.to_path_buf(),
        segments: RwLock::new(Vec::new()),
        committed_position: AtomicU64::new(0),
        map_segments: config.map_segments,
        segment_size_bytes_max: config.segment_size_bytes_max,
        sync_failed: Mutex::new(false),
    });
    let mut report = RecoveryReport::default();
    let names = vfs.list(dir).map_err(|e| LogError::io(dir, e))?;
    let firsts = segment::firsts(&names);
    // Files left by failed fdatasyncs: only one of this boot calls for writing bytes again;
    // all of them are removed once this open has synced.
    let sync_failed_files: Vec<PathBuf> = names
        .iter()
        .filter(|n| n.starts_with(SYNC_FAILED_PREFIX))
        .map(|n| dir.join(n))
        .collect();
    let sync_failed_file = dir.join(sync_failed_file_name(&vfs.boot_id()));
    let sync_failed = sync_failed_files.contains(&sync_failed_file);
    if firsts.is_empty() {
        if let Some(cp) = checkpoint {
            if cp.next_position != 0 {
                return Err(missing_below_checkpoint(
                    &segment::file_name(cp.segment),
                    0,
                    &cp,
                    "the log has no segment files",
                ));
            }
        }
        // Nothing to write again: no segment.
        remove_files(vfs.as_ref(), &sync_failed_files)?;
        let handle = create_segment(&shared, 0)?;
        publish_segment(&shared, handle.clone());
        let writer = LogWriter::new(
            shared.clone(),
            config,
            handle,
            SEGMENT_HEADER_SIZE as u64,
            SEGMENT_HEADER_SIZE as u64,
            0,
        );
        report.segments = 1;
        return Ok((LogReader { shared }, writer, report));
    }

    // Positions are gapless from 0: a log whose oldest segment starts later lost its first
    // segment, acknowledged events included.
    if firsts[0] != 0 {
        return Err(corrupted(
            &segment::file_name(firsts[0]),
            0,
            format!(
                "the oldest segment starts at position {}, not 0 (segment {} is missing)",
                firsts[0],
                segment::file_name(0)
            ),
        ));
    }

    // Open every segment and check its header against its name.
    let last_index = firsts.len() - 1;
    let mut handles = Vec::with_capacity(firsts.len());
    let mut torn_last_header = false;
    for (i, &first) in firsts.iter().enumerate() {
        let name = segment::file_name(first);
        let path = dir.join(&name);
        let file = vfs.open(&path).map_err(|e| LogError::io(&path, e))?;
        let len = file.len().map_err(|e| LogError::io(&path, e))?;
        let mut h = [0u8; SEGMENT_HEADER_SIZE];
        let header = if len >= SEGMENT_HEADER_SIZE as u64 {
            file.read_exact_at(&mut h, 0)
                .map_err(|e| LogError::io(&path, e))?;
            segment::decode_header(&h)
        } else {
            Err("incomplete segment header")
        };
        match header {
            Ok(p) if p == first => {}
            Ok(_) => {
                return Err(corrupted(
                    &name,
                    0,
                    "segment header disagrees with its name",
                ))
            }
            Err(reason) if i < last_index => return Err(corrupted(&name, 0, reason)),
            Err(reason) => {
                // A crash while rolling can leave the newest segment with a torn header, but
                // only if nothing valid was ever written after it.
                if len > SEGMENT_HEADER_SIZE as u64
                    && data_end(&file, &path, SEGMENT_HEADER_SIZE as u64, len)?
                        > SEGMENT_HEADER_SIZE as u64
                    && find_later_frame(&file, &path, SEGMENT_HEADER_SIZE as u64, len, |o, h| {
                        // The segment's frames start after the header, at its first position.
                        could_follow(o, h.first_position, SEGMENT_HEADER_SIZE as u64, first)
                    })?
                    .is_some()
                {
                    return Err(corrupted(&name, 0, reason));
                }
                torn_last_header = true;
            }
        }
        handles.push(Arc::new(SegmentHandle::new(first, name, file, len)));
    }

    // Where to start scanning.
    let (start_index, mut offset, mut expected) = match checkpoint {
        Some(cp) => {
            let Some(i) = firsts.iter().position(|&f| f == cp.segment) else {
                return Err(missing_below_checkpoint(
                    &segment::file_name(cp.segment),
                    0,
                    &cp,
                    "the segment file is missing",
                ));
            };
            if cp.offset < SEGMENT_HEADER_SIZE as u64 {
                // Not a place a checkpoint can name: the index is damaged, not the log.
                return Err(LogError::CheckpointMismatch(format!(
                    "checkpoint offset {} is inside the header of segment {}",
                    cp.offset, handles[i].name
                )));
            }
            let end = handles[i].end.load(Ordering::Relaxed);
            if cp.offset > end {
                return Err(missing_below_checkpoint(
                    &handles[i].name,
                    end,
                    &cp,
                    "the segment file ends there",
                ));
            }
            let path = dir.join(&handles[i].name);
            if checkpoint_is_foreign(&handles[i], &path, &cp, end, i == last_index)? {
                // Not this log's checkpoint (the index of another store or history): scanning
                // from it would take the middle of a frame for a torn tail and cut
                // acknowledged events.
                return Err(LogError::CheckpointMismatch(format!(
                    "no frame of segment {} ends at the checkpoint's offset {} with position {}",
                    handles[i].name, cp.offset, cp.next_position
                )));
            }
            (i, cp.offset, cp.next_position)
        }
        None => (0, SEGMENT_HEADER_SIZE as u64, firsts[0]),
    };
    let checkpoint_mark = checkpoint.map(|cp| (cp.segment, cp.offset));
    // The last segment's frames that no later frame proves durable (by the durable position
    // it records), oldest first, as (offset, position after the frame): the first one is as
    // far as the disk is known to hold the segment when an fdatasync fails during this open.
    let mut unproven: VecDeque<(u64, u64)> = VecDeque::new();

    for (i, h) in handles.iter().enumerate().skip(start_index) {
        let h = h.clone();
        if i > start_index {
            offset = SEGMENT_HEADER_SIZE as u64;
        }
        if i > start_index && h.first_position != expected {
            return Err(corrupted(
                &h.name,
                0,
                format!(
                    "segment starts at position {} but the log continues at {expected}",
                    h.first_position
                ),
            ));
        }
        let is_last = i == last_index;
        if is_last && torn_last_header {
            // Rewrite the header of the segment whose creation was torn.
            let path = dir.join(&h.name);
            h.file.set_len(0).map_err(|e| LogError::io(&path, e))?;
            h.file
                .write_all_at(&segment::encode_header(h.first_position), 0)
                .map_err(|e| LogError::io(&path, e))?;
            sync_at_open(vfs.as_ref(), dir, &h, 0)?;
            report.truncated = Some((h.name.clone(), 0, 0));
            h.end.store(SEGMENT_HEADER_SIZE as u64, Ordering::Relaxed);
            break;
        }
        let len = h.end.load(Ordering::Relaxed);
        let mut cursor = FrameCursor::new(h.file.clone(), offset, len);
        let path = dir.join(&h.name);
        // Whether the index checkpoint recorded the log as durable past offset `at` here.
        let below_checkpoint = |at: u64| {
            checkpoint_mark
                .is_some_and(|(s, o)| s > h.first_position || (s == h.first_position && o > at))
        };
        // The frames of a unit whose last frame has not been read yet: replayed once it is,
        // cut with the tail if it never comes.
        let mut unit: Vec<(FrameLocation, FrameHeader, Bytes)> = Vec::new();
        let mut unit_start_position = expected;
        // Where the log ends in this segment if a torn tail is cut, the first damaged byte,
        // and what is wrong there; `None` when the segment's frames run to its end.
        let tail: Option<(u64, u64, String)> = loop {
            match cursor.next_item().map_err(|e| LogError::io(&path, e))? {
                CursorItem::End => {
                    break unit.first().map(|(loc, _, _)| {
                        (loc.offset, len, "a unit of frames ends early".into())
                    });
                }
                CursorItem::Frame {
                    offset: at,
                    header,
                    payload,
                } => {
                    if header.first_position != expected {
                        return Err(corrupted(
                            &h.name,
                            at,
                            format!(
                                "frame at position {} where {expected} was expected",
                                header.first_position
                            ),
                        ));
                    }
                    let loc = FrameLocation {
                        segment: h.first_position,
                        offset: at,
                        len: header.frame_len(),
                    };
                    if unit.is_empty() {
                        unit_start_position = expected;
                    }
                    if is_last {
                        unproven.push_back((at, header.next_position()));
                        while unproven
                            .front()
                            .is_some_and(|&(_, end)| end <= header.durable_position)
                        {
                            unproven.pop_front();
                        }
                    }
                    expected = header.next_position();
                    unit.push((loc, header, payload));
                    if !header.continues {
                        for (loc, header, payload) in unit.drain(..) {
                            on_frame(loc, &header, &payload)?;
                            report.frames_replayed += 1;
                            report.events_replayed += u64::from(header.event_count);
                        }
                    }
                }
                CursorItem::Defect { offset: at, defect } => {
                    // Zeros to the end of the last segment: zeros written ahead of the frames
                    // (or a tail whose pages never reached the disk).
                    let data_end = if is_last {
                        data_end(&h.file, &path, at, len)?
                    } else {
                        len
                    };
                    let zero_tail = data_end == at;
                    let later = if zero_tail {
                        None
                    } else {
                        // To `len`: a later frame's last bytes may be zeros.
                        // After the damaged frame, which holds at least one event.
                        find_later_frame(&h.file, &path, at + 1, len, |o, f| {
                            f.first_position > expected
                                && could_follow(o, f.first_position, at, expected)
                        })?
                    };
                    let facts = DefectFacts {
                        in_last_segment: is_last,
                        below_checkpoint: below_checkpoint(at),
                        proven_durable_by_later_frame: later.is_some_and(|d| d > expected),
                    };
                    if let Verdict::Corrupted(why) = decide(facts) {
                        return Err(corrupted(&h.name, at, format!("{defect}: {why}")));
                    }
                    match unit.first() {
                        // The log ends here; the zeros stay, to be overwritten by frames.
                        None if zero_tail => {
                            h.end.store(at, Ordering::Relaxed);
                            break None;
                        }
                        None => break Some((at, data_end, defect.to_string())),
                        // A unit torn by the damage goes with it.
                        Some((loc, _, _)) => {
                            break Some((loc.offset, data_end, defect.to_string()))
                        }
                    }
                }
            }
        };
        let Some((cut, data_end, why)) = tail else {
            continue;
        };
        if !unit.is_empty() {
            // Its frames were whole: the damage (or the end) is after them. Keeping only
            // whole units, the log continues where the unit began.
            let facts = DefectFacts {
                in_last_segment: is_last,
                below_checkpoint: below_checkpoint(cut),
                proven_durable_by_later_frame: false,
            };
            if let Verdict::Corrupted(reason) = decide(facts) {
                return Err(corrupted(
                    &h.name,
                    cut,
                    format!("a unit of frames is not whole ({why}): {reason}"),
                ));
            }
            expected = unit_start_position;
        }
        let dropped = data_end - cut;
        tracing::warn!(segment = %h.name, offset = cut, dropped, %why, "truncating torn tail");
        h.file.set_len(cut).map_err(|e| LogError::io(&path, e))?;
        sync_at_open(vfs.as_ref(), dir, &h, proven_end(&unproven, cut))?;
        h.end.store(cut, Ordering::Relaxed);
        report.truncated = Some((h.name.clone(), cut, dropped));
        break;
    }

    let active = handles[last_index].clone();
    let written = active.end.load(Ordering::Relaxed);
    // Zeros written ahead of the frames by the previous process stay in use.
    let zeroed = active
        .file
        .len()
        .map_err(|e| LogError::io(dir.join(&active.name), e))?;
    // The previous process may have died after writing frames but before syncing them, or
    // after creating the newest segment but before syncing the directory. Recovered frames
    // count as durable from here on (the writer records that in the next frame's
    // `durable_position`, which recovery trusts), so make them, and every segment's directory
    // entry, durable before anything new is written.
    // As far as the disk is known to hold the last segment (frames after it may be the
    // previous process's, written but never synced).
    let proven = proven_end(&unproven, written);
    if sync_failed {
        rewrite_after_failed_sync(vfs.as_ref(), &sync_failed_file, &handles, written, proven)?;
    }
    sync_at_open(vfs.as_ref(), dir, &active, proven)?;
    active.synced.store(written, Ordering::Release);
    remove_files(vfs.as_ref(), &sync_failed_files)?;
    vfs.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    for h in handles {
        publish_segment(&shared, h);
    }
    shared.committed_position.store(expected, Ordering::Release);
    report.next_position = expected;
    report.segments = firsts.len();
    let writer = LogWriter::new(
        shared.clone(),
        config,
        active,
        written,
        zeroed.max(written),
        expected,
    );
    Ok((LogReader { shared }, writer, report))
}

/// After a failed fdatasync the kernel may keep the pages it could not write in its cache,
/// marked clean (fsyncgate): reads still see the bytes, no later fdatasync writes them, and a
/// power loss loses them. A log reopened in the same boot would take them for durable, and
/// frames acknowledged after them would sit behind a hole once the power goes. This leaves
/// a file in `dir` named for the boot ([`sync_failed_file_name`]) that names the segment and
/// the end `synced` of its bytes known to be on the disk, unsynced: it only has to outlive the process, not the
/// machine (after a power loss the cache is gone and recovery reads what is on the disk). The
/// next open in the same boot writes the segment's bytes after that end again before its
/// fdatasync, then removes the file (see [`rewrite_after_failed_sync`]). A file already there
/// is kept: it names an end no later than this one. Best effort: the disk is failing already.
fn leave_sync_failed_file(vfs: &dyn Vfs, dir: &Path, segment: &str, synced: u64, e: &LogError) {
    let path = dir.join(sync_failed_file_name(&vfs.boot_id()));
    if vfs.exists(&path) {
        return;
    }
    let text = format!(
        "{segment} {synced}\n{e}\nThe segment's bytes after that offset are written again when the log is next opened in this boot.\n"
    );
    let left = vfs
        .create(&path)
        .and_then(|f| f.write_all_at(text.as_bytes(), 0));
    if let Err(error) = left {
        tracing::error!(%error, path = %path.display(), "could not leave the sync failure file");
    }
}

/// How far the disk is known to hold the last segment, whose data ends at `end`: up to its
/// first frame that no later frame proves durable (`unproven`, oldest first). A proven frame
/// proves the header before it; with none proven, nothing is known, not even the header (the
/// segment's creation may be what failed).
fn proven_end(unproven: &VecDeque<(u64, u64)>, end: u64) -> u64 {
    let proven = unproven.front().map_or(end, |&(at, _)| at).min(end);
    if proven <= SEGMENT_HEADER_SIZE as u64 {
        0
    } else {
        proven
    }
}

/// fdatasyncs a segment during open; a failure leaves the sync failure file naming `synced`,
/// the end of the segment's bytes known to be on the disk.
fn sync_at_open(vfs: &dyn Vfs, dir: &Path, h: &SegmentHandle, synced: u64) -> Result<()> {
    h.file.sync_data().map_err(|e| {
        let e = LogError::io(dir.join(&h.name), e);
        leave_sync_failed_file(vfs, dir, &h.name, synced, &e);
        e
    })
}

/// An fdatasync failed before in this boot (it left `file`, naming the segment and the end of
/// its bytes known to be on the disk): the segment's bytes after that end may be cached
/// pages that the kernel will never write (see [`leave_sync_failed_file`]). Writes them again,
/// the same bytes, and sets the file's size again, so that the next fdatasync writes them; a
/// sealed segment is synced here, the last one (whose recovered end is `written`) by the
/// caller. Bytes after the end a failed fdatasync of a running log named were never synced
/// (so never acknowledged under `Always` durability; under the relaxed modes, acknowledged
/// without the promise to survive a power loss), so a power loss that tears them tears a tail
/// that may be lost. The end an open names (see [`proven_end`]) may come before acknowledged
/// frames, which are then written again with the same bytes. (Files of earlier boots are not read: the cache is gone, and
/// recovery has read what is on the disk.) A file that does not parse (its writing failed or
/// was cut short) or names no segment of the log says only that an fdatasync failed: the last
/// segment is written again from `proven`, the end of the frames that later frames prove
/// durable, which may include acknowledged frames (written again with the same bytes).
fn rewrite_after_failed_sync(
    vfs: &dyn Vfs,
    file: &Path,
    handles: &[Arc<SegmentHandle>],
    written: u64,
    proven: u64,
) -> Result<()> {
    let Some(last) = handles.len().checked_sub(1) else {
        return Ok(());
    };
    let mut text = Vec::new();
    if let Ok(f) = vfs.open(file) {
        let len = f.len().unwrap_or(0).min(4096);
        text.resize(len as usize, 0);
        if f.read_exact_at(&mut text, 0).is_err() {
            text.clear();
        }
    }
    let text = String::from_utf8_lossy(&text);
    let named = text.lines().next().and_then(|l| {
        let (name, synced) = l.split_once(' ')?;
        Some((name.to_owned(), synced.parse::<u64>().ok()?))
    });
    let (i, from) = match named {
        Some((name, synced)) => match handles.iter().position(|h| h.name == name) {
            Some(i) => (i, synced),
            None => {
                tracing::warn!(file = %file.display(), segment = %name, "the sync failure file names no segment of the log; writing the last segment's unproven frames again");
                (last, proven)
            }
        },
        None => {
            tracing::warn!(file = %file.display(), "the sync failure file does not parse; writing the last segment's unproven frames again");
            (last, proven)
        }
    };
    let Some(h) = handles.get(i) else {
        return Ok(());
    };
    let end = if i == last {
        written
    } else {
        h.end.load(Ordering::Relaxed)
    };
    let path = file.with_file_name(&h.name);
    tracing::warn!(segment = %h.name, from, to = end,
        "an fdatasync failed before: writing the bytes after its last successful one again");
    let mut buf = vec![0u8; REWRITE_CHUNK_BYTES.min(end.saturating_sub(from) as usize)];
    let mut at = from;
    while at < end {
        let n = (end - at).min(buf.len() as u64) as usize;
        let chunk = buf.get_mut(..n).unwrap_or_default();
        h.file
            .read_exact_at(chunk, at)
            .map_err(|e| LogError::io(&path, e))?;
        h.file
            .write_all_at(chunk, at)
            .map_err(|e| LogError::io(&path, e))?;
        at += n as u64;
    }
    // The file's size too: a size change the failed fdatasync covered (a sealed segment cut
    // to its last frame, zeros written ahead) may be lost with it.
    let len = h.file.len().map_err(|e| LogError::io(&path, e))?;
    h.file.set_len(len).map_err(|e| LogError::io(&path, e))?;
    if i != last {
        h.file.sync_data().map_err(|e| LogError::io(&path, e))?;
    }
    Ok(())
}

/// Removes `files` (the sync failure files, once an open has synced what they called for).
fn remove_files(vfs: &dyn Vfs, files: &[PathBuf]) -> Result<()> {
    for f in files {
        vfs.remove(f).map_err(|e| LogError::io(f, e))?;
    }
    Ok(())
}

/// Looks for CRC-valid frames in `file` from offset `from` (up to `end`) that `fits` (given
/// a candidate's offset and header) and returns the largest `durable_position` they record.
///
/// Event data is stored byte for byte, so damaged bytes may themselves hold a frame (a torn
/// frame's payload, one of another log kept as data): `fits` says where a frame of this log
/// could stand (see [`could_follow`]), and a frame that could not is not taken for proof that
/// what lies before it was durable.
fn find_later_frame(
    file: &Arc<dyn VFile>,
    path: &Path,
    from: u64,
    end: u64,
    fits: impl Fn(u64, &FrameHeader) -> bool,
) -> Result<Option<u64>> {
    if from >= end {
        return Ok(None);
    }
    let mut bytes = vec![0u8; (end - from) as usize];
    file.read_exact_at(&mut bytes, from)
        .map_err(|e| LogError::io(path, e))?;
    let magic = FRAME_MAGIC.to_le_bytes();
    let mut best: Option<u64> = None;
    let mut i = 0;
    while i + FRAME_HEADER_SIZE <= bytes.len() {
        if bytes[i..i + 4] == magic {
            if let Ok((h, _)) = decode_frame(&bytes[i..]) {
                if fits(from + i as u64, &h) {
                    best = Some(best.map_or(h.durable_position, |b| b.max(h.durable_position)));
                    i += h.frame_len() as usize;
                    continue;
                }
            }
        }
        i += 1;
    }
    Ok(best)
}

/// Whether a frame at byte `offset` whose first event is at `position` could stand in a log
/// whose events from `first_position` on start at byte `first_offset`: at or after that
/// position, and by no more events than the bytes between can hold (each takes at least its
/// encoding's fewest bytes).
fn could_follow(offset: u64, position: u64, first_offset: u64, first_position: u64) -> bool {
    position >= first_position
        && offset >= first_offset
        && position - first_position
            <= (offset - first_offset) / crate::record::EVENT_BYTES_MIN as u64
}

fn create_segment(shared: &Shared, first_position: u64) -> Result<Arc<SegmentHandle>> {
    let name = segment::file_name(first_position);
    let path = shared.dir.join(&name);
    let file = shared
        .vfs
        .create_new(&path)
        .map_err(|e| LogError::io(&path, e))?;
    file.write_all_at(&segment::encode_header(first_position), 0)
        .map_err(|e| LogError::io(&path, e))?;
    let handle = Arc::new(SegmentHandle::new(
        first_position,
        name,
        file,
        SEGMENT_HEADER_SIZE as u64,
    ));
    handle.synced.store(0, Ordering::Release);
    shared.sync_segment(&handle, SEGMENT_HEADER_SIZE as u64)?;
    shared
        .vfs
        .sync_dir(&shared.dir)
        .map_err(|e| LogError::io(&shared.dir, e))?;
    Ok(handle)
}

/// Whether `cp` is proven not to be a checkpoint of segment `h` (of `end` bytes, at `path`).
/// Only when what lies at its offset is neither the log's end, nor a frame at its position,
/// nor zeros to the end of the last segment, are the segment's frames read from its start: a
/// checkpoint is of this log if one ends there at its position. Frames damaged before the offset prove
/// nothing (that is the log's damage, reported by the scan as before).
fn checkpoint_is_foreign(
    h: &SegmentHandle,
    path: &Path,
    cp: &Checkpoint,
    end: u64,
    is_last: bool,
) -> Result<bool> {
    let io = |e| LogError::io(path, e);
    match FrameCursor::new(h.file.clone(), cp.offset, end)
        .next_item()
        .map_err(io)?
    {
        CursorItem::End => return Ok(false),
        CursorItem::Frame { header, .. } if header.first_position == cp.next_position => {
            return Ok(false)
        }
        CursorItem::Defect { offset, .. }
            if is_last && data_end(&h.file, path, offset, end)? == offset =>
        {
            return Ok(false)
        }
        _ => {}
    }
    if cp.offset <= SEGMENT_HEADER_SIZE as u64 {
        return Ok(false);
    }
    let mut cursor = FrameCursor::new(h.file.clone(), SEGMENT_HEADER_SIZE as u64, end);
    loop {
        match cursor.next_item().map_err(io)? {
            CursorItem::Frame { offset, header, .. } => {
                let frame_end = offset + header.frame_len();
                if frame_end == cp.offset {
                    return Ok(header.next_position() != cp.next_position);
                }
                if frame_end > cp.offset {
                    return Ok(true);
                }
            }
            CursorItem::End | CursorItem::Defect { .. } => return Ok(false),
        }
    }
}

/// The end of the data in `file` between `from` and `end`: the offset after its last nonzero
/// byte, or `from` when it holds only zeros (written ahead of the frames of the active
/// segment).
fn data_end(file: &Arc<dyn VFile>, path: &Path, from: u64, end: u64) -> Result<u64> {
    let mut buf = vec![0u8; ZERO_CHECK_CHUNK_BYTES.min(end.saturating_sub(from) as usize)];
    let mut at = from;
    let mut data_end = from;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, at)
            .map_err(|e| LogError::io(path, e))?;
        if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
            data_end = at + i as u64 + 1;
        }
        at += n as u64;
    }
    Ok(data_end)
}

fn publish_segment(shared: &Shared, h: Arc<SegmentHandle>) {
    let mut segs = match shared.segments.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    segs.push(h);
}

impl LogWriter {
    fn new(
        shared: Arc<Shared>,
        config: LogConfig,
        active: Arc<SegmentHandle>,
        written: u64,
        zeroed: u64,
        next_position: u64,
    ) -> Self {
        LogWriter {
            shared,
            config,
            active,
            written,
            zeroed,
            // What recovery found is on disk already, or is about to be by the next sync.
            writeback_started: written,
            buf: Vec::with_capacity(1 << 20),
            next_position,
            durable_position: next_position,
            poisoned: false,
            sealed_unpublished: Vec::new(),
            created_unpublished: Vec::new(),
            unit: None,
        }
    }

    /// Position the next event gets.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// Position up to which the log is durable.
    pub fn durable_position(&self) -> u64 {
        self.durable_position
    }

    /// Whether an earlier failure latched the writer.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn latch<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    /// Appends one frame of `event_count` events whose payload `write_payload` encodes.
    /// The frame is buffered; [`LogWriter::commit`] writes (and syncs) it.
    pub fn append(
        &mut self,
        event_count: u32,
        write_payload: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<FrameLocation> {
        self.append_frame(event_count, false, write_payload)
    }

    /// Starts a unit: the frames appended next, up to and including one appended with
    /// `continues == false` by [`LogWriter::append_to_unit`], are kept whole or not at all by
    /// recovery, and lie in one segment: if `bytes_max` (at least the unit's encoded size)
    /// does not fit in the active segment, the log rolls first, and no frame of the unit
    /// rolls it (a unit larger than a segment makes its segment larger, as a single large
    /// frame does).
    pub fn begin_unit(&mut self, bytes_max: u64) -> Result<()> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        if self.would_overflow(self.written + self.buf.len() as u64, bytes_max) {
            let r = self.roll();
            self.latch(r)?;
        }
        self.unit = Some((self.buf.len(), self.next_position));
        Ok(())
    }

    /// Appends a frame of the unit begun by [`LogWriter::begin_unit`]; `continues` is false
    /// for its last frame, which ends the unit.
    pub fn append_to_unit(
        &mut self,
        event_count: u32,
        continues: bool,
        write_payload: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<FrameLocation> {
        debug_assert!(self.unit.is_some(), "append_to_unit outside a unit");
        self.append_frame(event_count, continues, write_payload)
    }

    /// Drops the frames of an unfinished unit from the buffer (an append refused halfway).
    pub fn abort_unit(&mut self) {
        if let Some((buf_len, next_position)) = self.unit.take() {
            self.buf.truncate(buf_len);
            self.next_position = next_position;
        }
    }

    /// Whether `bytes` more after `used` bytes of the active segment would take it past the
    /// segment size (a segment holding no frame yet takes them whatever their size).
    fn would_overflow(&self, used: u64, bytes: u64) -> bool {
        used > SEGMENT_HEADER_SIZE as u64
            && used.saturating_add(bytes) > self.config.segment_size_bytes_max
    }

    fn append_frame(
        &mut self,
        event_count: u32,
        continues: bool,
        write_payload: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<FrameLocation> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let start = self.buf.len();
        frame::encode_unit_frame_with(
            &mut self.buf,
            self.next_position,
            self.durable_position,
            event_count,
            continues,
            write_payload,
        )?;
        let frame_len = (self.buf.len() - start) as u64;
        let used = self.written + start as u64;
        let in_unit = self.unit.is_some();
        if !continues {
            self.unit = None;
        }
        if !in_unit && self.would_overflow(used, frame_len) {
            let frame_bytes = self.buf.split_off(start);
            let r = self.roll();
            self.latch(r)?;
            // The frame was encoded with the durable position of before the roll; the roll
            // synced everything, which only makes the recorded value conservative.
            self.buf = frame_bytes;
        }
        let loc = FrameLocation {
            segment: self.active.first_position,
            offset: self.written + (self.buf.len() as u64 - frame_len),
            len: frame_len,
        };
        self.next_position += u64::from(event_count);
        Ok(loc)
    }

    /// Writes the buffered frames to the active segment.
    fn write_buffer(&mut self) -> Result<()> {
        debug_assert!(
            self.unit.is_none(),
            "a unit of frames is written unfinished"
        );
        if self.buf.is_empty() {
            return Ok(());
        }
        self.zero_fill_ahead(self.written + self.buf.len() as u64)?;
        self.write_buffer_only()
    }

    fn write_buffer_only(&mut self) -> Result<()> {
        let end = self.written + self.buf.len() as u64;
        // The path is made only for an error: this runs for every group.
        self.active
            .file
            .write_all_at(&self.buf, self.written)
            .map_err(|e| LogError::io(self.shared.dir.join(&self.active.name), e))?;
        self.written = end;
        self.buf.clear();
        if self.config.early_writeback
            && self.written - self.writeback_started >= EARLY_WRITEBACK_BYTES
        {
            // A hint: if it fails, the next fdatasync does the work (and reports any error).
            if let Err(e) = self.active.file.start_writeback(
                self.writeback_started,
                self.written - self.writeback_started,
            ) {
                tracing::debug!(error = %e, "early writeback not started");
            }
            self.writeback_started = self.written;
        }
        Ok(())
    }

    /// Keeps zeros written ahead of the frames, up to the segment size, so that frames
    /// overwrite blocks the file system has already allocated and written: an fdatasync then
    /// has no block allocation or file size to commit, only data, which on ext4 here takes
    /// about 110 us instead of 175 us for a 20 KiB group (`BASELINES.md`, and
    /// `docs/benchmarks.md` for the measurement). The zeros go out
    /// [`ZERO_FILL_CHUNK_BYTES`] at a time (the fdatasync after such a write costs more
    /// once), and are made durable by the next fdatasync like any write; recovery reads zeros
    /// after the last frame as the end of the log.
    fn zero_fill_ahead(&mut self, end: u64) -> Result<()> {
        let max = self.config.segment_size_bytes_max;
        if self.zeroed >= max || self.zeroed >= end + ZERO_FILL_MARGIN_BYTES {
            return Ok(());
        }
        let from = self.zeroed.max(end);
        let to = (from + ZERO_FILL_CHUNK_BYTES).min(max);
        let path = self.shared.dir.join(&self.active.name);
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64);
            let zeros = ZEROS.get(..n as usize).unwrap_or_default();
            self.active
                .file
                .write_all_at(zeros, at)
                .map_err(|e| LogError::io(&path, e))?;
            at += n;
        }
        self.zeroed = self.zeroed.max(to).max(end);
        Ok(())
    }

    fn sync_active(&mut self) -> Result<()> {
        self.shared.sync_segment(&self.active, self.written)
    }

    fn roll(&mut self) -> Result<()> {
        // Without zeros ahead: they would be cut off right away.
        self.write_buffer_only()?;
        // A sealed segment ends at its last frame: drop the zeros written ahead (before the
        // next segment exists, so that only the last segment ever has a zero tail).
        if self.zeroed > self.written {
            let path = self.shared.dir.join(&self.active.name);
            self.active
                .file
                .set_len(self.written)
                .map_err(|e| LogError::io(&path, e))?;
        }
        self.sync_active()?;
        // `next_position` has not been advanced for the frame being placed, so it is the first
        // position of the new segment.
        let handle = create_segment(&self.shared, self.next_position)?;
        self.durable_position = self.next_position;
        // The frames just written to the old segment are not committed yet: publishing its
        // final end (or the new segment) now would let readers see them before `commit`.
        let sealed = std::mem::replace(&mut self.active, handle.clone());
        self.sealed_unpublished.push((sealed, self.written));
        self.created_unpublished.push(handle);
        self.written = SEGMENT_HEADER_SIZE as u64;
        self.zeroed = SEGMENT_HEADER_SIZE as u64;
        self.writeback_started = SEGMENT_HEADER_SIZE as u64;
        Ok(())
    }

    /// Writes the buffered frames and, if `sync`, makes them durable; then publishes them to
    /// readers. On failure the writer is latched: every later call fails with
    /// [`LogError::Poisoned`] until the log is reopened.
    pub fn commit(&mut self, sync: bool) -> Result<()> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let r = self.write_buffer();
        self.latch(r)?;
        if sync {
            let r = self.sync_active();
            self.latch(r)?;
            self.durable_position = self.next_position;
        }
        self.publish();
        Ok(())
    }

    /// Makes everything written so far visible to readers. A sealed segment's final end is
    /// stored before the segment after it is listed, so a scanner that finds a newer segment
    /// has already read the old one to its end.
    fn publish(&mut self) {
        for (handle, end) in self.sealed_unpublished.drain(..) {
            handle.end.store(end, Ordering::Release);
        }
        for handle in self.created_unpublished.drain(..) {
            publish_segment(&self.shared, handle);
        }
        self.active.end.store(self.written, Ordering::Release);
        self.shared
            .committed_position
            .store(self.next_position, Ordering::Release);
    }

    /// Writes the buffered frames without syncing them and returns the commit for another
    /// thread to sync and publish, so that the next group's encoding and write overlap this
    /// group's fdatasync (pipelined group commit). Pending commits must be published in the
    /// order they were written. Do not mix with [`LogWriter::commit`].
    pub fn write_pending(&mut self) -> Result<PendingCommit> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let r = self.write_buffer();
        self.latch(r)?;
        Ok(PendingCommit {
            shared: self.shared.clone(),
            active: self.active.clone(),
            end: self.written,
            next_position: self.next_position,
            sealed: self.sealed_unpublished.drain(..).collect(),
            created: self.created_unpublished.drain(..).collect(),
        })
    }

    /// Tells the writer that the log is durable up to `position` (learned from whoever syncs
    /// pending commits); frames written from now on record it.
    pub fn note_durable(&mut self, position: u64) {
        self.durable_position = self.durable_position.max(position.min(self.next_position));
    }

    /// Latches the writer after a failure found elsewhere (a failed fdatasync of a pending
    /// commit): every later call fails with [`LogError::Poisoned`].
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    /// Makes everything written so far durable (for interval durability).
    pub fn sync(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let r = self.write_buffer();
        self.latch(r)?;
        let r = self.sync_active();
        self.latch(r)?;
        self.durable_position = self.next_position;
        Ok(())
    }

    /// A reader sharing this writer's log.
    pub fn reader(&self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }
}

/// Frames written by [`LogWriter::write_pending`], waiting to be synced and published.
pub struct PendingCommit {
    shared: Arc<Shared>,
    active: Arc<SegmentHandle>,
    end: u64,
    next_position: u64,
    sealed: Vec<(Arc<SegmentHandle>, u64)>,
    created: Vec<Arc<SegmentHandle>>,
}

impl PendingCommit {
    /// Position after this commit's last event.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// fdatasyncs the segment this commit ends in. Segments sealed before it were synced
    /// whole when they were sealed, so this makes the commit (and every earlier one) durable.
    pub fn sync(&self) -> Result<()> {
        self.shared.sync_segment(&self.active, self.end)
    }

    /// Makes the commit visible to readers. A sealed segment's final end is stored before the
    /// segment after it is listed, so a scanner that finds a newer segment has already read
    /// the old one to its end.
    pub fn publish(self) {
        for (handle, end) in self.sealed {
            handle.end.store(end, Ordering::Release);
        }
        for handle in self.created {
            publish_segment(&self.shared, handle);
        }
        self.active.end.fetch_max(self.end, Ordering::AcqRel);
        self.shared
            .committed_position
            .fetch_max(self.next_position, Ordering::AcqRel);
    }
}

/// Facts about one segment, for inspection.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// File name.
    pub name: String,
    /// First position.
    pub first_position: u64,
    /// Readable size in bytes.
    pub size_bytes: u64,
}

impl LogReader {
    /// Position after the last committed event.
    pub fn committed_position(&self) -> u64 {
        self.shared.committed_position.load(Ordering::Acquire)
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared
            .segments()
            .iter()
            .map(|s| SegmentInfo {
                name: s.name.clone(),
                first_position: s.first_position,
                size_bytes: s.end.load(Ordering::Acquire),
            })
            .collect()
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Reads and checks one frame; returns its header and payload.
    pub fn read_frame(&self, loc: FrameLocation) -> Result<(FrameHeader, Bytes)> {
        let seg = self.shared.segment(loc.segment).ok_or_else(|| {
            corrupted(
                &segment::file_name(loc.segment),
                loc.offset,
                "segment is missing",
            )
        })?;
        // A location comes from the index (derived data): its sum must not wrap.
        let end = loc.offset.checked_add(loc.len);
        let Some(end) = end.filter(|&e| {
            loc.len >= FRAME_HEADER_SIZE as u64 && e <= seg.end.load(Ordering::Acquire)
        }) else {
            return Err(corrupted(
                &seg.name,
                loc.offset,
                "frame location outside the segment",
            ));
        };
        let (start, end) = (loc.offset as usize, end as usize);
        let bytes = match seg.mapped(&self.shared) {
            Some(map) if end <= map.len() => map.slice(start..end),
            _ => {
                let mut bytes = vec![0u8; loc.len as usize];
                seg.file
                    .read_exact_at(&mut bytes, loc.offset)
                    .map_err(|e| LogError::io(self.shared.dir.join(&seg.name), e))?;
                Bytes::from(bytes)
            }
        };
        match decode_frame(&bytes) {
            Ok((h, _)) if h.frame_len() == loc.len => Ok((h, bytes.slice(FRAME_HEADER_SIZE..))),
            Ok(_) => Err(corrupted(
                &seg.name,
                loc.offset,
                "frame length disagrees with the index",
            )),
            Err(d) => Err(corrupted(&seg.name, loc.offset, d.to_string())),
        }
    }

    /// Touches the first byte of each mapped frame of `locs`, so that the misses of the
    /// processor's caches (and of its TLB) for frames about to be read one after the other
    /// overlap instead of coming one at a time. Does nothing for frames read with `pread`.
    pub fn prefetch(&self, locs: impl Iterator<Item = FrameLocation>) {
        let mut seg: Option<Arc<SegmentHandle>> = None;
        let mut x = 0u8;
        for loc in locs {
            if seg.as_ref().is_none_or(|s| s.first_position != loc.segment) {
                seg = self.shared.segment(loc.segment);
            }
            let Some(s) = seg.as_ref() else { continue };
            // Only bytes below the segment's readable end: the file holds those (a location
            // from a damaged index could point past the end of the file, where a mapped read
            // would raise SIGBUS; `read_frame` then rejects it).
            if loc.offset >= s.end.load(Ordering::Acquire) {
                continue;
            }
            if let Some(b) = s
                .mapped(&self.shared)
                .and_then(|m| m.get(loc.offset as usize))
            {
                x ^= *b;
            }
        }
        std::hint::black_box(x);
    }

    /// A scanner over the frames from `start` (a segment and an offset within it) onwards.
    pub fn scan_from(&self, segment: u64, offset: u64) -> LogScanner {
        LogScanner {
            shared: self.shared.clone(),
            segment,
            cursor: None,
            offset,
            next_position: None,
        }
    }

    /// A scanner over the whole log.
    pub fn scan(&self) -> LogScanner {
        let first = self
            .shared
            .segments()
            .first()
            .map_or(0, |s| s.first_position);
        self.scan_from(first, SEGMENT_HEADER_SIZE as u64)
    }
}

/// Reads frames in log order, following segment rolls, up to the committed end. Calling
/// [`LogScanner::next_frame`] again after it returned `None` picks up newly committed frames.
pub struct LogScanner {
    shared: Arc<Shared>,
    segment: u64,
    offset: u64,
    cursor: Option<(Arc<SegmentHandle>, FrameCursor)>,
    /// The position the next frame must start at, once a frame has been read: a segment
    /// missing between two others (deleted, say, below the index checkpoint, where open does
    /// not look) shows as a frame that does not continue the one before.
    next_position: Option<u64>,
}

impl LogScanner {
    /// Opens the cursor on the right segment, moving past sealed, fully read segments.
    /// Returns false when there is nothing more to read for now.
    fn position_cursor(&mut self) -> bool {
        loop {
            if self.cursor.is_none() {
                let Some(seg) = self.shared.segment(self.segment) else {
                    return false;
                };
                let end = seg.end.load(Ordering::Acquire);
                let c = match seg.mapped(&self.shared) {
                    Some(map) => {
                        FrameCursor::over_map(map.clone(), seg.file.clone(), self.offset, end)
                    }
                    None => FrameCursor::new(seg.file.clone(), self.offset, end),
                };
                // Readers keep what they scan (read results, subscriptions).
                let c = c.detaching();
                self.cursor = Some((seg, c));
            }
            let Some((seg, cursor)) = self.cursor.as_mut() else {
                return false;
            };
            let end = seg.end.load(Ordering::Acquire);
            cursor.set_end(end);
            if cursor.offset() < end {
                return true;
            }
            let first = seg.first_position;
            let next = self
                .shared
                .segments()
                .iter()
                .find(|s| s.first_position > first)
                .map(|s| s.first_position);
            // A newer segment is listed only after this one's final end was published.
            let Some(n) = next else { return false };
            if seg.end.load(Ordering::Acquire) != cursor.offset() {
                return false;
            }
            self.segment = n;
            self.offset = SEGMENT_HEADER_SIZE as u64;
            self.cursor = None;
        }
    }

    /// The next committed frame: its location, header and payload.
    /// The payload shares the scanner's read buffer (no copy).
    pub fn next_frame(&mut self) -> Result<Option<(FrameLocation, FrameHeader, Bytes)>> {
        if !self.position_cursor() {
            return Ok(None);
        }
        let Some((seg, cursor)) = self.cursor.as_mut() else {
            return Ok(None);
        };
        let first = seg.first_position;
        let item = cursor
            .next_item()
            .map_err(|e| LogError::io(self.shared.dir.join(&seg.name), e))?;
        match item {
            CursorItem::Frame {
                offset,
                header,
                payload,
            } => {
                if let Some(expected) = self.next_position.filter(|&p| p != header.first_position) {
                    return Err(corrupted(
                        &seg.name,
                        offset,
                        format!(
                            "frame at position {} where {expected} was expected (a segment missing?)",
                            header.first_position
                        ),
                    ));
                }
                self.next_position = Some(header.next_position());
                self.offset = offset + header.frame_len();
                Ok(Some((
                    FrameLocation {
                        segment: first,
                        offset,
                        len: header.frame_len(),
                    },
                    header,
                    payload,
                )))
            }
            CursorItem::Defect { offset, defect } => {
                Err(corrupted(&seg.name, offset, defect.to_string()))
            }
            CursorItem::End => Ok(None),
        }
    }
}
