//! The store: opening a directory, appending, reading.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orchestrix_index::ids::{IdIndex, IdMap};
use orchestrix_index::streams::{ChunkRow, StreamEntry, StreamFiles};
use orchestrix_index::{BatchEntry, BatchSummary, FrameEntry, FrameSummary, Index, StreamHead};
use orchestrix_log::fs::{StdFs, Vfs};
use orchestrix_log::record::encode_events;
use orchestrix_log::{
    Bytes, Checkpoint, FrameHeader, FrameLocation, FrameSpans, LogConfig, LogError, LogReader,
};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StoreError};
use crate::event::{
    AppendResult, Direction, EventData, ExpectedVersion, Frame, ReadFilter, RecordedEvent,
};
use crate::heads::StreamHeads;
use crate::limits::{
    check_event, check_stream_id, BATCH_EVENT_COUNT_MAX, BATCH_SIZE_MAX, STREAMS_PER_APPEND_MAX,
};
use crate::options::{Durability, Options};
use crate::recent::Recent;
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::subscription::Subscription;
use crate::writer::{
    run_syncer, AppendPart, AppendReply, Completer, Reply, Request, Waiter, Writer,
};
use uuid::Uuid;

const LOG_DIR: &str = "log";
const INDEX_FILE: &str = "index.redb";
const IDS_DIR: &str = "ids";
const STREAMS_DIR: &str = "streams";
const SNAPSHOT_DIR: &str = "snapshots";
const LOCK_FILE: &str = "LOCK";
/// Frames applied to the index per transaction during a rebuild.
const REBUILD_BATCH_FRAMES: usize = 16_384;
/// The most events a read reserves room for up front.
const READ_CAPACITY_MAX: usize = 1024;
/// Depth of the writer -> indexer queue, in groups.
const INDEXER_QUEUE_GROUPS: usize = 4096;
/// Written groups that may wait for their fdatasync (how far the writer runs ahead).
const SYNC_QUEUE_GROUPS: usize = 8;
/// How long the indexer gathers frames before applying them in one transaction.
const INDEXER_GATHER: Duration = Duration::from_millis(10);
/// How often the indexer drains its queue while gathering.
const INDEXER_GATHER_SLICE: Duration = Duration::from_millis(5);

/// Sealed segments whose index files the indexer could not write, kept in memory instead
/// (their batches in the recent index, their ids with the writer) and retried about once per
/// index checkpoint interval, before appends are refused with [`StoreError::IndexFailed`]: a
/// failing index disk costs memory of this many segments' index entries (plus the active
/// segment's, and those sealed while the indexer catches up with the writer), never without
/// bound. Appends are taken again once retries bring the number below this; reopening
/// rebuilds what is missing from the log. After a failed write of the index database itself
/// (redb refuses every call after an I/O error until it is reopened) only a reopen helps.
pub const SEGMENTS_HELD_MAX: u64 = 4;

/// State shared by the API, the writer and the indexer.
pub(crate) struct Inner {
    pub dir: PathBuf,
    pub reader: LogReader,
    pub index: Index,
    pub ids: IdIndex,
    pub streams: StreamFiles,
    /// Serializes rebuilding damaged stream index files found by readers.
    pub stream_file_rebuild: Mutex<()>,
    pub recent: Mutex<Recent>,
    pub heads: RwLock<StreamHeads>,
    pub poisoned: AtomicBool,
    /// The indexer's latest failure to write a sealed segment's files, and how many such
    /// segments it holds in memory (see [`SEGMENTS_HELD_MAX`]); `appends_refused` is the
    /// fast check of whether they are too many.
    pub index_failure: Mutex<(String, u64)>,
    pub appends_refused: AtomicBool,
    pub durable_position: AtomicU64,
    /// Committed position, for blocking subscribers.
    pub committed: (Mutex<u64>, Condvar),
    /// Set when the store has closed (after its last appends are published), to wake and
    /// end subscriptions.
    pub closed: AtomicBool,
    /// Set by `close` to stop the sync timer at once (it holds a sender of the writer's
    /// queue, which the writer waits for to end); its wait is on the condition variable.
    pub timer_stop: (Mutex<bool>, Condvar),
    /// The failure of the writer's last fdatasync at close (relaxed durability), for `close`
    /// to return.
    pub close_failure: Mutex<Option<LogError>>,
    /// The store directory's lock, held for as long as anything of this store lives (a
    /// subscription too: it keeps the index and the segment maps open).
    _lock: File,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// Records that `held` sealed segments are held in memory for want of their index files
    /// (`why`: the latest failure): appends are refused with [`StoreError::IndexFailed`]
    /// while they number [`SEGMENTS_HELD_MAX`] or more, and taken again once retries bring
    /// them below.
    pub fn hold_segments(&self, held: u64, why: &str) {
        let mut failure = lock(&self.index_failure);
        let refuse = held >= SEGMENTS_HELD_MAX;
        if refuse && !self.appends_refused.load(Ordering::Acquire) {
            tracing::error!(
                held,
                reason = why,
                "the index files of {held} sealed segments are unwritten; appends are refused until they are written or the store is reopened"
            );
        }
        if !why.is_empty() {
            failure.0 = why.to_owned();
        }
        failure.1 = held;
        self.appends_refused.store(refuse, Ordering::Release);
    }

    /// Why appends are refused, if they are.
    pub fn appends_refused(&self) -> Option<StoreError> {
        if !self.appends_refused.load(Ordering::Acquire) {
            return None;
        }
        let failure = lock(&self.index_failure);
        Some(StoreError::IndexFailed {
            reason: failure.0.clone(),
            segments: failure.1,
        })
    }

    /// Enters a written group's frames in the recent index ahead of their commit, off the
    /// syncer's path between two fdatasyncs. Readers look there only below the committed
    /// position, so the entries stay unseen until [`Inner::publish`] (and for good if the
    /// group fails: the store is then read-only).
    pub fn stage(&self, frames: &[FrameSummary]) {
        let mut r = lock(&self.recent);
        for f in frames {
            r.add(f);
        }
    }

    /// Makes a committed group visible (its frames staged already): heads and the position
    /// readers read up to, together, then the position subscriptions wait on. Returns false,
    /// publishing nothing, once the store is latched: the latch is set under the same lock
    /// ([`Inner::poison`]), so that nothing is published after a reader has seen it (a
    /// subscription ends once it has seen the latch and then read everything published).
    pub fn publish(&self, frames: &[FrameSummary], committed: u64) -> bool {
        {
            let mut h = self.heads.write().unwrap_or_else(|p| p.into_inner());
            if self.poisoned.load(Ordering::Acquire) {
                return false;
            }
            h.published_end = h.published_end.max(committed);
            for f in frames {
                for b in &f.batches {
                    h.set(
                        &b.stream,
                        StreamHead {
                            number: b.stream_number,
                            version: b.first_version + u64::from(b.count) - 1,
                        },
                    );
                }
            }
        }
        *lock(&self.committed.0) = committed;
        self.committed.1.notify_all();
        true
    }

    /// The position readers read up to: below it every event is committed and its stream's
    /// head published (it moves with the heads, after the log's committed position).
    pub fn committed_position(&self) -> u64 {
        self.heads
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .published_end
    }

    /// The committed position as [`Inner::publish`] last set it, with the stream heads (what
    /// [`Inner::wait_for_commit`] waits on).
    pub fn published_position(&self) -> u64 {
        *lock(&self.committed.0)
    }

    /// Writes the id files of sealed segments that have none (except those in `skip`, whose
    /// files are being written), by scanning the segments. Returns the ids of those whose
    /// file could not be written: the caller holds them (the next open writes the file).
    pub fn rebuild_missing_id_files(&self, skip: &[u64]) -> Result<Vec<(u64, IdMap)>> {
        let segments = self.reader.segments();
        let Some((_, sealed)) = segments.split_last() else {
            return Ok(Vec::new());
        };
        let mut unwritten = Vec::new();
        for s in sealed {
            let s = s.first_position;
            if !skip.contains(&s) && !self.ids.has_segment(s) {
                let (m, _) = scan_segment(&self.reader, s, None, true)?;
                if let Err(e) = self.ids.write_segment(s, &m) {
                    tracing::warn!(error = %e, segment = s, "cannot rewrite an event-id file; its ids are held in memory until the store is reopened");
                    unwritten.push((s, m));
                }
            }
        }
        Ok(unwritten)
    }

    /// Latches the store read-only after a failed write or fdatasync, and wakes blocked
    /// subscribers, which end with [`StoreError::Poisoned`] once they have delivered what was
    /// committed before.
    pub fn poison(&self) {
        {
            // Under the heads' lock: see `Inner::publish`.
            let _h = self.heads.write().unwrap_or_else(|p| p.into_inner());
            self.poisoned.store(true, Ordering::Release);
        }
        self.notify_waiters();
    }

    /// Wakes blocked subscribers (used at close and when the store fails).
    pub fn notify_waiters(&self) {
        let _g = lock(&self.committed.0);
        self.committed.1.notify_all();
    }

    /// Blocks until the committed position passes `seen`, the store closes, `cancel` is set
    /// (by one who then calls [`Inner::notify_waiters`]), or `timeout` elapses. Returns the
    /// committed position.
    pub fn wait_for_commit(
        &self,
        seen: u64,
        timeout: Duration,
        cancel: Option<&AtomicBool>,
    ) -> u64 {
        let mut g = lock(&self.committed.0);
        let deadline = Instant::now() + timeout;
        while *g <= seen
            && !self.closed.load(Ordering::Acquire)
            && !self.poisoned.load(Ordering::Acquire)
            && !cancel.is_some_and(|c| c.load(Ordering::Acquire))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            g = match self.committed.1.wait_timeout(g, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        *g
    }

    /// The frame holding `position`: from the recent index, or by scanning forwards from the
    /// sparse index's floor entry.
    fn frame_at(&self, position: u64) -> Result<Option<FrameEntry>> {
        // Before the recent index: it holds staged frames beyond the committed position.
        if position >= self.committed_position() {
            return Ok(None);
        }
        if let Some(f) = lock(&self.recent).frame_at(position) {
            return Ok(Some(f));
        }
        let mut last = None;
        let found = self.scan_from_floor(position, |location, h, _| {
            last = Some(FrameEntry {
                location,
                first_position: h.first_position,
                event_count: h.event_count,
            });
        })?;
        Ok(last.filter(|_| found))
    }

    /// Visits the frames from the indexed frame at or before `position` (the index is sparse:
    /// one frame per [`orchestrix_index::FRAME_INDEX_INTERVAL_BYTES`]) through the one that
    /// holds `position`, in log order, in one forward scan; returns whether the last one
    /// visited holds it.
    fn scan_from_floor(
        &self,
        position: u64,
        mut visit: impl FnMut(FrameLocation, &FrameHeader, Bytes),
    ) -> Result<bool> {
        let Some(floor) = self.index.frame_floor(position)? else {
            return Ok(false);
        };
        let mut scanner = self
            .reader
            .scan_from(floor.location.segment, floor.location.offset);
        while let Some((loc, h, payload)) = scanner.next_frame()? {
            if h.first_position > position {
                break;
            }
            visit(loc, &h, payload);
            if position < h.next_position() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The frames from the indexed frame at or before `position` through the one that holds
    /// it (see [`Inner::scan_from_floor`]), in log order: (location, first position, event
    /// count, payload). A backward read walks them in reverse, instead of scanning from that
    /// indexed frame again for each frame. Empty when no frame holds `position`.
    fn frames_through(&self, position: u64) -> Result<Vec<(FrameLocation, u64, u32, Bytes)>> {
        if position >= self.committed_position() {
            return Ok(Vec::new());
        }
        if let Some(f) = lock(&self.recent).frame_at(position) {
            let (first, count, payload) = self.read_frame(f.location)?;
            return Ok(vec![(f.location, first, count, payload)]);
        }
        let mut frames = Vec::new();
        let found = self.scan_from_floor(position, |location, h, payload| {
            frames.push((location, h.first_position, h.event_count, payload));
        })?;
        if !found {
            frames.clear();
        }
        Ok(frames)
    }

    /// Reads the frame at `loc`: its first position, event count and payload.
    fn read_frame(&self, loc: FrameLocation) -> Result<(u64, u32, Bytes)> {
        let (h, payload) = self.reader.read_frame(loc)?;
        Ok((h.first_position, h.event_count, payload))
    }

    /// The event at a position.
    pub fn read_at(&self, position: u64) -> Result<RecordedEvent> {
        let Some(f) = self.frame_at(position)? else {
            return Err(StoreError::InvalidInput(format!(
                "no event at position {position}"
            )));
        };
        let (first, count, payload) = self.read_frame(f.location)?;
        let mut p = FrameSpans::default();
        decode_spans(&mut p, &payload, count, f.location)?;
        let mut pos = first;
        for b in &p.batches {
            let n = b.events.len() as u64;
            if position < pos + n {
                let i = (position - pos) as usize;
                let version = b.first_version + i as u64;
                let Some(e) = p.events_of(b).get(i) else {
                    break;
                };
                return Ok(RecordedEvent::from_spans(
                    e,
                    Frame::new(payload),
                    b.stream,
                    version,
                    position,
                ));
            }
            pos += n;
        }
        Err(StoreError::InvalidInput(format!(
            "no event at position {position}"
        )))
    }

    /// Batches of a stream from both the recent and the persistent index.
    fn stream_batches(
        &self,
        stream: &str,
        from: u64,
        dir: Direction,
        limit: usize,
    ) -> Result<Vec<BatchEntry>> {
        let number = self
            .heads
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .map(|h| h.number);
        let Some(number) = number else {
            return Ok(Vec::new());
        };
        // Recent first, then the index: a batch moving from one to the other in between is
        // found in at least one of them. Only committed batches: the writer stages a group's
        // batches before its commit (the position is read first, so every batch below it
        // is in the recent index by then).
        let committed = self.committed_position();
        let backwards = dir == Direction::Backwards;
        let recent = lock(&self.recent).window(number, from, backwards, limit, committed);
        let mut all = self.sealed_batches(number, from, backwards, limit)?;
        all.extend(recent);
        all.sort_by_key(|b| b.first_version);
        all.dedup_by_key(|b| b.first_version);
        if backwards {
            all.reverse();
        }
        // Each list holds its own first `limit` batches in the read's direction, so the first
        // `limit` of their union are the stream's: a page ends there, without a gap before
        // the caller's next one.
        all.truncate(limit);
        Ok(all)
    }
    /// Batches of stream `number` in the stream index files of sealed segments, holding
    /// versions from `from` on (forwards) or up to it (backwards), in that order, at most
    /// `limit` of them.
    fn sealed_batches(
        &self,
        number: u64,
        from: u64,
        backwards: bool,
        limit: usize,
    ) -> Result<Vec<BatchEntry>> {
        const CHUNKS_PER_LOOKUP: usize = 4;
        let mut out = Vec::new();
        let mut cursor = from;
        loop {
            let chunks = self
                .index
                .stream_chunks(number, cursor, backwards, CHUNKS_PER_LOOKUP)?;
            for c in &chunks {
                let mut entries = self.read_chunk(c)?;
                if backwards {
                    entries.reverse();
                }
                for e in entries {
                    let keep = if backwards {
                        e.first_version <= from
                    } else {
                        e.last_version() >= from
                    };
                    if keep {
                        out.push(e.batch_entry(c.segment));
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
            }
            let Some(last) = chunks.last() else {
                return Ok(out);
            };
            if chunks.len() < CHUNKS_PER_LOOKUP {
                return Ok(out);
            }
            cursor = if backwards {
                match last.first_version.checked_sub(1) {
                    Some(v) => v,
                    None => return Ok(out),
                }
            } else {
                // From redb: a damaged row must not wrap the cursor back to the start.
                match last.last_version.checked_add(1) {
                    Some(v) => v,
                    None => return Ok(out),
                }
            };
        }
    }

    /// Reads a chunk of a stream index file; a damaged (or missing) file is rebuilt from its
    /// segment first. The chunk is taken from the scan of the segment instead when the file
    /// cannot be written, or when the store is closed (it writes nothing more).
    fn read_chunk(&self, c: &ChunkRow) -> Result<Vec<StreamEntry>> {
        match self.streams.read_chunk(c) {
            Ok(e) => Ok(e),
            Err(e) => {
                tracing::warn!(error = %e, segment = c.segment, "stream index file unreadable; rebuilding it from its segment");
                let _g = lock(&self.stream_file_rebuild);
                if let Ok(e) = self.streams.read_chunk(c) {
                    return Ok(e);
                }
                // Not rebuilt from a segment that is gone (below the checkpoint, open does not
                // scan): that would write an empty file and blame it.
                if !self
                    .reader
                    .segments()
                    .iter()
                    .any(|s| s.first_position == c.segment)
                {
                    let segment = FrameLocation {
                        segment: c.segment,
                        offset: 0,
                        len: 0,
                    };
                    return Err(corrupted_at(
                        segment,
                        format!(
                            "the segment file is missing, and the index has events of stream \
                             number {} in it",
                            c.stream_number
                        ),
                    ));
                }
                let heads = self.heads.read().unwrap_or_else(|p| p.into_inner()).clone();
                let (_, mut entries) = scan_segment(&self.reader, c.segment, Some(&heads), false)?;
                if !self.closed.load(Ordering::Acquire) {
                    self.streams.discard(c.segment);
                    match self.streams.write_segment(c.segment, &mut entries) {
                        Ok(_) => return Ok(self.streams.read_chunk(c)?),
                        Err(e) => {
                            tracing::warn!(error = %e, segment = c.segment, "cannot rewrite a stream index file; its chunk is read from the segment");
                        }
                    }
                }
                chunk_from_scan(c, &mut entries)
            }
        }
    }

    /// Reads up to `max_count` events of a stream from `from_version` in `direction`
    /// (backwards from `u64::MAX` reads from the end).
    pub fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        check_stream_id(stream)?;
        let mut out = Vec::with_capacity(max_count.min(READ_CAPACITY_MAX));
        if max_count == 0 {
            return Ok(out);
        }
        let mut next = from_version;
        // One decoding of frame after frame into the same lists.
        let mut p = FrameSpans::default();
        loop {
            let batches = self.stream_batches(stream, next, direction, 64)?;
            if batches.is_empty() {
                return Ok(out);
            }
            let mut progressed = false;
            self.reader.prefetch(batches.iter().map(|b| b.location));
            for b in batches {
                let (first_pos, count, payload) = self.read_frame(b.location)?;
                decode_spans(&mut p, &payload, count, b.location)?;
                let mut pos = first_pos;
                let mut events = None;
                for sb in &p.batches {
                    let n = sb.events.len() as u64;
                    if sb.first_version == b.first_version
                        && sb.stream.slice(&payload) == Some(stream.as_bytes())
                    {
                        events = Some((sb, pos));
                        break;
                    }
                    pos += n;
                }
                let Some((sb, pos)) = events else {
                    return Err(corrupted_payload(
                        b.location,
                        LogError::Payload("index points at a frame without the stream".into()),
                    ));
                };
                let frame = Frame::new(payload);
                let build = |i: usize, e| {
                    let version = sb.first_version + i as u64;
                    RecordedEvent::from_spans(e, frame.clone(), sb.stream, version, pos + i as u64)
                };
                // The batch's events to take are a run of its list: extended into `out` in
                // one go, each event built in its place there.
                let evs = p.events_of(sb);
                let room = max_count - out.len();
                match direction {
                    Direction::Forwards => {
                        let skip = usize::try_from(next.saturating_sub(sb.first_version))
                            .map_or(evs.len(), |s| s.min(evs.len()));
                        let take = (evs.len() - skip).min(room);
                        if take > 0 {
                            let run = evs.get(skip..skip + take).unwrap_or_default();
                            out.extend(run.iter().enumerate().map(|(j, e)| build(skip + j, e)));
                            next = sb.first_version + (skip + take) as u64;
                            progressed = true;
                        }
                    }
                    Direction::Backwards => {
                        // Events up to index `upto` (exclusive) have versions <= next.
                        let upto = match next.checked_sub(sb.first_version) {
                            Some(d) => usize::try_from(d)
                                .map_or(evs.len(), |d| d.saturating_add(1).min(evs.len())),
                            None => 0,
                        };
                        let take = upto.min(room);
                        if take > 0 {
                            let lo = upto - take;
                            let run = evs.get(lo..upto).unwrap_or_default();
                            out.extend(run.iter().enumerate().rev().map(|(j, e)| build(lo + j, e)));
                            progressed = true;
                            let last = sb.first_version + lo as u64;
                            if last == 0 {
                                return Ok(out);
                            }
                            next = last - 1;
                        }
                    }
                }
                if out.len() >= max_count {
                    return Ok(out);
                }
            }
            if !progressed {
                return Ok(out);
            }
        }
    }

    /// Reads up to `max_count` events in global order from `from_position` (inclusive;
    /// backwards from `u64::MAX` reads from the end), passing only those the filter accepts.
    pub fn read_all(
        &self,
        from_position: u64,
        direction: Direction,
        max_count: usize,
        filter: &ReadFilter,
    ) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::new();
        if max_count == 0 {
            return Ok(out);
        }
        match direction {
            Direction::Forwards => {
                self.scan_forwards(from_position, filter, &mut |e| {
                    out.push(e.clone());
                    out.len() < max_count
                })?;
            }
            Direction::Backwards => {
                let end = self.committed_position();
                if end == 0 || max_count == 0 {
                    return Ok(out);
                }
                let mut pos = from_position.min(end - 1);
                let mut p = FrameSpans::default();
                let mut evs = Vec::new();
                loop {
                    let frames = self.frames_through(pos)?;
                    let Some(&(_, lowest, _, _)) = frames.first() else {
                        break;
                    };
                    for (location, first, count, payload) in frames.into_iter().rev() {
                        decode_spans(&mut p, &payload, count, location)?;
                        evs.clear();
                        let frame = Frame::new(payload);
                        let payload = frame.bytes();
                        let mut at = first;
                        for b in &p.batches {
                            let pass_stream =
                                filter.passes_stream(b.stream.slice(payload).unwrap_or_default());
                            for (i, e) in p.events_of(b).iter().enumerate() {
                                if at <= pos
                                    && pass_stream
                                    && filter.passes_type(
                                        e.event_type.slice(payload).unwrap_or_default(),
                                    )
                                {
                                    evs.push(RecordedEvent::from_spans(
                                        e,
                                        frame.clone(),
                                        b.stream,
                                        b.first_version + i as u64,
                                        at,
                                    ));
                                }
                                at += 1;
                            }
                        }
                        for e in evs.drain(..).rev() {
                            out.push(e);
                            if out.len() >= max_count {
                                return Ok(out);
                            }
                        }
                    }
                    if lowest == 0 {
                        break;
                    }
                    pos = lowest - 1;
                }
            }
        }
        Ok(out)
    }

    /// Visits events in global order from `from_position` while `visit` returns true.
    /// Returns the position after the last event examined.
    pub fn scan_forwards(
        &self,
        from_position: u64,
        filter: &ReadFilter,
        visit: &mut dyn FnMut(&RecordedEvent) -> bool,
    ) -> Result<u64> {
        self.scan_forwards_within(from_position, u64::MAX, filter, visit)
    }

    /// [`Inner::scan_forwards`], ending also at the first frame that starts `examine_max`
    /// events or more after `from_position` (so that a filter that passes few events does
    /// not hold the caller for the whole log).
    pub fn scan_forwards_within(
        &self,
        from_position: u64,
        examine_max: u64,
        filter: &ReadFilter,
        visit: &mut dyn FnMut(&RecordedEvent) -> bool,
    ) -> Result<u64> {
        let end = self
            .committed_position()
            .min(from_position.saturating_add(examine_max));
        if from_position >= end {
            return Ok(from_position);
        }
        let Some(f) = self.frame_at(from_position)? else {
            return Ok(from_position);
        };
        let mut scanner = self.reader.scan_from(f.location.segment, f.location.offset);
        let mut next = from_position;
        let mut p = FrameSpans::default();
        while let Some((loc, h, payload)) = scanner.next_frame()? {
            if h.first_position >= end {
                break;
            }
            decode_spans(&mut p, &payload, h.event_count, loc)?;
            // One handle on the frame, passed from each visited event to the next: events
            // visited by reference cost no reference count each.
            let mut handle = None;
            let mut at = h.first_position;
            for b in &p.batches {
                let pass_stream =
                    filter.passes_stream(b.stream.slice(&payload).unwrap_or_default());
                for (i, e) in p.events_of(b).iter().enumerate() {
                    if at >= next {
                        next = at + 1;
                        if pass_stream
                            && filter.passes_type(e.event_type.slice(&payload).unwrap_or_default())
                        {
                            let ev = RecordedEvent::from_spans(
                                e,
                                handle.take().unwrap_or_else(|| Frame::new(payload.clone())),
                                b.stream,
                                b.first_version + i as u64,
                                at,
                            );
                            let go_on = visit(&ev);
                            handle = Some(ev.into_frame());
                            if !go_on {
                                return Ok(next);
                            }
                        }
                    }
                    at += 1;
                }
            }
        }
        Ok(next)
    }
}

/// Decodes a frame's payload into the places of its fields (in place of what `p` held).
fn decode_spans(
    p: &mut FrameSpans,
    payload: &[u8],
    event_count: u32,
    loc: FrameLocation,
) -> Result<()> {
    p.decode(payload, event_count)
        .map_err(|e| corrupted_payload(loc, e))
}

pub(crate) fn corrupted_payload(loc: FrameLocation, e: LogError) -> StoreError {
    corrupted_at(loc, e.to_string())
}

/// Corruption of the log at a frame, naming its segment file and offset.
fn corrupted_at(loc: FrameLocation, reason: String) -> StoreError {
    StoreError::Log(LogError::Corrupted {
        segment: orchestrix_log::segment::file_name(loc.segment),
        offset: loc.offset,
        reason,
    })
}

/// Builds the index summary of a frame read back from the log, advancing the heads (which
/// gives new streams their numbers in log order, as the writer did).
pub(crate) fn summarize(
    loc: FrameLocation,
    first_position: u64,
    p: &FrameSpans,
    payload: &[u8],
    heads: &mut StreamHeads,
) -> FrameSummary {
    let mut batches = Vec::with_capacity(p.batches.len());
    let mut types: Vec<Arc<str>> = Vec::new();
    let mut min_time = i64::MAX;
    let mut pos = first_position;
    for b in &p.batches {
        let (head, stream) = heads.advance(
            b.stream.text(payload).unwrap_or_default(),
            b.first_version + b.events.len() as u64 - 1,
        );
        batches.push(BatchSummary {
            stream,
            stream_number: head.number,
            first_version: b.first_version,
            first_position: pos,
            count: b.events.len() as u32,
        });
        for e in p.events_of(b) {
            pos += 1;
            let event_type = e.event_type.text(payload).unwrap_or_default();
            if !types.iter().any(|t| **t == *event_type) {
                types.push(event_type.into());
            }
            min_time = min_time.min(e.time_unix_nanos);
        }
    }
    FrameSummary {
        location: loc,
        first_position,
        event_count: (pos - first_position) as u32,
        batches,
        types,
        min_time_unix_nanos: min_time,
    }
}

/// The entries of chunk `c` among a segment's entries as scanned from it (the file the chunk
/// was cut from holds them sorted so); checked against the chunk's CRC.
fn chunk_from_scan(c: &ChunkRow, entries: &mut [StreamEntry]) -> Result<Vec<StreamEntry>> {
    entries.sort_unstable_by_key(|e| (e.stream_number, e.first_version));
    let chunk = usize::try_from(c.entry_index)
        .ok()
        .and_then(|i| entries.get(i..i.checked_add(c.count as usize)?))
        .unwrap_or_default();
    let encoded = orchestrix_index::streams::encode_file(c.segment, chunk);
    let body = encoded
        .get(orchestrix_index::streams::HEADER_SIZE..)
        .unwrap_or_default();
    if chunk.is_empty() || crc32fast::hash(body) != c.crc {
        return Err(StoreError::Index(orchestrix_index::IndexError::Db(
            format!(
            "stream chunk of stream number {} in segment {} matches no entries of the segment; \
             reopen the store to rebuild the index",
            c.stream_number, c.segment
        ),
        )));
    }
    Ok(chunk.to_vec())
}

/// The stream index entry of one stream batch of a frame.
fn stream_entry(loc: FrameLocation, b: &BatchSummary) -> StreamEntry {
    StreamEntry {
        stream_number: b.stream_number,
        first_version: b.first_version,
        first_position: b.first_position,
        offset: loc.offset,
        // Frames are at most FRAME_PAYLOAD_SIZE_MAX (128 MiB) plus a header.
        len: loc.len as u32,
        count: b.count,
    }
}

/// Collects the per-segment index data (event ids and stream batches) while the log is
/// replayed: writes the id file and the stream index file of each sealed segment the replay
/// covered from its start and that lacks them, and keeps the last segment's (the active one)
/// for the writer and the recent index. Memory holds one segment's data at a time.
struct SegmentCollector<'a> {
    ids: &'a IdIndex,
    streams: &'a StreamFiles,
    segment: Option<u64>,
    /// Whether the current segment's ids / stream batches are being collected (replayed from
    /// its start, and its file missing).
    collect_ids: bool,
    collect_streams: bool,
    id_map: IdMap,
    entries: Vec<StreamEntry>,
}

impl<'a> SegmentCollector<'a> {
    fn new(ids: &'a IdIndex, streams: &'a StreamFiles) -> Self {
        SegmentCollector {
            ids,
            streams,
            segment: None,
            collect_ids: false,
            collect_streams: false,
            id_map: IdMap::default(),
            entries: Vec::new(),
        }
    }

    fn frame(
        &mut self,
        loc: FrameLocation,
        first_position: u64,
        p: &FrameSpans,
        summary: &FrameSummary,
    ) -> std::result::Result<(), orchestrix_index::IndexError> {
        if self.segment != Some(loc.segment) {
            if let Some(sealed) = self.segment {
                if self.collect_ids {
                    self.ids.write_segment(sealed, &self.id_map)?;
                }
                if self.collect_streams {
                    self.streams.write_segment(sealed, &mut self.entries)?;
                    self.entries.clear();
                }
            }
            self.segment = Some(loc.segment);
            let from_start = loc.offset == orchestrix_log::segment::SEGMENT_HEADER_SIZE as u64;
            self.collect_ids = from_start && !self.ids.has_segment(loc.segment);
            self.collect_streams = from_start && !self.streams.has_segment(loc.segment);
            self.id_map.clear();
            self.entries.clear();
        }
        if self.collect_ids {
            insert_ids(&mut self.id_map, first_position, p);
        }
        if self.collect_streams {
            self.entries
                .extend(summary.batches.iter().map(|b| stream_entry(loc, b)));
        }
        Ok(())
    }

    /// The ids and stream batches of the last replayed segment, if both were collected from
    /// its start.
    fn into_active(self) -> Option<(u64, IdMap, Vec<StreamEntry>)> {
        let complete = self.collect_ids && self.collect_streams;
        self.segment
            .filter(|_| complete)
            .map(|s| (s, self.id_map, self.entries))
    }
}

/// Adds the ids of a frame's events, at their positions, to `map`.
fn insert_ids(map: &mut IdMap, first_position: u64, p: &FrameSpans) {
    for (e, position) in p.events.iter().zip(first_position..) {
        map.insert(e.id, position);
    }
}

/// Collects the event ids (with `with_ids`) and the stream batches (with `heads`, where every
/// stream of the segment must have a number) of one segment by scanning it.
fn scan_segment(
    reader: &LogReader,
    segment: u64,
    heads: Option<&StreamHeads>,
    with_ids: bool,
) -> Result<(IdMap, Vec<StreamEntry>)> {
    let mut ids = IdMap::default();
    let mut entries = Vec::new();
    let mut scanner =
        reader.scan_from(segment, orchestrix_log::segment::SEGMENT_HEADER_SIZE as u64);
    let mut p = FrameSpans::default();
    while let Some((loc, h, payload)) = scanner.next_frame()? {
        if loc.segment != segment {
            break;
        }
        decode_spans(&mut p, &payload, h.event_count, loc)?;
        if with_ids {
            insert_ids(&mut ids, h.first_position, &p);
        }
        let Some(heads) = heads else {
            continue;
        };
        let mut pos = h.first_position;
        for b in &p.batches {
            let stream = b.stream.text(&payload).unwrap_or_default();
            let Some(head) = heads.get(stream) else {
                return Err(corrupted_payload(
                    loc,
                    LogError::Payload(format!("stream {stream:?} has no head")),
                ));
            };
            let count = b.events.len() as u32;
            entries.push(StreamEntry {
                stream_number: head.number,
                first_version: b.first_version,
                first_position: pos,
                offset: loc.offset,
                len: loc.len as u32,
                count,
            });
            pos += u64::from(count);
        }
    }
    Ok((ids, entries))
}

/// An embedded event store in one directory.
///
/// Its methods block the calling thread until the store answers. They may be called from
/// any thread, a tokio runtime's included: on a worker of a multi-thread runtime the worker's
/// other tasks move to another thread for the call (`tokio::task::block_in_place`). The
/// thread of a current-thread runtime blocks that runtime's tasks for the call: if more of
/// them are waiting to append through an [`crate::AsyncStore`] than the writer's queue holds
/// ([`Options::queue_depth`]), an append made there waits for them and they for it, and a
/// `close` there waits for them too. Async code should use [`crate::AsyncStore`], which never
/// blocks.
///
/// ```
/// use orchestrix::{EventData, ExpectedVersion, Direction, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path()).unwrap();
/// store
///     .append("order-1", ExpectedVersion::NoStream, vec![EventData::json("Placed", b"{}".to_vec())])
///     .unwrap();
/// let events = store.read_stream("order-1", 0, Direction::Forwards, 10).unwrap();
/// assert_eq!(events[0].version, 0);
/// ```
pub struct Store {
    inner: Arc<Inner>,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    snapshots: SnapshotStore,
    options: Options,
    /// Held by `close` for its whole run.
    closing: Mutex<()>,
}

/// Facts about a store, for `inspect`.
#[derive(Debug, Clone)]
pub struct StoreInfo {
    /// Segments: name, first position, size in bytes.
    pub segments: Vec<(String, u64, u64)>,
    /// Events in the log.
    pub events: u64,
    /// Streams.
    pub streams: u64,
    /// The index checkpoint, if any.
    pub index_checkpoint: Option<Checkpoint>,
    /// Index table sizes.
    pub index: orchestrix_index::IndexStats,
    /// Event-id files (one per sealed segment).
    pub id_files: usize,
    /// Stream index files (one per sealed segment).
    pub stream_files: usize,
}

/// How many of the `sealed` segments are not in `found`.
fn sealed_count_missing(sealed: &[u64], found: &HashSet<u64>) -> usize {
    sealed.iter().filter(|s| !found.contains(s)).count()
}

/// What open found and did.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// Whether the index was rebuilt from the log.
    pub index_rebuilt: bool,
    /// Sealed segments' event-id files written by this open (missing, or dropped as damaged).
    pub id_files_rebuilt: usize,
    /// Sealed segments' stream index files written by this open (missing, or damaged).
    pub stream_files_rebuilt: usize,
    /// What log recovery did.
    pub log: orchestrix_log::RecoveryReport,
}

impl Store {
    /// Opens or creates a store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Self::open_with(dir, Options::default())
    }

    /// Opens an existing store; fails with [`StoreError::NotAStore`] and touches nothing if
    /// `dir` does not hold one: a store has a `log` directory and either its lock file or a
    /// segment file in `log` (a directory that merely has a `log` folder, as many do, is not
    /// one; a store whose segments are damaged is, and opening it reports the damage).
    pub fn open_existing(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_existing_reported(dir, options).map(|(s, _)| s)
    }

    /// [`Store::open_existing`], also returning what open found and repaired (a torn tail
    /// cut, the index rebuilt).
    pub fn open_existing_reported(
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<(Store, OpenReport)> {
        let dir = dir.as_ref();
        if !holds_a_store(dir) {
            return Err(StoreError::NotAStore {
                path: dir.to_path_buf(),
            });
        }
        Self::open_with_vfs(dir, options, Arc::new(StdFs))
    }

    /// Opens or creates a store in `dir`.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_with_vfs(dir, options, Arc::new(StdFs)).map(|(s, _)| s)
    }

    /// Opens with a custom file layer (fault injection in tests); returns what recovery did.
    pub fn open_with_vfs(
        dir: impl AsRef<Path>,
        options: Options,
        vfs: Arc<dyn Vfs>,
    ) -> Result<(Store, OpenReport)> {
        let dir = dir.as_ref().to_path_buf();
        options.check()?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        create_store_dir(vfs.as_ref(), &dir).map_err(io(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked { path: dir }),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Io {
                    path: lock_path,
                    source: e,
                })
            }
        }

        let index_path = dir.join(INDEX_FILE);
        let log_dir = dir.join(LOG_DIR);
        let config = LogConfig {
            segment_size_bytes_max: options.segment_size_bytes_max,
            map_segments: options.map_segments,
            early_writeback: options.durability != Durability::Always,
        };
        // Event ids: one file per sealed segment (rebuilt if missing), the active segment's in
        // the writer's memory. Replaying the log fills in what is missing on the way.
        let ids = IdIndex::open(&dir.join(IDS_DIR))?;
        // Stream batches likewise: one file per sealed segment, the active one's in memory.
        let streams = StreamFiles::open(&dir.join(STREAMS_DIR))?;
        // The sealed segments' files found (and not dropped as damaged): those written by
        // this open are reported as rebuilt.
        let id_files_found: HashSet<u64> = ids.segments().into_iter().collect();
        let stream_files_found: HashSet<u64> = streams.segments().into_iter().collect();
        let mut stream_files_damaged = 0;
        let mut rebuilt = false;
        let mut attempt = 0;
        let (index, reader, log_writer, report, heads, collected) = loop {
            attempt += 1;
            let index = match Index::open(&index_path) {
                Ok(i) => i,
                Err(e) if attempt == 1 => {
                    tracing::warn!(error = %e, "index unreadable; rebuilding it from the log");
                    remove_index(&index_path)?;
                    rebuilt = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let checkpoint = index.checkpoint()?;
            // How far the index had applied frames before this open: read now, because the
            // replay below commits its own progress in batches and would overwrite it.
            let indexed_before = index.indexed_position()?.unwrap_or(0);
            let mut heads = StreamHeads::from_checkpoint(index.stream_heads()?);
            let mut batch: Vec<FrameSummary> = Vec::new();
            let mut apply_error: Option<StoreError> = None;
            let mut last_cp = checkpoint;
            let mut touched: HashMap<String, StreamHead> = HashMap::new();
            let mut collector = SegmentCollector::new(&ids, &streams);
            let mut spans = FrameSpans::default();
            let opened = orchestrix_log::open(
                vfs.clone(),
                &log_dir,
                config.clone(),
                checkpoint,
                &mut |loc, h, payload| {
                    spans
                        .decode(payload, h.event_count)
                        .map_err(|e| LogError::Corrupted {
                            segment: orchestrix_log::segment::file_name(loc.segment),
                            offset: loc.offset,
                            reason: e.to_string(),
                        })?;
                    let summary = summarize(loc, h.first_position, &spans, payload, &mut heads);
                    if let Err(e) = collector.frame(loc, h.first_position, &spans, &summary) {
                        apply_error = Some(e.into());
                        return Err(LogError::Payload("writing an index file failed".into()));
                    }
                    for b in &summary.batches {
                        touched.insert(
                            b.stream.to_string(),
                            StreamHead {
                                number: b.stream_number,
                                version: b.first_version + u64::from(b.count) - 1,
                            },
                        );
                    }
                    batch.push(summary);
                    let cp = Checkpoint {
                        segment: loc.segment,
                        offset: loc.offset + loc.len,
                        next_position: h.next_position(),
                    };
                    last_cp = Some(cp);
                    if batch.len() >= REBUILD_BATCH_FRAMES {
                        if let Err(e) = index.apply(&batch) {
                            apply_error = Some(e.into());
                            return Err(LogError::Payload("index apply failed".into()));
                        }
                        batch.clear();
                    }
                    Ok(())
                },
            );
            if let Some(e) = apply_error {
                return Err(e);
            }
            match opened {
                Ok((reader, w, report)) => {
                    // An index that saw frames the log no longer has (lost in a power loss
                    // under relaxed durability, then truncated) must not be trusted.
                    if indexed_before > report.next_position && attempt == 1 {
                        tracing::warn!("index is ahead of the recovered log; rebuilding it");
                        drop(index);
                        remove_index(&index_path)?;
                        rebuilt = true;
                        continue;
                    }
                    index.apply(&batch)?;
                    let collected = collector.into_active();
                    if let Some(cp) = last_cp.filter(|_| report.frames_replayed > 0) {
                        // The log below `cp` is durable: open synced the recovered tail.
                        let touched: Vec<(String, StreamHead)> = touched.into_iter().collect();
                        index.checkpoint_durably(cp, &touched)?;
                    }
                    break (index, reader, w, report, heads, collected);
                }
                Err(LogError::CheckpointMismatch(why)) if attempt == 1 => {
                    tracing::warn!(%why, "index does not match the log; rebuilding it");
                    drop(index);
                    remove_index(&index_path)?;
                    rebuilt = true;
                }
                Err(e) => return Err(e.into()),
            }
        };

        let segments: Vec<u64> = reader.segments().iter().map(|s| s.first_position).collect();
        let (active_segment, sealed) = match segments.split_last() {
            Some((last, sealed)) => (*last, sealed),
            None => (0, &[][..]),
        };
        ids.retain_segments(sealed);
        streams.retain_segments(sealed);
        for &s in sealed {
            let need_ids = !ids.has_segment(s);
            let need_streams = !streams.has_segment(s);
            if need_ids || need_streams {
                let (m, mut entries) =
                    scan_segment(&reader, s, need_streams.then_some(&heads), need_ids)?;
                if need_ids {
                    ids.write_segment(s, &m)?;
                }
                if need_streams {
                    streams.write_segment(s, &mut entries)?;
                }
            }
        }
        // Register the chunks of files the persistent index does not know (written above, or
        // lost with a commit that was not durable).
        let registered = index.stream_segments()?;
        for &s in sealed {
            if !registered.contains(&s) {
                let rows = match streams.chunk_rows(s) {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "damaged stream index file; rebuilding it");
                        stream_files_damaged += 1;
                        streams.discard(s);
                        let (_, mut entries) = scan_segment(&reader, s, Some(&heads), false)?;
                        streams.write_segment(s, &mut entries)?
                    }
                };
                index.add_stream_chunks(s, &rows)?;
            }
        }
        let (active_ids, active_entries) = match collected {
            Some((segment, map, entries)) if segment == active_segment => (map, entries),
            _ => scan_segment(&reader, active_segment, Some(&heads), true)?,
        };
        let mut recent = Recent::default();
        recent.add_entries(active_segment, &active_entries);

        let committed = reader.committed_position();
        let inner = Arc::new(Inner {
            dir: dir.clone(),
            reader,
            index,
            ids,
            streams,
            stream_file_rebuild: Mutex::new(()),
            recent: Mutex::new(recent),
            heads: RwLock::new({
                let mut published = heads.clone();
                published.published_end = committed;
                published
            }),
            poisoned: AtomicBool::new(false),
            index_failure: Mutex::new((String::new(), 0)),
            appends_refused: AtomicBool::new(false),
            durable_position: AtomicU64::new(committed),
            committed: (Mutex::new(committed), Condvar::new()),
            closed: AtomicBool::new(false),
            timer_stop: (Mutex::new(false), Condvar::new()),
            close_failure: Mutex::new(None),
            _lock: lock_file,
        });
        let snapshots = SnapshotStore::open(vfs.clone(), dir.join(SNAPSHOT_DIR))?;

        let (tx, rx) = mpsc::channel(options.queue_depth);
        let (itx, irx) = sync_channel(INDEXER_QUEUE_GROUPS);
        let (atx, arx) = std::sync::mpsc::channel();
        let (stx, srx) = sync_channel(SYNC_QUEUE_GROUPS);
        let completer = Completer {
            inner: inner.clone(),
            indexer: itx,
            acker: atx,
            durability: options.durability,
        };
        let inflight = Arc::new(AtomicUsize::new(0));
        let syncer_completer = completer.clone();
        let syncer_inflight = inflight.clone();
        let ids_room = crate::writer::ids_room(options.segment_size_bytes_max);
        let writer = Writer {
            log: log_writer,
            heads,
            inner: inner.clone(),
            rx,
            syncer: stx,
            inflight,
            completer,
            active_segment,
            active_ids: {
                // Room without touching it: a store opened for a few appends should not make
                // a whole segment's table resident (a new segment's is written; see `presized`).
                let mut ids = active_ids;
                ids.reserve_lazily(ids_room.saturating_sub(ids.len()));
                ids
            },
            ids_room,
            sealing: Vec::new(),
            durability: options.durability,
            drained: Vec::new(),
            firsts: Vec::new(),
            locations: Vec::new(),
            id_hashes: Vec::new(),
            type_names: Default::default(),
        };
        let mut threads = Vec::new();
        threads.push(
            std::thread::Builder::new()
                .name("orchestrix-writer".into())
                .spawn(move || writer.run())
                .map_err(io(&dir))?,
        );
        threads.push(
            std::thread::Builder::new()
                .name("orchestrix-syncer".into())
                .spawn(move || run_syncer(syncer_completer, srx, syncer_inflight))
                .map_err(io(&dir))?,
        );
        threads.push(
            std::thread::Builder::new()
                .name("orchestrix-acker".into())
                .spawn(move || crate::writer::run_acker(arx))
                .map_err(io(&dir))?,
        );
        let idx_inner = inner.clone();
        let interval = options.index_checkpoint_interval;
        threads.push(
            std::thread::Builder::new()
                .name("orchestrix-indexer".into())
                .spawn(move || {
                    run_indexer(idx_inner, irx, interval, (active_segment, active_entries))
                })
                .map_err(io(&dir))?,
        );
        if let Durability::Interval(d) = options.durability {
            let ticker = tx.clone();
            let timer_inner = inner.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("orchestrix-sync-timer".into())
                    .spawn(move || loop {
                        let (stop, cv) = &timer_inner.timer_stop;
                        let stopped = cv
                            .wait_timeout_while(lock(stop), d, |stop| !*stop)
                            .map_or(true, |(stop, _)| *stop);
                        if stopped || ticker.blocking_send(Request::Tick).is_err() {
                            break;
                        }
                    })
                    .map_err(io(&dir))?,
            );
        }
        let store = Store {
            inner,
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            snapshots,
            options,
            closing: Mutex::new(()),
        };
        Ok((
            store,
            OpenReport {
                index_rebuilt: rebuilt,
                id_files_rebuilt: sealed_count_missing(sealed, &id_files_found),
                stream_files_rebuilt: sealed_count_missing(sealed, &stream_files_found)
                    + stream_files_damaged,
                log: report,
            },
        ))
    }

    pub(crate) fn sender(&self) -> Result<mpsc::Sender<Request>> {
        lock(&self.tx).clone().ok_or(StoreError::Closed)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends events to one stream.
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        self.append_multi(vec![(stream.to_string(), expected, events)])
    }

    /// Appends to several streams atomically: all parts are written or none, also across a
    /// crash (a frame per stream, written as one unit that recovery keeps whole or drops).
    pub fn append_multi(
        &self,
        parts: Vec<(String, ExpectedVersion, Vec<EventData>)>,
    ) -> Result<AppendResult> {
        let (parts, rx) = self.prepare_append(parts)?;
        let request = Request::Append {
            parts,
            reply: Reply {
                tx: rx.0,
                waiter: Waiter::Thread,
            },
        };
        let sender = self.sender()?;
        crate::block::wait(sender.send(request)).map_err(|_| StoreError::Closed)?;
        // Not held while waiting for the answer: the writer ends once every sender is gone.
        drop(sender);
        crate::block::wait(rx.1)
            .map_err(|_| StoreError::Closed)?
            .result
    }

    #[allow(clippy::type_complexity)]
    pub(crate) fn prepare_append(
        &self,
        parts: Vec<(String, ExpectedVersion, Vec<EventData>)>,
    ) -> Result<(
        Vec<AppendPart>,
        (oneshot::Sender<AppendReply>, oneshot::Receiver<AppendReply>),
    )> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        validate_and_convert(parts, self.options.event_size_max).map(|p| (p, oneshot::channel()))
    }

    /// Reads up to `max_count` events of a stream from `from_version` in `direction`
    /// (backwards from `u64::MAX` reads from the end).
    pub fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner
            .read_stream(stream, from_version, direction, max_count)
    }

    /// Reads up to `max_count` events in global order from `from_position` (inclusive;
    /// backwards from `u64::MAX` reads from the end), passing only those the filter accepts.
    pub fn read_all(
        &self,
        from_position: u64,
        direction: Direction,
        max_count: usize,
        filter: &ReadFilter,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner
            .read_all(from_position, direction, max_count, filter)
    }

    /// Visits events in global order from `from_position` while `visit` returns true.
    /// Returns the position after the last event examined. Events are lent to `visit`:
    /// clone one to keep it (cheap: the clone shares the event's frame).
    pub fn scan_forwards(
        &self,
        from_position: u64,
        filter: &ReadFilter,
        visit: &mut dyn FnMut(&RecordedEvent) -> bool,
    ) -> Result<u64> {
        self.inner.scan_forwards(from_position, filter, visit)
    }

    /// A subscription to every event (passing `filter`) from `from_position` on: it catches
    /// up from the log, then waits for new events, with no gap and no duplicate between the
    /// two. Iterating blocks; see [`crate::AsyncStore`] for a tokio `Stream`.
    pub fn subscribe_all(&self, from_position: u64, filter: ReadFilter) -> Subscription {
        Subscription::all(self.inner.clone(), from_position, filter)
    }

    /// A subscription to one stream's events (passing `filter`, as in
    /// [`Store::subscribe_all`]) from `from_version` on.
    pub fn subscribe_stream(
        &self,
        stream: &str,
        from_version: u64,
        filter: ReadFilter,
    ) -> Result<Subscription> {
        check_stream_id(stream)?;
        Ok(Subscription::stream(
            self.inner.clone(),
            stream.to_string(),
            from_version,
            filter,
        ))
    }

    /// The last version of a stream, or `None` if it does not exist.
    pub fn stream_head(&self, stream: &str) -> Result<Option<u64>> {
        check_stream_id(stream)?;
        Ok(self
            .inner
            .heads
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .map(|h| h.version))
    }

    /// Whether a stream exists.
    pub fn stream_exists(&self, stream: &str) -> Result<bool> {
        Ok(self.stream_head(stream)?.is_some())
    }

    /// Stream ids with their last versions, sorted, optionally by prefix.
    pub fn list_streams(&self, prefix: Option<&str>) -> Vec<(String, u64)> {
        let h = self.inner.heads.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(String, u64)> = h
            .iter()
            .filter(|(s, _)| prefix.is_none_or(|p| s.starts_with(p)))
            .map(|(s, h)| (s.to_owned(), h.version))
            .collect();
        v.sort();
        v
    }

    /// Position after the last committed event (the number of events in the log).
    pub fn committed_position(&self) -> u64 {
        self.inner.committed_position()
    }

    /// Makes every append acknowledged so far durable (one fdatasync), whatever the
    /// durability mode: under `Interval` and `Never`, what an application calls before
    /// something that must not outlive its events (`save_snapshot` does). Under `Always`
    /// acknowledged appends are durable already, and this costs a round trip to the writer.
    pub fn sync(&self) -> Result<()> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        let (tx, rx) = oneshot::channel();
        let sender = self.sender()?;
        crate::block::wait(sender.send(Request::Sync(tx))).map_err(|_| StoreError::Closed)?;
        drop(sender);
        crate::block::wait(rx).map_err(|_| StoreError::Closed)?
    }

    /// Saves the snapshot of a stream (atomically, compressed, checksummed). Its version must
    /// be one the stream has; under relaxed durability the log is synced first, so that a
    /// power loss cannot keep the snapshot and lose the events it reflects. The stream keeps
    /// the snapshot of the highest version: a save older than the one stored is skipped.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        // A closed store writes nothing more, snapshots included. The sender is held for the
        // whole save: `close` waits for the writer, which ends only once every sender is
        // gone, so a close begun meanwhile returns after this save, not before it writes.
        let _open = self.sender()?;
        check_stream_id(&snapshot.stream)?;
        let head = self.stream_head(&snapshot.stream)?;
        if head.is_none_or(|h| snapshot.version > h) {
            return Err(StoreError::InvalidInput(format!(
                "a snapshot of stream {:?} at version {} is past the stream's head ({})",
                snapshot.stream,
                snapshot.version,
                head.map_or("no events".into(), |h| format!("version {h}"))
            )));
        }
        if self.options.durability != Durability::Always {
            self.sync()?;
        }
        let event_id = self.event_id_at(&snapshot.stream, snapshot.version)?;
        // The head as of the check (under the snapshot directory's lock), not as of the
        // start of this save: a newer snapshot saved meanwhile may be past that.
        let trusted = |version: u64, id: Option<Uuid>| {
            matches!(
                self.snapshot_mismatch(&snapshot.stream, version, id),
                Ok(None)
            )
        };
        Ok(self.snapshots.save_at(snapshot, event_id, &trusted)?)
    }

    /// The id of the event of `stream` at `version`, if there is one.
    fn event_id_at(&self, stream: &str, version: u64) -> Result<Option<Uuid>> {
        Ok(self
            .read_stream(stream, version, Direction::Forwards, 1)?
            .first()
            .filter(|e| e.version == version)
            .map(|e| e.id))
    }

    /// Why a snapshot of `stream` at `version` naming the event `id` does not describe the
    /// stream's events, if it does not: it is past the stream's head, or the event at its
    /// version is not the one it names (a snapshot naming none, saved without a store, is
    /// taken on its version alone).
    fn snapshot_mismatch(
        &self,
        stream: &str,
        version: u64,
        id: Option<Uuid>,
    ) -> Result<Option<String>> {
        let head = self.stream_head(stream)?;
        if head.is_none_or(|h| version > h) {
            return Ok(Some(format!("past the stream's head ({head:?})")));
        }
        let Some(id) = id else { return Ok(None) };
        let found = self.event_id_at(stream, version)?;
        Ok((found != Some(id))
            .then(|| format!("taken at event {id}, where the stream has {found:?} at its version")))
    }

    /// Loads the latest snapshot of a stream; a damaged one is ignored (`None`), and so is,
    /// with a warning, one that does not describe the stream's events: past the stream's
    /// head, or naming another event than the one at its version (a snapshot directory from
    /// elsewhere, or kept across a restore of an older copy of the log whose stream then
    /// grew other events).
    pub fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        check_stream_id(stream)?;
        let Some((snapshot, event_id)) = self.snapshots.load_at(stream)? else {
            return Ok(None);
        };
        if let Some(why) = self.snapshot_mismatch(stream, snapshot.version, event_id)? {
            tracing::warn!(
                stream,
                version = snapshot.version,
                "ignoring a snapshot that does not describe the stream's events: {why}"
            );
            return Ok(None);
        }
        Ok(Some(snapshot))
    }

    /// Facts for `inspect`.
    pub fn info(&self) -> Result<StoreInfo> {
        Ok(StoreInfo {
            segments: self
                .inner
                .reader
                .segments()
                .into_iter()
                .map(|s| (s.name, s.first_position, s.size_bytes))
                .collect(),
            events: self.committed_position(),
            streams: self
                .inner
                .heads
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .len() as u64,
            index_checkpoint: self.inner.index.checkpoint()?,
            index: self.inner.index.stats()?,
            id_files: self.inner.ids.segments().len(),
            stream_files: self.inner.streams.segments().len(),
        })
    }

    /// Checks every frame's CRC and that the index agrees with the log. Returns the number of
    /// events verified.
    pub fn verify(&self) -> Result<u64> {
        // Stream index files first, whole (reads would rebuild a damaged one silently).
        for segment in self.inner.streams.segments() {
            self.inner.streams.read_segment(segment)?;
        }
        // Up to what readers see (with appends going on, the log's committed end moves first,
        // before the stream heads and the index's bound are published; a group's end is a
        // unit's end).
        let end = self.inner.committed_position();
        let mut scanner = self.inner.reader.scan();
        let mut expected = 0u64;
        let mut p = FrameSpans::default();
        // A frame whose unit goes on in the next one (see `FRAME_CONTINUES`).
        let mut open_unit: Option<FrameLocation> = None;
        while let Some((loc, h, payload)) = scanner.next_frame()? {
            if h.first_position >= end {
                break;
            }
            if let Some(u) = open_unit.filter(|u| u.segment != loc.segment) {
                return Err(corrupted_at(
                    u,
                    "a unit of frames ends with its segment".into(),
                ));
            }
            open_unit = h.continues.then_some(loc);
            if h.first_position != expected {
                return Err(corrupted_at(
                    loc,
                    format!(
                        "frame at position {} where {expected} was expected",
                        h.first_position
                    ),
                ));
            }
            decode_spans(&mut p, &payload, h.event_count, loc)?;
            // Every stream batch of the frame must be indexed at this frame.
            for b in &p.batches {
                let stream = b.stream.text(&payload).unwrap_or_default();
                let found =
                    self.inner
                        .stream_batches(stream, b.first_version, Direction::Forwards, 1)?;
                let ok = found
                    .first()
                    .is_some_and(|e| e.first_version == b.first_version && e.location == loc);
                if !ok {
                    return Err(StoreError::InvalidInput(format!(
                        "index disagrees with the log: stream {:?} version {} is in {} at offset {}",
                        stream,
                        b.first_version,
                        orchestrix_log::segment::file_name(loc.segment),
                        loc.offset
                    )));
                }
            }
            expected = h.next_position();
        }
        if let Some(u) = open_unit {
            return Err(corrupted_at(u, "a unit of frames ends with the log".into()));
        }
        Ok(expected)
    }

    /// Flushes, syncs and stops the background threads. Dropping the store does the same.
    /// Under relaxed durability (`Interval`, `Never`) it returns an error (once) when appends
    /// it acknowledged may not be durable: its closing fdatasync failed (that error; the
    /// store is latched), or an earlier failure latched the store before they were synced
    /// ([`StoreError::Poisoned`]).
    pub fn close(&self) -> Result<()> {
        // A second caller waits for the first to finish: when close returns, the store is
        // closed.
        let _closing = lock(&self.closing);
        crate::block::blocking(|| self.close_now())
    }

    fn close_now(&self) -> Result<()> {
        let Some(tx) = lock(&self.tx).take() else {
            return Ok(());
        };
        // The sync timer holds a sender too: stop it now rather than at its next tick.
        {
            let (stop, cv) = &self.inner.timer_stop;
            *lock(stop) = true;
            cv.notify_all();
        }
        // Dropping the last sender lets the writer drain the queue, sync and stop; it then
        // drops the indexer's queue, and the indexer checkpoints and stops.
        drop(tx);
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
        // Only now, with every append the writer drained published: a subscription that sees
        // `closed` reads once more, and so delivers all of them before it ends.
        self.inner.closed.store(true, Ordering::Release);
        self.inner.notify_waiters();
        // The writer's last fdatasync failed: what it was to make durable may not be.
        match lock(&self.inner.close_failure).take() {
            Some(e) => Err(StoreError::from(e)),
            None => Ok(()),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn remove_index(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn validate_and_convert(
    parts: Vec<(String, ExpectedVersion, Vec<EventData>)>,
    event_size_max: u64,
) -> Result<Vec<AppendPart>> {
    if parts.is_empty() || parts.len() > STREAMS_PER_APPEND_MAX {
        return Err(StoreError::InvalidInput(format!(
            "an append must name 1 to {STREAMS_PER_APPEND_MAX} streams"
        )));
    }
    let mut total_events = 0usize;
    let mut total_bytes = 0u64;
    // Ids made in a row by `EventData::new` increase (v7, one clock context per thread): while
    // they do, no two are equal; only an append whose ids do not is checked with a set.
    let mut last_id: Option<u128> = None;
    let mut ids_increase = true;
    let mut out = Vec::with_capacity(parts.len());
    for (i, (stream, expected, events)) in parts.into_iter().enumerate() {
        check_stream_id(&stream)?;
        if events.is_empty() {
            return Err(StoreError::InvalidInput(format!(
                "no events for stream {stream:?}"
            )));
        }
        if out.iter().any(|p: &AppendPart| p.stream == stream) {
            return Err(StoreError::InvalidInput(format!(
                "stream {stream:?} appears twice in one append (part {i})"
            )));
        }
        total_events += events.len();
        if total_events > BATCH_EVENT_COUNT_MAX {
            return Err(StoreError::TooLarge {
                what: "batch",
                unit: "events",
                size: total_events as u64,
                max: BATCH_EVENT_COUNT_MAX as u64,
            });
        }
        // Converted in place: the records reuse the events' allocation.
        let recs: Vec<orchestrix_log::EventRecord> =
            events.into_iter().map(EventData::into_record).collect();
        for r in &recs {
            total_bytes += check_event(r, event_size_max)?;
            let id = u128::from_be_bytes(r.id);
            ids_increase &= last_id.is_none_or(|last| id > last);
            last_id = Some(id);
        }
        if total_bytes > BATCH_SIZE_MAX {
            return Err(StoreError::TooLarge {
                what: "batch",
                unit: "bytes",
                size: total_bytes,
                max: BATCH_SIZE_MAX,
            });
        }
        // Encoded here, on the caller's thread, so the writer only copies bytes.
        let encoded = encode_events(&recs);
        out.push(AppendPart {
            stream,
            expected,
            events: recs,
            encoded,
        });
    }
    if !ids_increase {
        check_repeated_ids(&out)?;
    }
    Ok(out)
}

/// Refuses an append two of whose events share an id.
fn check_repeated_ids(parts: &[AppendPart]) -> Result<()> {
    let count = parts.iter().map(|p| p.events.len()).sum();
    let mut seen: HashSet<[u8; 16], foldhash::fast::RandomState> =
        HashSet::with_capacity_and_hasher(count, Default::default());
    for r in parts.iter().flat_map(|p| &p.events) {
        if !seen.insert(r.id) {
            return Err(StoreError::InvalidInput(format!(
                "event id {} appears twice in one append",
                uuid::Uuid::from_bytes(r.id)
            )));
        }
    }
    Ok(())
}

/// What the writer hands to the indexer.
pub(crate) enum IndexerMsg {
    /// Frames committed to the log, in log order.
    Frames(Vec<FrameSummary>),
    /// A segment was sealed: write the id file of its events and its stream index file.
    Sealed(u64, Arc<IdMap>),
}

/// Whether `dir` holds a store (see [`Store::open_existing`]); reads, creates nothing. The
/// lock file is made first when a store is created, so a store that crashed before its first
/// segment was written still counts.
fn holds_a_store(dir: &Path) -> bool {
    let log = dir.join(LOG_DIR);
    log.is_dir()
        && (dir.join(LOCK_FILE).is_file()
            || orchestrix_log::segment::list(&StdFs, &log).is_ok_and(|s| !s.is_empty()))
}

/// Creates `dir` and its missing parents, and makes each new directory's entry durable in its
/// parent before the store goes on: a directory's entry lives in its parent, so that without
/// those fsyncs a power loss could take a new store, with every append acknowledged in it,
/// away. An existing directory is left as it is.
///
/// The directory is made on the real file system, where the lock file and the index live, and
/// through `vfs` (the log's and the snapshots' file layer: the same directories on the real
/// one, its own in a test's simulated one), whose directory syncs make the entries durable.
fn create_store_dir(vfs: &dyn Vfs, dir: &Path) -> std::io::Result<()> {
    orchestrix_log::fs::create_dir_durably(vfs, dir)?;
    std::fs::create_dir_all(dir)
}

/// What of a sealed segment the indexer has still to write: its id file (the ids, which the
/// writer keeps in memory meanwhile), and its stream index file with the file's chunks in
/// the index (the batches, which the recent index keeps meanwhile). `None` once written.
struct Unwritten {
    ids: Option<Arc<IdMap>>,
    entries: Option<Vec<StreamEntry>>,
}

impl Unwritten {
    /// Writes what is left, in that order; returns the first failure. With `index_failed`
    /// (redb refuses writes since an earlier failure) the stream index file waits; a failure
    /// to register the file's chunks in redb sets it.
    fn write(
        &mut self,
        inner: &Inner,
        segment: u64,
        index_failed: &mut bool,
    ) -> Result<(), String> {
        if let Some(ids) = &self.ids {
            inner
                .ids
                .write_segment(segment, ids)
                .map_err(|e| format!("writing an id file: {e}"))?;
            self.ids = None;
        }
        if let Some(entries) = &mut self.entries {
            if *index_failed {
                return Err("the index database failed earlier; reopen the store".into());
            }
            let rows = inner
                .streams
                .write_segment(segment, entries)
                .map_err(|e| format!("writing a stream index file: {e}"))?;
            if let Err(e) = inner.index.add_stream_chunks(segment, &rows) {
                *index_failed = true;
                return Err(format!("registering a stream index file: {e}"));
            }
            self.entries = None;
            // The batches are readable from the file now: free their memory.
            lock(&inner.recent).remove_segment(segment);
        }
        Ok(())
    }
}

/// Applies committed frames to the persistent index behind the writer, writes the id files and
/// stream index files of sealed segments, and checkpoints durably about once per `interval`.
/// `active` is the active segment and the stream batches it held when the store opened.
fn run_indexer(
    inner: Arc<Inner>,
    rx: Receiver<IndexerMsg>,
    interval: Duration,
    active: (u64, Vec<StreamEntry>),
) {
    // Stream batches of segments whose stream index file is not written yet, per segment.
    let mut unsealed: BTreeMap<u64, Vec<StreamEntry>> = BTreeMap::from([active]);
    let mut last_durable = Instant::now();
    let mut pending_cp: Option<Checkpoint> = None;
    // Stream number -> (stream id, head): the id is copied once per stream, not per row.
    let mut dirty_heads: HashMap<u64, (String, StreamHead)> = HashMap::new();
    // A checkpoint that was due while the log was not yet durable up to it, with the heads
    // as of it: made durable once the log catches up (under `Interval` durability with
    // steady appends, the newest frame applied is almost never durable at a due moment).
    let mut lagging: Option<(Checkpoint, Vec<(String, StreamHead)>)> = None;
    // Set when a redb write failed: redb answers every later call with an error until it is
    // reopened, so the index's rows are not retried (the store's reopen rebuilds them).
    let mut failed = false;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        // The index is derived: reads keep working from the recent index and the log, and
        // the next open rebuilds what is missing.
        tracing::error!(error = %e, "{what} failed; it will be rebuilt on the next open");
    };
    // Sealed segments whose files could not be written yet, held in memory and retried
    // every `interval`; appends are refused while `SEGMENTS_HELD_MAX` of them are held.
    let mut held: BTreeMap<u64, Unwritten> = BTreeMap::new();
    let mut last_retry = Instant::now();
    let mut open = true;
    while open {
        let mut msgs = Vec::new();
        match rx.recv_timeout(interval) {
            Ok(m) => msgs.push(m),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => open = false,
        }
        // Gather for a while: one redb transaction per 10 ms instead of one per group keeps
        // the indexer's per-row cost down. It sleeps rather than waits on the queue (sparing
        // the writer a wake-up per group), in slices short enough that the bounded queue
        // never fills meanwhile and stalls the writer.
        if open && !msgs.is_empty() {
            let started = Instant::now();
            'gather: while started.elapsed() < INDEXER_GATHER {
                std::thread::sleep(INDEXER_GATHER_SLICE);
                loop {
                    match rx.try_recv() {
                        Ok(m) => msgs.push(m),
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                            open = false;
                            break 'gather;
                        }
                    }
                }
            }
        }
        let mut frames = Vec::new();
        for m in msgs {
            match m {
                IndexerMsg::Frames(f) => {
                    for s in &f {
                        unsealed
                            .entry(s.location.segment)
                            .or_default()
                            .extend(s.batches.iter().map(|b| stream_entry(s.location, b)));
                    }
                    frames.extend(f);
                }
                IndexerMsg::Sealed(segment, ids) => {
                    // Every frame of the sealed segment came before this message.
                    let mut unwritten = Unwritten {
                        ids: Some(ids),
                        entries: Some(unsealed.remove(&segment).unwrap_or_default()),
                    };
                    if let Err(e) = unwritten.write(&inner, segment, &mut failed) {
                        tracing::error!(segment, error = %e, "a sealed segment's index files could not be written; held in memory and retried");
                        held.insert(segment, unwritten);
                        inner.hold_segments(held.len() as u64, &e);
                    }
                }
            }
        }
        if !held.is_empty() && last_retry.elapsed() >= interval {
            last_retry = Instant::now();
            let mut latest = None;
            held.retain(|&segment, unwritten| match unwritten.write(&inner, segment, &mut failed) {
                Ok(()) => {
                    tracing::info!(segment, "a held segment's index files are written");
                    false
                }
                Err(e) => {
                    tracing::debug!(segment, error = %e, "a held segment's index files are still unwritten");
                    latest = Some(e);
                    true
                }
            });
            inner.hold_segments(held.len() as u64, latest.as_deref().unwrap_or_default());
        }
        if !frames.is_empty() && !failed {
            match inner.index.apply(&frames) {
                Ok(()) => {
                    lock(&inner.recent).remove_frames(&frames);
                    for f in &frames {
                        for b in &f.batches {
                            let head = StreamHead {
                                number: b.stream_number,
                                version: b.first_version + u64::from(b.count) - 1,
                            };
                            dirty_heads
                                .entry(b.stream_number)
                                .and_modify(|e| e.1 = head)
                                .or_insert_with(|| (b.stream.to_string(), head));
                        }
                    }
                    if let Some(last) = frames.last() {
                        pending_cp = Some(Checkpoint {
                            segment: last.location.segment,
                            offset: last.location.offset + last.location.len,
                            next_position: last.first_position + u64::from(last.event_count),
                        });
                    }
                }
                Err(e) => {
                    failed = true;
                    fail("index apply", &e);
                }
            }
        }
        // A checkpoint may become durable only once the log below it is durable. Under
        // relaxed durability the rows are still committed durably each interval (without the
        // checkpoint), because redb reuses pages only after a durable commit.
        let durable = inner.durable_position.load(Ordering::Acquire);
        if let Some((cp, heads)) = lagging.take_if(|(cp, _)| durable >= cp.next_position) {
            if !failed {
                match inner.index.checkpoint_durably(cp, &heads) {
                    Ok(()) => last_durable = Instant::now(),
                    Err(e) => {
                        failed = true;
                        fail("index checkpoint", &e);
                    }
                }
            }
        }
        if let Some(cp) = pending_cp {
            let log_durable = durable >= cp.next_position;
            let due = last_durable.elapsed() >= interval || !open;
            if due && !log_durable && !failed {
                if lagging.is_none() {
                    // The heads as of `cp`: those changed since the last checkpoint (the
                    // ones changed after it collect anew for the next).
                    lagging = Some((cp, dirty_heads.drain().map(|(_, h)| h).collect()));
                }
                match inner.index.flush() {
                    Ok(()) => last_durable = Instant::now(),
                    Err(e) => {
                        failed = true;
                        fail("index flush", &e);
                    }
                }
            }
            if log_durable && due {
                // A lagging checkpoint not recorded yet is older than this one: its heads go
                // first, overwritten by newer ones of the same streams.
                let mut heads = lagging.take().map(|(_, h)| h).unwrap_or_default();
                heads.extend(dirty_heads.drain().map(|(_, h)| h));
                match inner.index.checkpoint_durably(cp, &heads) {
                    Ok(()) => {
                        pending_cp = None;
                        last_durable = Instant::now();
                    }
                    Err(e) => {
                        failed = true;
                        fail("index checkpoint", &e);
                    }
                }
            }
        }
    }
}
