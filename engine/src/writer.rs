//! The single writer: group commit with optimistic concurrency per stream.
//!
//! The writer drains every queued append, checks each one's expected versions against the
//! in-memory stream heads (and its event ids for idempotency), encodes its frames (one per
//! stream, a unit when there are several) into one buffer, writes it once, fdatasyncs once,
//! publishes the new frames to readers and only then acknowledges all of them. A failed write
//! or fsync latches the store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use orchestrix_index::ids::IdMap;
use orchestrix_index::{BatchSummary, FrameSummary};
use orchestrix_log::frame::FRAME_HEADER_SIZE;
#[cfg(doc)]
use orchestrix_log::record::encode_events;
use orchestrix_log::record::encode_payload_encoded;
use orchestrix_log::{EventRecord, FrameLocation, LogError, LogWriter, PendingCommit};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::event::{AppendResult, ExpectedVersion};
use crate::heads::StreamHeads;
use crate::options::Durability;
use crate::store::{IndexerMsg, Inner};

/// The events one append writes to one stream.
pub(crate) struct AppendPart {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<EventRecord>,
    /// `events` encoded for the frame (see [`encode_events`]).
    pub encoded: Vec<u8>,
}

/// The answer to an append. The events travel back with it so that the caller's thread, not
/// the writer, pays for freeing them.
pub(crate) struct AppendReply {
    pub result: Result<AppendResult>,
    pub _events: Vec<AppendPart>,
}

/// Groups with at most this many appends waited for by blocked threads are acknowledged by
/// the completing thread itself; more are handed to the acknowledger. (8 writer threads of
/// 100 events, 3-4 appends per group: 839,307 events/s against 780,496 with 2, medians of 4
/// alternating runs; 64 writer threads alike.)
const ACK_INLINE_MAX: usize = 8;

/// Who waits for an append's answer, which decides which thread wakes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiter {
    /// A tokio task (the async API). Waking one queues it on its runtime (at most the first
    /// of a group also wakes an idle worker), so the completing thread answers every task
    /// itself: a hand-off to the acknowledger costs more than that (64 writer tasks, one
    /// event per append: 144,726 against 128,898 events/s, medians of 4 alternating runs).
    Task,
    /// A thread blocked in the sync API. Waking one is a system call each; groups with more
    /// than [`ACK_INLINE_MAX`] of them go to the acknowledger thread, so that the next
    /// fdatasync does not wait for all those wake-ups (with 64 writer threads, answering
    /// them all on the syncer measured 107,504 against 118,373 events/s).
    Thread,
}

/// Where an append's answer goes.
pub(crate) struct Reply {
    pub tx: oneshot::Sender<AppendReply>,
    pub waiter: Waiter,
}

impl Reply {
    fn send(self, answer: AppendReply) {
        // The caller may have given up waiting (a dropped future): nothing to do then.
        let _ = self.tx.send(answer);
    }
}

/// One acknowledgement to deliver.
pub(crate) type Ack = (oneshot::Sender<AppendReply>, AppendReply);

/// Delivers acknowledgements to blocked threads (wakes them) off the syncing thread, in
/// commit order (see [`Waiter`]).
pub(crate) fn run_acker(rx: std::sync::mpsc::Receiver<Vec<Ack>>) {
    for acks in rx {
        for (reply, answer) in acks {
            let _ = reply.send(answer);
        }
    }
}

pub(crate) enum Request {
    Append {
        parts: Vec<AppendPart>,
        reply: Reply,
    },
    /// Periodic fsync for interval durability.
    Tick,
    /// [`crate::Store::sync`]: make everything written so far durable, whatever the
    /// durability mode, and answer once it is.
    Sync(SyncReply),
}

/// Where the answer to a [`Request::Sync`] goes.
pub(crate) type SyncReply = oneshot::Sender<Result<()>>;

/// Answers sync requests of a group that could not be made durable.
fn fail_syncs(syncs: Vec<SyncReply>, reason: Option<&str>) {
    for tx in syncs {
        let _ = tx.send(Err(match reason {
            Some(r) => StoreError::WriteFailed(r.to_owned()),
            None => StoreError::Poisoned,
        }));
    }
}

impl Request {
    /// Bytes of encoded events the request brings to a group (what [`GROUP_BYTES_MAX`]
    /// bounds).
    fn encoded_bytes(&self) -> usize {
        match self {
            Request::Append { parts, .. } => parts.iter().map(|p| p.encoded.len()).sum(),
            Request::Tick | Request::Sync(_) => 0,
        }
    }
}

/// Segment bytes per event assumed when making room for a segment's ids before knowing how
/// many it will hold (a 256-byte event takes ~330 with its fields and frame).
const SEGMENT_BYTES_PER_ID_GUESS: u64 = 320;
/// The most ids room is made for in advance (a map grows past it as needed).
const IDS_ROOM_MAX: usize = 1 << 22;

/// Ids to make room for in a segment's map up front: the writer then never grows the map
/// (each growth copies the whole table) for a segment of events of the usual sizes.
pub(crate) fn ids_room(segment_size_bytes_max: u64) -> usize {
    usize::try_from(segment_size_bytes_max / SEGMENT_BYTES_PER_ID_GUESS)
        .unwrap_or(usize::MAX)
        .min(IDS_ROOM_MAX)
}

/// `map` with room for at least `room` ids, its table written (resident): made when a segment
/// rolls, for the next one, which will fill it.
pub(crate) fn presized(mut map: IdMap, room: usize) -> IdMap {
    map.reserve(room.saturating_sub(map.len()));
    map
}

/// Most requests taken into one group.
const GROUP_REQUESTS_MAX: usize = 4096;
/// A group stops growing once its appends' encoded events reach this size.
const GROUP_BYTES_MAX: usize = 8 * 1024 * 1024;

pub(crate) struct Writer {
    pub log: LogWriter,
    pub heads: StreamHeads,
    pub inner: Arc<Inner>,
    pub rx: mpsc::Receiver<Request>,
    /// Hands written groups to the syncer thread.
    pub syncer: SyncSender<CommitJob>,
    /// Groups handed to the syncer and not completed yet.
    pub inflight: Arc<AtomicUsize>,
    /// Completes groups inline when nothing is in flight or queued.
    pub completer: Completer,
    /// The segment frames are being appended to.
    pub active_segment: u64,
    /// Ids of the active segment's events (including this group's), id -> position.
    pub active_ids: IdMap,
    /// Ids to make room for in a new segment's map (see [`ids_room`]).
    pub ids_room: usize,
    /// Ids of sealed segments whose id files are not written yet.
    pub sealing: Vec<(u64, Arc<IdMap>)>,
    pub durability: Durability,
    /// Reused between groups: the requests drained from the queue.
    pub drained: Vec<Request>,
    /// Reused between appends: the first version each part will get.
    pub firsts: Vec<u64>,
    /// Reused between appends: where each part's frame went.
    pub locations: Vec<FrameLocation>,
    /// Reused between groups: the hash in [`Writer::active_ids`] of each event id of the group.
    pub id_hashes: Vec<u64>,
    /// One shared copy of each event type's name (see [`Writer::type_name`]).
    pub type_names: std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>,
}

/// An append waiting for its group's commit: the reply channel, the result to send, and the
/// caller's events (returned for the caller to free).
type Pending = (Reply, AppendResult, Vec<AppendPart>);

/// An append refused for a wrong expected version, answered with its group (see
/// [`CommitJob::refused`]).
type Refused = (Reply, StoreError, Vec<AppendPart>);

/// A written group on its way to durability.
pub(crate) struct CommitJob {
    commit: PendingCommit,
    summaries: Vec<FrameSummary>,
    pending: Vec<Pending>,
    /// Appends refused for a wrong expected version. They are answered once this group (and
    /// every group before it) is published, so that the version an error names is readable
    /// when the caller gets it: a caller that re-reads the stream and retries then sees what
    /// it conflicted with instead of a head that has not caught up yet.
    refused: Vec<Refused>,
    sealed: Vec<(u64, Arc<IdMap>)>,
    tick: bool,
    /// Sync requests taken into this group: answered once it is durable.
    syncs: Vec<SyncReply>,
}

/// Writes the payload of a part's frame: its one batch, events encoded beforehand.
fn frame_payload(
    p: &AppendPart,
    first_version: u64,
) -> impl FnOnce(&mut Vec<u8>) -> orchestrix_log::Result<()> + '_ {
    move |buf| {
        encode_payload_encoded(
            buf,
            std::iter::once((p.stream.as_str(), first_version, &p.encoded[..])),
        )
    }
}

/// Answers refused appends with their errors.
fn refuse_all(refused: Vec<Refused>) {
    for (reply, error, parts) in refused {
        reply.send(AppendReply {
            result: Err(error),
            _events: parts,
        });
    }
}

/// Answers every append of a failed group: the first gets the error itself, the others a
/// `WriteFailed` naming it (or `Poisoned` when the failure happened earlier: the log refused
/// the write because it is latched).
fn fail_all(pending: Vec<Pending>, error: Option<LogError>) {
    let error = error.filter(|e| !matches!(e, LogError::Poisoned));
    let reason = error.as_ref().map(ToString::to_string);
    let mut first = error;
    for (reply, _, parts) in pending {
        let err = match (first.take(), &reason) {
            (Some(e), _) => StoreError::from(e),
            (None, Some(r)) => StoreError::WriteFailed(r.clone()),
            (None, None) => StoreError::Poisoned,
        };
        reply.send(AppendReply {
            result: Err(err),
            _events: parts,
        });
    }
}

/// The second half of a group commit: fdatasyncs written groups (one fdatasync for all of
/// them), then publishes them to readers, hands them to the indexer, and acknowledges them,
/// in order. The writer runs it inline when nothing else is queued (lowest latency); under
/// load it hands groups to the syncer thread and goes on writing the next one (pipelining).
#[derive(Clone)]
pub(crate) struct Completer {
    pub inner: Arc<Inner>,
    pub indexer: SyncSender<IndexerMsg>,
    pub acker: std::sync::mpsc::Sender<Vec<Ack>>,
    pub durability: Durability,
}

/// Whether a completion fdatasyncs: under `Always`, every group with frames; under `Interval`,
/// every tick of the timer (one each interval) that finds frames written since the last
/// fdatasync, so that a write is durable at most one interval (and an fdatasync) after it is
/// acknowledged; under `Never`, none.
fn needs_sync(durability: Durability, frames: bool, tick: bool, unsynced: bool) -> bool {
    match durability {
        Durability::Always => frames,
        Durability::Interval(_) => tick && unsynced,
        Durability::Never => false,
    }
}

/// The syncer thread: completes the groups the writer hands over.
pub(crate) fn run_syncer(
    completer: Completer,
    rx: Receiver<CommitJob>,
    inflight: Arc<AtomicUsize>,
) {
    // Woken by a written group, the syncer should start its fdatasync at once rather than
    // wait for a CPU behind the threads its last acknowledgements woke (see `sched`).
    if let Err(e) = crate::sched::request_slice(crate::sched::SYNCER_SLICE) {
        tracing::debug!(error = %e, "the syncer's scheduling hint was refused");
    }
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        let n = jobs.len();
        completer.complete(jobs);
        inflight.fetch_sub(n, Ordering::AcqRel);
    }
}

impl Completer {
    pub fn complete(&self, jobs: Vec<CommitJob>) {
        let poisoned = self.inner.poisoned.load(Ordering::Acquire);
        let frames = jobs.iter().any(|j| !j.summaries.is_empty());
        let tick = jobs.iter().any(|j| j.tick);
        let asked = jobs.iter().any(|j| !j.syncs.is_empty());
        let unsynced = jobs.last().is_some_and(|j| {
            j.commit.next_position() > self.inner.durable_position.load(Ordering::Acquire)
        });
        let mut failure = None;
        let sync = needs_sync(self.durability, frames, tick, unsynced) || (asked && unsynced);
        if !poisoned && sync {
            if let Some(last) = jobs.last() {
                match last.commit.sync() {
                    Ok(()) => {
                        self.inner
                            .durable_position
                            .fetch_max(last.commit.next_position(), Ordering::AcqRel);
                    }
                    Err(e) => failure = Some(e),
                }
            }
        }
        if poisoned || failure.is_some() {
            // Nothing is acknowledged after a failure, not even groups written before it.
            if let Some(e) = &failure {
                tracing::error!(error = %e, "fdatasync failed; the store is now read-only");
            }
            self.inner.poison();
            let reason = failure.as_ref().map(ToString::to_string);
            let mut failure = failure;
            for job in jobs {
                fail_all(job.pending, failure.take());
                refuse_all(job.refused);
                fail_syncs(job.syncs, reason.as_deref());
            }
            return;
        }
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            let next = job.commit.next_position();
            job.commit.publish();
            if !self.inner.publish(&job.summaries, next) {
                // The store was latched by a failed write while this group was being synced:
                // nothing is acknowledged after a failure, and a subscription that saw the
                // latch has ended (the group is in the log, unacknowledged: a reopen keeps it).
                let rest = jobs.map(|j| (j.pending, j.refused, j.syncs));
                for (pending, refused, syncs) in
                    std::iter::once((job.pending, job.refused, job.syncs)).chain(rest)
                {
                    fail_all(pending, None);
                    refuse_all(refused);
                    fail_syncs(syncs, None);
                }
                return;
            }
            if !job.summaries.is_empty() {
                // Bounded channel: a lagging indexer slows the writer down instead of
                // letting memory grow.
                let _ = self.indexer.send(IndexerMsg::Frames(job.summaries));
            }
            for (segment, ids) in job.sealed {
                let _ = self.indexer.send(IndexerMsg::Sealed(segment, ids));
            }
            self.acknowledge(job.pending);
            refuse_all(job.refused);
            for tx in job.syncs {
                let _ = tx.send(Ok(()));
            }
        }
    }

    fn acknowledge(&self, pending: Vec<Pending>) {
        let threads = pending
            .iter()
            .filter(|(reply, _, _)| reply.waiter == Waiter::Thread)
            .count();
        // A hand-off would cost a few blocked callers more than waking them here.
        let hand_off = threads > ACK_INLINE_MAX;
        let mut acks: Vec<Ack> = Vec::with_capacity(if hand_off { threads } else { 0 });
        for (reply, r, parts) in pending {
            let answer = AppendReply {
                result: Ok(r),
                _events: parts,
            };
            if hand_off && reply.waiter == Waiter::Thread {
                acks.push((reply.tx, answer));
            } else {
                reply.send(answer);
            }
        }
        if acks.is_empty() {
            return;
        }
        if let Err(unsent) = self.acker.send(acks) {
            for (tx, answer) in unsent.0 {
                let _ = tx.send(answer);
            }
        }
    }
}

/// Where an event id of the current group went.
#[derive(Clone)]
struct Placement {
    stream: Arc<str>,
    version: u64,
    position: u64,
}

enum Prepared {
    Written(AppendResult),
    Repeat(AppendResult),
}

impl Writer {
    pub fn run(mut self) {
        // The loop ends when every sender is gone (the store closed) and the queue is empty.
        loop {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut group = std::mem::take(&mut self.drained);
            let mut group_bytes = first.encoded_bytes();
            group.push(first);
            while group.len() < GROUP_REQUESTS_MAX && group_bytes < GROUP_BYTES_MAX {
                match self.rx.try_recv() {
                    Ok(r) => {
                        group_bytes += r.encoded_bytes();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            if self.inner.poisoned.load(Ordering::Acquire) {
                self.log.poison();
            }
            self.log
                .note_durable(self.inner.durable_position.load(Ordering::Acquire));
            let mut pending: Vec<Pending> = Vec::with_capacity(group.len());
            let mut summaries = Vec::with_capacity(group.len());
            let group_first_position = self.log.next_position();
            let mut sealed_now: Vec<(u64, Arc<IdMap>)> = Vec::new();
            let mut tick = false;
            let mut syncs: Vec<SyncReply> = Vec::new();
            let mut refused: Vec<Refused> = Vec::new();
            let inner = self.inner.clone();
            self.sealing.retain(|(s, _)| !inner.ids.has_segment(*s));
            // Every id of the group is hashed, and its slot in the map requested, before the
            // first is looked up: with one event per append, a single append has no other miss
            // to overlap with. The hashes then serve each append's look-ups and inserts.
            let mut hashes = std::mem::take(&mut self.id_hashes);
            hashes.clear();
            for req in &group {
                if let Request::Append { parts, .. } = req {
                    for e in parts.iter().flat_map(|p| &p.events) {
                        let h = self.active_ids.hash(&e.id);
                        self.active_ids.touch(h);
                        hashes.push(h);
                    }
                }
            }
            let mut unused = hashes.as_slice();
            for req in group.drain(..) {
                match req {
                    Request::Append { mut parts, reply } => {
                        let n: usize = parts.iter().map(|p| p.events.len()).sum();
                        let (append_hashes, rest) = unused.split_at(n.min(unused.len()));
                        unused = rest;
                        match self.prepare(
                            &mut parts,
                            append_hashes,
                            &mut summaries,
                            group_first_position,
                            &mut sealed_now,
                        ) {
                            Ok(Prepared::Written(r)) | Ok(Prepared::Repeat(r)) => {
                                pending.push((reply, r, parts))
                            }
                            Err(e @ StoreError::WrongExpectedVersion { .. }) => {
                                refused.push((reply, e, parts));
                            }
                            Err(e) => {
                                reply.send(AppendReply {
                                    result: Err(e),
                                    _events: parts,
                                });
                            }
                        }
                    }
                    Request::Tick => tick = true,
                    Request::Sync(reply) => syncs.push(reply),
                }
            }
            self.id_hashes = hashes;
            self.drained = group;
            if self.log.is_poisoned() {
                // An append's own write or fdatasync failed (a roll's, inside `prepare`): latch
                // the store now, so that no group written before it is acknowledged by a
                // completion that has not looked at the latch yet (the log fails every
                // fdatasync after a failed one, so one that has looked fails anyway).
                self.inner.poison();
            }
            if pending.is_empty()
                && summaries.is_empty()
                && !tick
                && refused.is_empty()
                && syncs.is_empty()
            {
                continue;
            }
            match self.log.write_pending() {
                Ok(commit) => {
                    if !summaries.is_empty() {
                        self.inner.stage(&summaries);
                    }
                    let job = CommitJob {
                        commit,
                        summaries,
                        pending,
                        refused,
                        sealed: sealed_now,
                        tick,
                        syncs,
                    };
                    // Alone, complete inline: a hand-off would only add a wake-up to the
                    // latency. With more appends queued, let the syncer fdatasync this group
                    // while the next one is written (bounded: a few groups ahead at most).
                    if self.inflight.load(Ordering::Acquire) == 0 && self.rx.is_empty() {
                        self.completer.complete(vec![job]);
                    } else {
                        self.inflight.fetch_add(1, Ordering::AcqRel);
                        if let Err(unsent) = self.syncer.send(job) {
                            self.inflight.fetch_sub(1, Ordering::AcqRel);
                            fail_all(unsent.0.pending, None);
                            refuse_all(unsent.0.refused);
                            fail_syncs(unsent.0.syncs, None);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "log write failed; the store is now read-only");
                    self.inner.poison();
                    let reason = e.to_string();
                    fail_all(pending, Some(e));
                    refuse_all(refused);
                    fail_syncs(syncs, Some(&reason));
                }
            }
        }
        // Under relaxed durability, make everything written durable before stopping; the
        // syncer publishes what is still queued.
        let latched = self.log.is_poisoned() || self.inner.poisoned.load(Ordering::Acquire);
        let failure = if self.durability == Durability::Always {
            None
        } else if latched {
            // A failure latched the store with acknowledged appends not durable (a tick's
            // fdatasync failed, say): `close` must not answer as if it had synced them.
            (self.inner.durable_position.load(Ordering::Acquire) < self.inner.committed_position())
                .then_some(LogError::Poisoned)
        } else {
            match self.log.sync() {
                Ok(()) => {
                    self.inner
                        .durable_position
                        .fetch_max(self.log.durable_position(), Ordering::AcqRel);
                    None
                }
                Err(e) => {
                    // Latched like any failed fdatasync; `close` returns it: the appends it
                    // was to make durable may not be.
                    tracing::error!(error = %e, "fdatasync at close failed");
                    self.inner.poison();
                    Some(e)
                }
            }
        };
        if failure.is_some() {
            *self
                .inner
                .close_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = failure;
        }
        drop(self.syncer);
    }

    /// The shared copy of an event type's name (made on first sight: the writer keeps one per
    /// distinct type, as the index does).
    fn type_name(&mut self, name: &str) -> Arc<str> {
        if let Some(t) = self.type_names.get(name) {
            return t.clone();
        }
        let t: Arc<str> = name.into();
        self.type_names.insert(t.clone());
        t
    }

    /// Where an already-used event id is: its stream, version and position.
    fn lookup_id(
        &mut self,
        id: &[u8; 16],
        hash: u64,
        summaries: &[FrameSummary],
        group_first_position: u64,
    ) -> Result<Option<Placement>> {
        let mut position = self.active_ids.get_hashed(hash, id);
        if position.is_none() {
            position = self.sealing.iter().find_map(|(_, m)| m.get(id));
        }
        if position.is_none() {
            position = match self.inner.ids.lookup(id) {
                Ok(p) => p,
                Err(e) => {
                    // A damaged id file is derived data: it has been dropped; rebuild it from
                    // its segment (costs time, not the append) and look again.
                    tracing::warn!(error = %e, "rebuilding a damaged event-id file");
                    let sealing: Vec<u64> = self.sealing.iter().map(|(s, _)| *s).collect();
                    let unwritten = self.inner.rebuild_missing_id_files(&sealing)?;
                    // Ids whose file could not be written are held here, as those of a sealed
                    // segment whose file is not written yet: in no file, they must not be
                    // taken for new.
                    self.sealing
                        .extend(unwritten.into_iter().map(|(s, m)| (s, Arc::new(m))));
                    match self.sealing.iter().find_map(|(_, m)| m.get(id)) {
                        Some(p) => Some(p),
                        None => self.inner.ids.lookup(id)?,
                    }
                }
            };
        }
        let Some(position) = position else {
            return Ok(None);
        };
        if position >= group_first_position {
            // Written by an earlier append of this group: not readable yet, but described
            // by its summary.
            let i = summaries.partition_point(|f| f.first_position <= position);
            if let Some(f) = i.checked_sub(1).and_then(|i| summaries.get(i)) {
                for b in &f.batches {
                    if position >= b.first_position
                        && position < b.first_position + u64::from(b.count)
                    {
                        return Ok(Some(Placement {
                            stream: b.stream.clone(),
                            version: b.first_version + (position - b.first_position),
                            position,
                        }));
                    }
                }
            }
            return Err(StoreError::InvalidInput(format!(
                "internal: position {position} of this group has no summary"
            )));
        }
        // Written by an earlier group that is still being synced: wait until it is readable.
        while position >= self.inner.committed_position() {
            if self.inner.poisoned.load(Ordering::Acquire) {
                return Err(StoreError::Poisoned);
            }
            self.inner
                .wait_for_commit(position, std::time::Duration::from_millis(10), None);
        }
        let e = self.inner.read_at(position)?;
        if e.id.as_bytes() != id {
            return Err(StoreError::Index(orchestrix_index::IndexError::Db(
                format!(
                    "the id index points at position {position}, which holds another event; \
                 reopen the store to rebuild the index"
                ),
            )));
        }
        Ok(Some(Placement {
            stream: e.stream().into(),
            version: e.version,
            position,
        }))
    }

    fn prepare(
        &mut self,
        parts: &mut [AppendPart],
        hashes: &[u64],
        summaries: &mut Vec<FrameSummary>,
        group_first_position: u64,
        sealed_now: &mut Vec<(u64, Arc<IdMap>)>,
    ) -> Result<Prepared> {
        if self.log.is_poisoned() || self.inner.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        // Idempotency: look every id up (the list of places is made only if one is found).
        // `hashes` are the ids' hashes in the map, made by `run` for the whole group (made
        // here should they not match the events).
        let count: usize = parts.iter().map(|p| p.events.len()).sum();
        let own: Vec<u64>;
        let hashes = if hashes.len() == count {
            hashes
        } else {
            let events = parts.iter().flat_map(|p| &p.events);
            own = events.map(|e| self.active_ids.hash(&e.id)).collect();
            &own
        };
        let mut found: Option<Vec<Option<Placement>>> = None;
        let events = parts.iter().flat_map(|p| &p.events);
        for (looked_up, (e, &h)) in events.zip(hashes).enumerate() {
            let place = self.lookup_id(&e.id, h, summaries, group_first_position)?;
            if place.is_some() && found.is_none() {
                found = Some(vec![None; looked_up]);
            }
            if let Some(found) = &mut found {
                found.push(place);
            }
        }
        if let Some(found) = found {
            return self.check_repeat(parts, &found);
        }
        // A repeat of stored events writes nothing and is answered above; anything new waits
        // for the index to catch up with its failures (see `SEGMENTS_HELD_MAX`).
        if let Some(e) = self.inner.appends_refused() {
            return Err(e);
        }
        // Expected versions against the heads.
        let mut firsts = std::mem::take(&mut self.firsts);
        firsts.clear();
        for p in parts.iter() {
            let current = self.heads.get(&p.stream).map(|h| h.version);
            if !p.expected.holds(current) {
                return Err(StoreError::WrongExpectedVersion {
                    stream: p.stream.clone(),
                    expected: p.expected,
                    current,
                });
            }
            // The log refuses a batch running past the last version (`u64::MAX`), so a
            // head is below it; this append's events must fit too.
            let first = current.map_or(Some(0), |v| v.checked_add(1));
            let Some(first) = first.filter(|f| f.checked_add(p.events.len() as u64).is_some())
            else {
                return Err(StoreError::InvalidInput(format!(
                    "stream {:?} has no versions left for {} more events",
                    p.stream,
                    p.events.len()
                )));
            };
            firsts.push(first);
        }
        let first_position = self.log.next_position();
        let mut locations = std::mem::take(&mut self.locations);
        self.write_frames(parts, &firsts, &mut locations)?;
        let Some(&location) = locations.first() else {
            return Err(StoreError::InvalidInput("an append without streams".into()));
        };
        if location.segment != self.active_segment {
            // The log rolled: the ids collected so far belong to the sealed segment (the
            // frames of one append are never split by a roll).
            // Room for as many ids as the sealed segment held, or the usual guess.
            // Hashing as the old one did: the group's hashes serve the new map.
            let room = presized(
                self.active_ids.empty_like(),
                self.active_ids.len().max(self.ids_room),
            );
            let ids = Arc::new(std::mem::replace(&mut self.active_ids, room));
            self.sealing.push((self.active_segment, ids.clone()));
            sealed_now.push((self.active_segment, ids));
            self.active_segment = location.segment;
        }
        // One frame per part, in positions as in the buffer.
        let mut position = first_position;
        let mut streams = Vec::with_capacity(parts.len());
        // One hash per event of the append (checked above), taken part by part.
        let mut event_hashes = hashes.iter().copied();
        for ((p, &first_version), &location) in parts.iter_mut().zip(&firsts).zip(&locations) {
            let n = p.events.len() as u64;
            let (head, stream) = self.heads.advance(&p.stream, first_version + n - 1);
            let mut types: Vec<Arc<str>> = Vec::new();
            let mut min_time = i64::MAX;
            for (i, (e, h)) in p.events.iter().zip(&mut event_hashes).enumerate() {
                self.active_ids.insert_hashed(h, e.id, position + i as u64);
                if !types.iter().any(|t| **t == *e.event_type) {
                    types.push(self.type_name(&e.event_type));
                }
                min_time = min_time.min(e.time_unix_nanos);
            }
            summaries.push(FrameSummary {
                location,
                first_position: position,
                event_count: n as u32,
                batches: vec![BatchSummary {
                    stream,
                    stream_number: head.number,
                    first_version,
                    first_position: position,
                    count: n as u32,
                }],
                types,
                min_time_unix_nanos: min_time,
            });
            // The caller gets its stream ids back in the result instead of copies.
            streams.push((
                std::mem::take(&mut p.stream),
                first_version,
                first_version + n - 1,
            ));
            position += n;
        }
        self.firsts = firsts;
        self.locations = locations;
        Ok(Prepared::Written(AppendResult {
            first_position,
            streams,
            already_stored: false,
        }))
    }

    /// Puts an append's frames in the log's buffer, their locations in `out`: one frame for an
    /// append to one stream; for several streams a frame each, as one unit (whole or not at
    /// all after a crash, never split by a roll), so that a read of one stream decodes only
    /// its own events.
    fn write_frames(
        &mut self,
        parts: &[AppendPart],
        firsts: &[u64],
        out: &mut Vec<FrameLocation>,
    ) -> Result<()> {
        out.clear();
        if parts.is_empty() || parts.len() != firsts.len() {
            return Err(StoreError::InvalidInput(
                "internal: an append's parts and versions do not match".into(),
            ));
        }
        if let ([p], [v]) = (parts, firsts) {
            out.push(
                self.log
                    .append(p.events.len() as u32, frame_payload(p, *v))?,
            );
            return Ok(());
        }
        // Each frame: its header, the batch count, the stream id and its length, the first
        // version, the events.
        let bytes_max = parts
            .iter()
            .map(|p| (FRAME_HEADER_SIZE + 1 + 5 + p.stream.len() + 10 + p.encoded.len()) as u64)
            .sum();
        self.log.begin_unit(bytes_max)?;
        for (i, (p, &v)) in parts.iter().zip(firsts).enumerate() {
            let continues = i + 1 < parts.len();
            match self
                .log
                .append_to_unit(p.events.len() as u32, continues, frame_payload(p, v))
            {
                Ok(loc) => out.push(loc),
                Err(e) => {
                    self.log.abort_unit();
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// An append some of whose ids are stored: it succeeds without writing only if all of
    /// them are, in the same streams, consecutively, where the append expected them. Stored
    /// ids elsewhere are a conflicting reuse (`DuplicateEventId`), also when the append's
    /// expected version is the stream's current one: a retry at the new head would fail the
    /// same way, so that is not a version conflict.
    fn check_repeat(&self, parts: &[AppendPart], found: &[Option<Placement>]) -> Result<Prepared> {
        let mut k = 0;
        let mut streams = Vec::new();
        let mut first_position = u64::MAX;
        for p in parts {
            let conflict = |id: [u8; 16], pos: u64| StoreError::DuplicateEventId {
                id: Uuid::from_bytes(id).to_string(),
                position: pos,
            };
            // The version and position of the part's first event, where it is stored.
            let mut first = None;
            for (i, e) in p.events.iter().enumerate() {
                let Some(pl) = &found[k] else {
                    // Some ids are new, some are not: a conflicting reuse, named by a stored
                    // id (not this new one) and where it is.
                    let events = parts.iter().flat_map(|p| &p.events);
                    let (id, existing) = events
                        .zip(found)
                        .find_map(|(e, f)| f.as_ref().map(|f| (e.id, f.position)))
                        .unwrap_or((e.id, 0));
                    return Err(conflict(id, existing));
                };
                k += 1;
                if *pl.stream != *p.stream {
                    return Err(conflict(e.id, pl.position));
                }
                let (v0, _) = *first.get_or_insert((pl.version, pl.position));
                if pl.version != v0 + i as u64 {
                    return Err(conflict(e.id, pl.position));
                }
                first_position = first_position.min(pl.position);
            }
            let (Some((v0, stored_at)), Some(e0)) = (first, p.events.first()) else {
                continue;
            };
            let expected_ok = match p.expected {
                ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
                ExpectedVersion::NoStream => v0 == 0,
                ExpectedVersion::Exact(v) => v.checked_add(1) == Some(v0),
            };
            if !expected_ok {
                let current = self.heads.get(&p.stream).map(|h| h.version);
                if p.expected.holds(current) {
                    return Err(conflict(e0.id, stored_at));
                }
                return Err(StoreError::WrongExpectedVersion {
                    stream: p.stream.clone(),
                    expected: p.expected,
                    current,
                });
            }
            streams.push((p.stream.clone(), v0, v0 + p.events.len() as u64 - 1));
        }
        Ok(Prepared::Repeat(AppendResult {
            first_position,
            streams,
            already_stored: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_durability_syncs_at_every_tick_that_finds_unsynced_frames() {
        let d = Durability::Interval(std::time::Duration::from_millis(100));
        // The timer ticks once per interval: each tick syncs what is unsynced, however
        // recently the last fdatasync ended (comparing against that end skipped every other
        // tick, making the interval twice as long).
        assert!(needs_sync(d, false, true, true));
        assert!(needs_sync(d, true, true, true));
        assert!(
            !needs_sync(d, true, false, true),
            "a group alone waits for the tick"
        );
        assert!(
            !needs_sync(d, false, true, false),
            "nothing written since the last one"
        );
        assert!(needs_sync(Durability::Always, true, false, true));
        assert!(!needs_sync(Durability::Always, false, true, false));
        assert!(!needs_sync(Durability::Never, true, true, true));
    }

    #[test]
    fn a_segment_map_gets_room_for_its_ids_up_front() {
        // The default 256 MiB segment: room for more ids than 256-byte events fill it with
        // (~820,000), so the writer never grows the map.
        let room = ids_room(orchestrix_log::segment::SEGMENT_SIZE_DEFAULT);
        assert!(room >= 820_000, "{room}");
        let map = presized(IdMap::default(), room);
        assert!(map.capacity() >= room);
        // Bounded for huge segments; ids already there are kept.
        assert_eq!(ids_room(u64::MAX), IDS_ROOM_MAX);
        let mut m = IdMap::default();
        m.insert([1; 16], 7);
        let m = presized(m, 100);
        assert_eq!(m.get(&[1; 16]), Some(7));
        assert!(m.capacity() >= 100);
    }
}
