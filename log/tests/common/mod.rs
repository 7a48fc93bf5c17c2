//! Helpers shared by the crash-safety tests: deterministic payloads, appends, recovery with
//! the replayed frames collected, and checks of the "prefix holding every acknowledged frame"
//! promise.
#![allow(dead_code)]

use std::io;
use std::path::Path;
use std::sync::Arc;

use orchestrix_log::fs::{StdFs, VFile, Vfs};
use orchestrix_log::record::encode_payload;
use orchestrix_log::{
    open, EventRecord, FrameHeader, FrameLocation, LogConfig, LogError, LogReader, LogWriter,
    RecoveryReport,
};

/// The small-constants configuration: 4 KiB segments, so that every test rolls.
pub const SEGMENT_SIZE: u64 = 4096;

pub fn config() -> LogConfig {
    LogConfig {
        segment_size_bytes_max: SEGMENT_SIZE,
        ..LogConfig::default()
    }
}

/// One attempted append, as the test meant it: the frame must come back exactly like this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: u64,
    pub stream: String,
    pub events: Vec<EventRecord>,
    /// The encoded payload, as `encode_payload` produces it.
    pub payload: Vec<u8>,
}

impl Attempt {
    pub fn event_count(&self) -> u32 {
        self.events.len() as u32
    }
}

/// A deterministic event; `data_len` bytes of data derived from `id` and `index`.
pub fn event(id: u64, index: u32, data_len: usize) -> EventRecord {
    let mut uuid = [0u8; 16];
    uuid[..8].copy_from_slice(&id.to_le_bytes());
    uuid[8..12].copy_from_slice(&index.to_le_bytes());
    EventRecord {
        id: uuid,
        event_type: "E".into(),
        source: "t".into(),
        subject: None,
        time_unix_nanos: id as i64,
        data_content_type: None,
        data_schema: None,
        correlation_id: None,
        causation_id: None,
        metadata: Vec::new(),
        data: (0..data_len)
            .map(|i| {
                id.wrapping_mul(31)
                    .wrapping_add(u64::from(index) * 7 + i as u64) as u8
            })
            .collect(),
    }
}

/// An append of `event_count` events with `data_len` bytes of data each, identified by `id`.
pub fn attempt(id: u64, event_count: u32, data_len: usize) -> Attempt {
    let events: Vec<EventRecord> = (0..event_count).map(|i| event(id, i, data_len)).collect();
    let stream = format!("s{}", id % 3);
    let mut payload = Vec::new();
    encode_payload(
        &mut payload,
        std::iter::once((stream.as_str(), id, &events[..])),
    )
    .expect("encode payload");
    Attempt {
        id,
        stream,
        events,
        payload,
    }
}

/// Appends (buffers) one attempt.
pub fn append(writer: &mut LogWriter, a: &Attempt) -> Result<FrameLocation, LogError> {
    writer.append(a.event_count(), |out| {
        encode_payload(
            out,
            std::iter::once((a.stream.as_str(), a.id, &a.events[..])),
        )
    })
}

/// Appends one attempt and commits it durably: Ok means acknowledged.
pub fn append_commit(writer: &mut LogWriter, a: &Attempt) -> Result<FrameLocation, LogError> {
    let loc = append(writer, a)?;
    writer.commit(true)?;
    Ok(loc)
}

/// A frame as recovery or a scan returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub loc: FrameLocation,
    pub header: FrameHeader,
    pub payload: Vec<u8>,
}

pub struct Opened {
    pub reader: LogReader,
    pub writer: LogWriter,
    pub report: RecoveryReport,
    /// Every frame replayed by recovery (no checkpoint: the whole log), in order.
    pub frames: Vec<Found>,
}

/// Opens the log with no checkpoint and collects every replayed frame.
pub fn open_collect(vfs: Arc<dyn Vfs>, dir: &Path) -> Result<Opened, LogError> {
    let mut frames = Vec::new();
    let (reader, writer, report) = open(vfs, dir, config(), None, &mut |loc, header, payload| {
        frames.push(Found {
            loc,
            header: *header,
            payload: payload.to_vec(),
        });
        Ok(())
    })?;
    Ok(Opened {
        reader,
        writer,
        report,
        frames,
    })
}

/// Every committed frame, read with a scan from the start.
pub fn scan_all(reader: &LogReader) -> Vec<Found> {
    let mut out = Vec::new();
    let mut scanner = reader.scan();
    while let Some((loc, header, payload)) = scanner.next_frame().expect("scan") {
        out.push(Found {
            loc,
            header,
            payload: payload.to_vec(),
        });
    }
    out
}

/// Checks that `found` is a prefix of `attempted` (same payloads, counts and consecutive
/// positions starting at 0) holding at least the first `acked` attempts. Returns a description
/// of the first violation.
pub fn check_prefix(found: &[Found], attempted: &[Attempt], acked: usize) -> Result<(), String> {
    if found.len() < acked {
        return Err(format!(
            "only {} frames recovered but {acked} were acknowledged",
            found.len()
        ));
    }
    if found.len() > attempted.len() {
        return Err(format!(
            "{} frames recovered but only {} were attempted",
            found.len(),
            attempted.len()
        ));
    }
    let mut position = 0u64;
    for (i, (f, a)) in found.iter().zip(attempted).enumerate() {
        if f.header.first_position != position
            || f.header.event_count != a.event_count()
            || f.payload != a.payload
        {
            return Err(format!(
                "frame {i} differs from attempt {} (position {} expected {position}, {} events \
                 expected {})",
                a.id,
                f.header.first_position,
                f.header.event_count,
                a.event_count()
            ));
        }
        position += u64::from(a.event_count());
    }
    Ok(())
}

/// Checks the segment list of an opened log: names strictly increasing and each segment's
/// first position is where the frames before it end; only the last one may be empty.
pub fn check_segments(reader: &LogReader, frames: &[Found]) -> Result<(), String> {
    let segments = reader.segments();
    for w in segments.windows(2) {
        if w[0].first_position >= w[1].first_position {
            return Err(format!(
                "segments out of order: {} {}",
                w[0].name, w[1].name
            ));
        }
    }
    for (i, s) in segments.iter().enumerate() {
        let in_segment: Vec<&Found> = frames
            .iter()
            .filter(|f| f.loc.segment == s.first_position)
            .collect();
        match in_segment.first() {
            Some(f) if f.header.first_position != s.first_position => {
                return Err(format!("segment {} starts with a later frame", s.name))
            }
            None if i + 1 != segments.len() => {
                return Err(format!("sealed segment {} holds no frame", s.name))
            }
            _ => {}
        }
    }
    if frames
        .iter()
        .any(|f| !segments.iter().any(|s| s.first_position == f.loc.segment))
    {
        return Err("a frame lives in an unknown segment".into());
    }
    Ok(())
}

/// Copies every file of `from` into `to` (created if needed).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// The real file system with every file it opens passed through `wrap` (a test's own layer
/// over the file), and directories synced only if `sync_dirs`.
pub struct WrappedStdFs<W> {
    pub wrap: W,
    pub sync_dirs: bool,
}

impl<W> Vfs for WrappedStdFs<W>
where
    W: Fn(&Path, Arc<dyn VFile>) -> Arc<dyn VFile> + Send + Sync,
{
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok((self.wrap)(path, StdFs.open(path)?))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok((self.wrap)(path, StdFs.create_new(path)?))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok((self.wrap)(path, StdFs.create(path)?))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.sync_dirs {
            StdFs.sync_dir(dir)
        } else {
            Ok(())
        }
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        StdFs.exists(path)
    }
}

/// The real file system with `sync_data` and `sync_dir` turned into no-ops: for tests that
/// reopen in the same process (no power loss), where an fsync buys nothing but seconds.
pub fn no_sync_fs() -> Arc<dyn Vfs> {
    Arc::new(WrappedStdFs {
        wrap: |_: &Path, f: Arc<dyn VFile>| -> Arc<dyn VFile> { Arc::new(NoSyncFile(f)) },
        sync_dirs: false,
    })
}

struct NoSyncFile(Arc<dyn VFile>);

impl VFile for NoSyncFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
}

/// Splits `0..n` over the available cores and runs `f` on each chunk in its own thread.
pub fn parallel_chunks(n: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    let workers = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let chunk = n.div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        for w in 0..workers {
            let range = (w * chunk).min(n)..((w + 1) * chunk).min(n);
            let f = &f;
            scope.spawn(move || f(range));
        }
    });
}

/// What a workload run on a [`FaultyFs`] did.
pub struct FaultRun {
    /// Appends that returned Ok, in order (some may be unacknowledged).
    pub attempts: Vec<Attempt>,
    /// How many of them were acknowledged (a later `commit(true)` or `sync` returned Ok).
    pub acked: usize,
    /// The first error, from `open`, `append`, `commit` or `sync`.
    pub first_error: Option<LogError>,
}

/// Frames in the fault workloads.
pub const FAULT_WORKLOAD_FRAMES: u64 = 100;

/// A workload of appends and commits with rolls: most appends are committed with
/// `commit(true)`, some are batched with the next one, some are committed with
/// `commit(false)` and then made durable with `sync`. After the first error every call must
/// fail with `Poisoned` without touching the file system.
pub fn fault_workload(fs: &Arc<orchestrix_log::testing::FaultyFs>, dir: &Path) -> FaultRun {
    let mut run = FaultRun {
        attempts: Vec::new(),
        acked: 0,
        first_error: None,
    };
    let vfs: Arc<dyn Vfs> = fs.clone();
    let mut opened = match open_collect(vfs, dir) {
        Ok(o) => o,
        Err(e) => {
            run.first_error = Some(e);
            return run;
        }
    };
    assert!(opened.frames.is_empty());
    let mut ops_at_error = 0;
    let mut outcome = |run: &mut FaultRun,
                       r: Result<(), LogError>,
                       acks: bool,
                       fs: &orchestrix_log::testing::FaultyFs| {
        match (r, &run.first_error) {
            (Ok(()), None) => {
                if acks {
                    run.acked = run.attempts.len();
                }
            }
            (Err(e), None) => {
                ops_at_error = fs.ops_so_far();
                run.first_error = Some(e);
            }
            (Err(LogError::Poisoned), Some(_)) => {
                assert_eq!(fs.ops_so_far(), ops_at_error, "no I/O once latched");
            }
            (r, Some(first)) => panic!("after {first}, a call returned {r:?} instead of Poisoned"),
        }
    };
    for id in 0..FAULT_WORKLOAD_FRAMES {
        let a = attempt(id, 1 + (id % 3) as u32, 20 + (id as usize * 37) % 90);
        let r = append(&mut opened.writer, &a).map(|_| ());
        if r.is_ok() {
            run.attempts.push(a);
        }
        outcome(&mut run, r, false, fs);
        match id % 6 {
            // Batched with the next append.
            2 => {}
            // Written, then made durable separately.
            4 => {
                let r = opened.writer.commit(false);
                outcome(&mut run, r, false, fs);
                let r = opened.writer.sync();
                outcome(&mut run, r, true, fs);
            }
            _ => {
                let r = opened.writer.commit(true);
                outcome(&mut run, r, true, fs);
            }
        }
    }
    if run.first_error.is_some() {
        assert!(opened.writer.is_poisoned());
    }
    run
}

/// Runs the fault workload with the `n`-th operation failing and checks the run and the
/// reopened log: the first error is the injected one, nothing was acknowledged after it, and
/// the log reopened with the plain file system is a prefix of the attempts holding every
/// acknowledged one. Returns the run and the reopened log.
pub fn fault_case(
    dir: &Path,
    n: u64,
    kind: orchestrix_log::testing::FaultKind,
    sticky: bool,
    partial_writes: bool,
    total_ops: u64,
) -> (FaultRun, Opened) {
    use orchestrix_log::testing::FaultyFs;
    let what = format!("op {n} of {total_ops} failing ({kind:?}, sticky {sticky}, partial writes {partial_writes})");
    let fs = Arc::new(FaultyFs::new(no_sync_fs()));
    fs.arm(n, kind, sticky);
    fs.set_partial_writes(partial_writes);
    let run = fault_workload(&fs, dir);
    let op = fs.op_kinds().get(n as usize).copied();
    let what = format!("{what} [{op:?}]");
    match &run.first_error {
        Some(LogError::Io { source, .. }) => {
            assert_eq!(
                source.raw_os_error(),
                Some(kind.errno()),
                "{what}: {source}"
            )
        }
        Some(e) => panic!("{what}: first error is not the injected one: {e}"),
        None => panic!("{what}: the failure went unnoticed"),
    }
    // No I/O after the failure, but for the one file a failed fdatasync leaves for the next
    // open: created and written (or, under a sticky fault, failing to be created).
    use orchestrix_log::testing::OpKind;
    let kinds = fs.op_kinds();
    let after = kinds.get(n as usize + 1..).unwrap_or_default();
    let leaves_file = op == Some(OpKind::SyncData);
    let allowed: &[OpKind] = match (leaves_file, sticky) {
        (false, _) => &[],
        (true, true) => &[OpKind::Create],
        (true, false) => &[OpKind::Create, OpKind::WriteAllAt],
    };
    assert_eq!(after, allowed, "{what}: I/O after the first failure");
    let failures = 1 + u64::from(leaves_file && sticky);
    assert_eq!(fs.failures(), failures, "{what}: failures");

    let reopened =
        open_collect(Arc::new(StdFs), dir).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    check_prefix(&reopened.frames, &run.attempts, run.acked)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    check_segments(&reopened.reader, &reopened.frames).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(scan_all(&reopened.reader), reopened.frames, "{what}: scan");
    (run, reopened)
}

/// Counted operations of a clean run of the fault workload.
pub fn fault_workload_ops() -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = Arc::new(orchestrix_log::testing::FaultyFs::new(no_sync_fs()));
    let run = fault_workload(&fs, dir.path());
    assert!(run.first_error.is_none());
    assert_eq!(run.acked, FAULT_WORKLOAD_FRAMES as usize);
    let reopened = open_collect(no_sync_fs(), dir.path()).expect("reopen");
    let segments = reopened.reader.segments().len();
    assert!(segments >= 4, "the workload rolls: {segments} segments");
    eprintln!(
        "fault workload: {} counted operations, {segments} segments",
        fs.ops_so_far()
    );
    fs.ops_so_far()
}

/// Opens the log of `dir` (no fdatasyncs) from `checkpoint`, replaying nothing anywhere.
pub fn open_from(
    dir: &Path,
    checkpoint: orchestrix_log::Checkpoint,
) -> Result<(LogReader, LogWriter, orchestrix_log::RecoveryReport), LogError> {
    orchestrix_log::open(
        no_sync_fs(),
        dir,
        config(),
        Some(checkpoint),
        &mut |_, _, _| Ok(()),
    )
}

/// Opens a new log in `dir` (no fdatasyncs) and appends `attempt(id)` for id 0, 1, ... until
/// it has `segments` segments; returns the open log and what was appended.
pub fn log_of_segments(
    dir: &Path,
    segments: usize,
    mut attempt: impl FnMut(u64) -> Attempt,
) -> (Opened, Vec<Attempt>) {
    let mut opened = open_collect(no_sync_fs(), dir).expect("open a new log");
    let mut attempts = Vec::new();
    for id in 0.. {
        if opened.reader.segments().len() == segments {
            break;
        }
        let a = attempt(id);
        append_commit(&mut opened.writer, &a).expect("append");
        attempts.push(a);
    }
    (opened, attempts)
}
