//! Fault injection for tests: a countdown file layer and a power-loss simulator.
//!
//! Both implement [`Vfs`], so anything that takes an `Arc<dyn Vfs>` (the log's
//! [`crate::open`], the engine's snapshot store) runs on them unchanged. They are compiled in
//! every build, not just under `cfg(test)`, because other crates' integration tests use them.
//!
//! - [`FaultyFs`] wraps another [`Vfs`] and fails the N-th counted operation with `EIO` or
//!   `ENOSPC`, once (transient) or from then on (sticky). A failing `write_all_at` can first
//!   write the first half of its buffer, as a short write does on a real disk.
//! - [`SimFs`] is an in-memory file system that keeps, for every file, a *live* image (what
//!   reads see) and a *durable* image (what survives a power loss). [`SimFs::crash`] builds the
//!   file system a machine would find after losing power: the durable state plus a seeded,
//!   reproducible choice for every write and directory entry that was not yet synced.
//!
//! Wrapping a [`SimFs`] in a sticky [`FaultyFs`] armed at operation N is how a test cuts the
//! power exactly before operation N: that operation and everything after it never reach the
//! simulator, and [`SimFs::crash`] then decides the fate of everything unsynced before it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{VFile, Vfs};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock (a failed assertion in a test thread) must not hide the
    // state from the rest of the test.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A small, fast, seeded pseudo-random generator (SplitMix64), so that every simulated failure
/// reproduces from its seed. Not for anything but tests.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0). The tiny modulo bias does not matter for tests.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// FaultyFs
// ---------------------------------------------------------------------------------------------

/// The error a [`FaultyFs`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `EIO` (5): the device failed the write or the flush.
    Eio,
    /// `ENOSPC` (28): the file system is full.
    Enospc,
}

impl FaultKind {
    /// The raw OS error number.
    pub fn errno(self) -> i32 {
        match self {
            FaultKind::Eio => 5,
            FaultKind::Enospc => 28,
        }
    }

    /// The injected error.
    pub fn to_io_error(self) -> io::Error {
        io::Error::from_raw_os_error(self.errno())
    }
}

/// The operations a [`FaultyFs`] counts (and can fail). Reads, `len`, `open`, `list`,
/// `exists` and `create_dir_all` are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// [`VFile::write_all_at`].
    WriteAllAt,
    /// [`VFile::set_len`].
    SetLen,
    /// [`VFile::sync_data`].
    SyncData,
    /// [`Vfs::create_new`].
    CreateNew,
    /// [`Vfs::create`].
    Create,
    /// [`Vfs::rename`].
    Rename,
    /// [`Vfs::remove`].
    Remove,
    /// [`Vfs::sync_dir`].
    SyncDir,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    at: u64,
    kind: FaultKind,
    sticky: bool,
}

#[derive(Debug, Default)]
struct FaultState {
    ops: Vec<OpKind>,
    plan: Option<Plan>,
    partial_writes: bool,
    failures: u64,
}

impl FaultState {
    /// Counts one operation and says whether (and how) it must fail.
    fn count(&mut self, op: OpKind) -> Option<FaultKind> {
        let index = self.ops.len() as u64;
        self.ops.push(op);
        let plan = self.plan?;
        let fails = if plan.sticky {
            index >= plan.at
        } else {
            index == plan.at
        };
        if fails {
            self.failures += 1;
            Some(plan.kind)
        } else {
            None
        }
    }
}

/// A [`Vfs`] that counts mutating operations and fails a chosen one.
///
/// Operations are numbered from 0 in the order they reach this file system (all files opened
/// through it share one counter). After [`FaultyFs::arm`]`(n, kind, sticky)`, operation number
/// `n` fails with `kind` (and, if `sticky`, so does every later counted operation). A failing
/// operation does not reach the inner file system, except that with
/// [`FaultyFs::set_partial_writes`] a failing `write_all_at` first writes the first
/// `len / 2` bytes of its buffer (deterministically), like a short write.
pub struct FaultyFs {
    inner: Arc<dyn Vfs>,
    state: Arc<Mutex<FaultState>>,
}

impl FaultyFs {
    /// Wraps `inner`, unarmed.
    pub fn new(inner: Arc<dyn Vfs>) -> Self {
        FaultyFs {
            inner,
            state: Arc::new(Mutex::new(FaultState::default())),
        }
    }

    /// How many counted operations have been attempted so far (failed ones included).
    pub fn ops_so_far(&self) -> u64 {
        lock(&self.state).ops.len() as u64
    }

    /// The kinds of the counted operations so far, in order (for diagnostics).
    pub fn op_kinds(&self) -> Vec<OpKind> {
        lock(&self.state).ops.clone()
    }

    /// How many operations were failed so far.
    pub fn failures(&self) -> u64 {
        lock(&self.state).failures
    }

    /// Fails operation number `n` (counted from 0 since this file system was created) with
    /// `kind`; if `sticky`, every later counted operation fails too.
    pub fn arm(&self, n: u64, kind: FaultKind, sticky: bool) {
        lock(&self.state).plan = Some(Plan {
            at: n,
            kind,
            sticky,
        });
    }

    /// Stops injecting failures.
    pub fn disarm(&self) {
        lock(&self.state).plan = None;
    }

    /// Whether a failing `write_all_at` first writes the first half of its buffer.
    pub fn set_partial_writes(&self, on: bool) {
        lock(&self.state).partial_writes = on;
    }

    fn check(&self, op: OpKind) -> io::Result<()> {
        match lock(&self.state).count(op) {
            Some(kind) => Err(kind.to_io_error()),
            None => Ok(()),
        }
    }

    fn wrap(&self, file: Arc<dyn VFile>) -> Arc<dyn VFile> {
        Arc::new(FaultyFile {
            inner: file,
            state: self.state.clone(),
        })
    }
}

struct FaultyFile {
    inner: Arc<dyn VFile>,
    state: Arc<Mutex<FaultState>>,
}

impl FaultyFile {
    fn check(&self, op: OpKind) -> io::Result<()> {
        match lock(&self.state).count(op) {
            Some(kind) => Err(kind.to_io_error()),
            None => Ok(()),
        }
    }
}

impl VFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let (fault, partial) = {
            let mut s = lock(&self.state);
            (s.count(OpKind::WriteAllAt), s.partial_writes)
        };
        match fault {
            None => self.inner.write_all_at(buf, offset),
            Some(kind) => {
                if partial {
                    if let Some(prefix) = buf.get(..buf.len() / 2) {
                        if !prefix.is_empty() {
                            // The short write's own outcome does not matter: the caller sees
                            // the injected error either way.
                            let _ = self.inner.write_all_at(prefix, offset);
                        }
                    }
                }
                Err(kind.to_io_error())
            }
        }
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check(OpKind::SetLen)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.check(OpKind::SyncData)?;
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl Vfs for FaultyFs {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(self.inner.open(path)?))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        self.check(OpKind::CreateNew)?;
        Ok(self.wrap(self.inner.create_new(path)?))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        self.check(OpKind::Create)?;
        Ok(self.wrap(self.inner.create(path)?))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(OpKind::Rename)?;
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check(OpKind::Remove)?;
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(OpKind::SyncDir)?;
        self.inner.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn boot_id(&self) -> String {
        self.inner.boot_id()
    }
}

// ---------------------------------------------------------------------------------------------
// RecordingFs
// ---------------------------------------------------------------------------------------------

/// A directory operation seen by a [`RecordingFs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirCall {
    /// `create_dir_all(path)`.
    CreateDirAll(PathBuf),
    /// `sync_dir(path)`.
    SyncDir(PathBuf),
    /// `create_new(path)` (a new file's entry in its directory).
    CreateNew(PathBuf),
}

/// A [`Vfs`] that passes everything to `inner` and records the calls that change or sync
/// directories, in order: for tests of what is made durable where (power loss of directory
/// entries themselves is not simulated by [`SimFs`]).
pub struct RecordingFs {
    inner: Arc<dyn Vfs>,
    calls: Mutex<Vec<DirCall>>,
}

impl RecordingFs {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Vfs>) -> Self {
        RecordingFs {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The calls recorded since the last `take_calls`.
    pub fn take_calls(&self) -> Vec<DirCall> {
        std::mem::take(&mut *lock(&self.calls))
    }

    fn record(&self, c: DirCall) {
        lock(&self.calls).push(c);
    }
}

impl Vfs for RecordingFs {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        self.inner.open(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        self.record(DirCall::CreateNew(path.to_path_buf()));
        self.inner.create_new(path)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        self.inner.create(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.record(DirCall::SyncDir(dir.to_path_buf()));
        self.inner.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.record(DirCall::CreateDirAll(dir.to_path_buf()));
        self.inner.create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn boot_id(&self) -> String {
        self.inner.boot_id()
    }
}

// ---------------------------------------------------------------------------------------------
// SimFs
// ---------------------------------------------------------------------------------------------

/// An unsynced change to a file's data.
#[derive(Debug, Clone)]
enum DataOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// One file's contents (an inode: it outlives its names while handles are open).
#[derive(Debug, Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Changes since the last `sync_data`, oldest first.
    pending: Vec<DataOp>,
}

/// An unsynced change to a directory; `dir` is the directory whose `sync_dir` makes it durable.
#[derive(Debug, Clone)]
struct DirOp {
    dir: PathBuf,
    change: DirChange,
}

#[derive(Debug, Clone)]
enum DirChange {
    Link {
        path: PathBuf,
        ino: usize,
    },
    Unlink {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        ino: usize,
    },
}

#[derive(Debug, Clone, Default)]
struct SimState {
    inodes: Vec<Inode>,
    /// Names as reads and lists see them.
    live_names: BTreeMap<PathBuf, usize>,
    /// Names that survive a power loss.
    durable_names: BTreeMap<PathBuf, usize>,
    /// Directory changes since the last `sync_dir` of their directory, oldest first.
    pending_dir_ops: Vec<DirOp>,
    /// Directories exist in both images from the moment they are created.
    dirs: BTreeSet<PathBuf>,
    /// `sync_data` calls to let through before one fails (see [`SimFs::fail_sync`]).
    sync_failure_in: Option<u64>,
    /// Power losses this file system went through: its boot number ([`Vfs::boot_id`]).
    boots: u64,
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn apply_data_op(image: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { offset, bytes } => write_into(image, *offset, bytes),
        DataOp::SetLen(len) => image.resize(*len as usize, 0),
    }
}

fn write_into(image: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = offset as usize;
    let end = start + bytes.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    if let Some(dst) = image.get_mut(start..end) {
        dst.copy_from_slice(bytes);
    }
}

fn apply_dir_change(names: &mut BTreeMap<PathBuf, usize>, change: &DirChange) {
    match change {
        DirChange::Link { path, ino } => {
            names.insert(path.clone(), *ino);
        }
        DirChange::Unlink { path } => {
            names.remove(path);
        }
        DirChange::Rename { from, to, ino } => {
            names.remove(from);
            names.insert(to.clone(), *ino);
        }
    }
}

/// A power-loss simulator: an in-memory [`Vfs`] with a live and a durable image.
///
/// The model, kept deliberately small:
/// - Every file has a live image (what reads see) and a durable image. `write_all_at` and
///   `set_len` change the live image and are remembered, in order, as pending changes of
///   that file. `sync_data` applies the pending changes to the durable image (which makes it
///   the live image) and forgets them; [`SimFs::lose_unsynced`] forgets them without.
/// - Creating, renaming and removing a file change the live directory and are remembered as
///   pending changes of the parent directory (a rename across directories counts as a link in
///   the target and an unlink in the source). `sync_dir` makes the live entries of that
///   directory durable. File data and directory entries are independent: a synced file whose
///   entry was never synced can vanish, and a durable entry can point at a file with no
///   durable data.
/// - Directories themselves are durable as soon as `create_dir_all` returns (the log does not
///   test directory creation under power loss).
/// - [`SimFs::crash`] starts from the durable state and, with a generator seeded by its
///   argument, decides for each pending data change, in order: a write lands whole, is
///   dropped, or is torn (a random prefix lands, sometimes followed by random garbage over
///   part of the rest of its range); a `set_len` lands or is dropped. Each pending directory
///   change is independently kept or dropped. The result has no pending changes: after a
///   power loss, what is on the disk is what there is.
///
/// Handles opened before a crash keep referring to the old file system, like file descriptors
/// of a process that died with the machine.
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

impl Default for SimFs {
    fn default() -> Self {
        SimFs::new()
    }
}

impl SimFs {
    /// An empty file system with only the root directory.
    pub fn new() -> Self {
        let mut state = SimState::default();
        state.dirs.insert(PathBuf::from("/"));
        state.dirs.insert(PathBuf::new());
        state.dirs.insert(PathBuf::from("."));
        SimFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The file system found after a power loss at this moment, with every unsynced change
    /// landed, dropped or torn as decided by `seed`. `self` is not changed, so the same crash
    /// can be taken again with the same or another seed.
    pub fn crash(&self, seed: u64) -> SimFs {
        let s = lock(&self.state);
        let mut rng = SplitMix64::new(seed);

        let mut names = s.durable_names.clone();
        for op in &s.pending_dir_ops {
            if rng.chance(1, 2) {
                apply_dir_change(&mut names, &op.change);
            }
        }

        // Only files that still have a name survive; renumber them densely.
        let mut renumbered: BTreeMap<usize, usize> = BTreeMap::new();
        let mut inodes = Vec::new();
        for ino in names.values() {
            if renumbered.contains_key(ino) {
                continue;
            }
            let Some(old) = s.inodes.get(*ino) else {
                continue;
            };
            let image = crash_image(old, &mut rng);
            renumbered.insert(*ino, inodes.len());
            inodes.push(Inode {
                live: image.clone(),
                durable: image,
                pending: Vec::new(),
            });
        }
        let names: BTreeMap<PathBuf, usize> = names
            .into_iter()
            .filter_map(|(p, ino)| renumbered.get(&ino).map(|&n| (p, n)))
            .collect();

        SimFs {
            state: Arc::new(Mutex::new(SimState {
                inodes,
                live_names: names.clone(),
                durable_names: names,
                pending_dir_ops: Vec::new(),
                dirs: s.dirs.clone(),
                sync_failure_in: None,
                boots: s.boots + 1,
            })),
        }
    }

    /// An independent copy of this file system in its current state, unsynced changes
    /// included (so that the same experiment can be run on it several times). Handles opened
    /// on `self` do not see the copy.
    pub fn fork(&self) -> SimFs {
        let s = lock(&self.state).clone();
        SimFs {
            state: Arc::new(Mutex::new(s)),
        }
    }

    /// The live contents of a file (what a read sees now), if it exists.
    pub fn live_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let s = lock(&self.state);
        let ino = *s.live_names.get(path)?;
        s.inodes.get(ino).map(|i| i.live.clone())
    }

    /// The durable contents of a file reachable by a durable name, if any.
    pub fn durable_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let s = lock(&self.state);
        let ino = *s.durable_names.get(path)?;
        s.inodes.get(ino).map(|i| i.durable.clone())
    }

    /// Overwrites bytes of a file's live *and* durable image, as damage on the medium would
    /// (for corruption tests). Fails if the file does not exist.
    pub fn damage(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut s = lock(&self.state);
        let inode = live_inode(&mut s, path)?;
        write_into(&mut inode.live, offset, bytes);
        write_into(&mut inode.durable, offset, bytes);
        Ok(())
    }

    /// The kernel's writeback of a file's unsynced changes failed (fsyncgate): they never
    /// reach the disk, not even by a later successful `sync_data`, while reads keep seeing
    /// them (the pages stay cached, marked clean). Only writing the bytes again makes them
    /// durable. Fails if the file does not exist.
    pub fn lose_unsynced(&self, path: &Path) -> io::Result<()> {
        live_inode(&mut lock(&self.state), path)?.pending.clear();
        Ok(())
    }

    /// Lets `n` more `sync_data` calls through (on any file), then fails the next one with
    /// EIO the kernel's way: that file's unsynced changes are lost to the disk as by
    /// [`SimFs::lose_unsynced`]. Only that call fails.
    pub fn fail_sync(&self, n: u64) {
        lock(&self.state).sync_failure_in = Some(n);
    }

    /// Number of unsynced changes (file data and directory entries).
    pub fn pending_changes(&self) -> usize {
        let s = lock(&self.state);
        s.pending_dir_ops.len() + s.inodes.iter().map(|i| i.pending.len()).sum::<usize>()
    }

    fn handle(&self, ino: usize) -> Arc<dyn VFile> {
        Arc::new(SimFile {
            state: self.state.clone(),
            ino,
        })
    }

    fn link_new(s: &mut SimState, path: &Path) -> io::Result<usize> {
        let dir = parent_of(path);
        if !s.dirs.contains(&dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let ino = s.inodes.len();
        s.inodes.push(Inode::default());
        s.live_names.insert(path.to_path_buf(), ino);
        s.pending_dir_ops.push(DirOp {
            dir,
            change: DirChange::Link {
                path: path.to_path_buf(),
                ino,
            },
        });
        Ok(ino)
    }
}

/// The file a live name refers to.
fn live_inode<'a>(s: &'a mut SimState, path: &Path) -> io::Result<&'a mut Inode> {
    let ino = *s
        .live_names
        .get(path)
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    s.inodes
        .get_mut(ino)
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// The durable image of `inode` plus a seeded fate for each pending change.
fn crash_image(inode: &Inode, rng: &mut SplitMix64) -> Vec<u8> {
    let mut image = inode.durable.clone();
    for op in &inode.pending {
        match op {
            DataOp::Write { offset, bytes } => match rng.below(3) {
                0 => apply_data_op(&mut image, op),
                1 => {}
                _ => {
                    let len = bytes.len() as u64;
                    let kept = rng.below(len + 1) as usize;
                    let prefix = bytes.get(..kept).unwrap_or(&[]);
                    write_into(&mut image, *offset, prefix);
                    let rest = len - kept as u64;
                    if rest > 0 && rng.chance(1, 2) {
                        let mut garbage = vec![0u8; 1 + rng.below(rest) as usize];
                        rng.fill(&mut garbage);
                        write_into(&mut image, offset + kept as u64, &garbage);
                    }
                }
            },
            DataOp::SetLen(_) => {
                if rng.chance(1, 2) {
                    apply_data_op(&mut image, op);
                }
            }
        }
    }
    image
}

struct SimFile {
    state: Arc<Mutex<SimState>>,
    ino: usize,
}

impl SimFile {
    fn with_inode<T>(&self, f: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        let mut s = lock(&self.state);
        let inode = s
            .inodes
            .get_mut(self.ino)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(f(inode))
    }
}

impl VFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with_inode(|inode| {
            let start = (offset as usize).min(inode.live.len());
            let n = buf.len().min(inode.live.len() - start);
            if let (Some(dst), Some(src)) = (buf.get_mut(..n), inode.live.get(start..start + n)) {
                dst.copy_from_slice(src);
            }
            n
        })
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with_inode(|inode| {
            let op = DataOp::Write {
                offset,
                bytes: buf.to_vec(),
            };
            apply_data_op(&mut inode.live, &op);
            inode.pending.push(op);
        })
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_inode(|inode| {
            let op = DataOp::SetLen(len);
            apply_data_op(&mut inode.live, &op);
            inode.pending.push(op);
        })
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut s = lock(&self.state);
        let fails = match s.sync_failure_in {
            Some(0) => {
                s.sync_failure_in = None;
                true
            }
            Some(n) => {
                s.sync_failure_in = Some(n - 1);
                false
            }
            None => false,
        };
        let inode = s
            .inodes
            .get_mut(self.ino)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if fails {
            // The writeback failed: the changes never reach the disk (`SimFs::lose_unsynced`).
            inode.pending.clear();
            return Err(FaultKind::Eio.to_io_error());
        }
        // The pending changes reach the disk, not the live image as a whole: after
        // `SimFs::lose_unsynced` the two differ, as the kernel's cache and the disk do.
        for op in inode.pending.drain(..) {
            apply_data_op(&mut inode.durable, &op);
        }
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        self.with_inode(|inode| inode.live.len() as u64)
    }
}

impl Vfs for SimFs {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        let ino = *lock(&self.state)
            .live_names
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(self.handle(ino))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        let ino = {
            let mut s = lock(&self.state);
            if s.live_names.contains_key(path) || s.dirs.contains(path) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            SimFs::link_new(&mut s, path)?
        };
        Ok(self.handle(ino))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        let existing = lock(&self.state).live_names.get(path).copied();
        match existing {
            Some(ino) => {
                let file = self.handle(ino);
                file.set_len(0)?;
                Ok(file)
            }
            None => self.create_new(path),
        }
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = lock(&self.state);
        if !s.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let files = s.live_names.keys();
        let subdirs = s.dirs.iter();
        let mut names: Vec<String> = files
            .chain(subdirs)
            .filter(|p| p.as_path() != dir && p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        let ino = *s
            .live_names
            .get(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if from == to {
            return Ok(());
        }
        let (from_dir, to_dir) = (parent_of(from), parent_of(to));
        if !s.dirs.contains(&to_dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        s.live_names.remove(from);
        s.live_names.insert(to.to_path_buf(), ino);
        if from_dir == to_dir {
            s.pending_dir_ops.push(DirOp {
                dir: from_dir,
                change: DirChange::Rename {
                    from: from.to_path_buf(),
                    to: to.to_path_buf(),
                    ino,
                },
            });
        } else {
            s.pending_dir_ops.push(DirOp {
                dir: to_dir,
                change: DirChange::Link {
                    path: to.to_path_buf(),
                    ino,
                },
            });
            s.pending_dir_ops.push(DirOp {
                dir: from_dir,
                change: DirChange::Unlink {
                    path: from.to_path_buf(),
                },
            });
        }
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        if s.live_names.remove(path).is_none() {
            return Err(io::ErrorKind::NotFound.into());
        }
        s.pending_dir_ops.push(DirOp {
            dir: parent_of(path),
            change: DirChange::Unlink {
                path: path.to_path_buf(),
            },
        });
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        if !s.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        // The durable entries of `dir` become its live entries; other directories' pending
        // changes touch other names, so they are unaffected.
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        let live: Vec<(PathBuf, usize)> = s
            .live_names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.retain(|p, _| !in_dir(p));
        s.durable_names.extend(live);
        s.pending_dir_ops.retain(|op| op.dir != dir);
        Ok(())
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        for a in dir.ancestors() {
            if s.live_names.contains_key(a) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
        }
        for a in dir.ancestors() {
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }
    fn exists(&self, path: &Path) -> bool {
        let s = lock(&self.state);
        s.live_names.contains_key(path) || s.dirs.contains(path)
    }
    fn boot_id(&self) -> String {
        format!("simulated-boot-{}", lock(&self.state).boots)
    }
}

/// The last whole frame of a segment file's bytes: its offset and its bytes.
///
/// # Panics
/// When the segment holds no frame (a test helper).
pub fn last_frame(segment: &[u8]) -> (usize, Vec<u8>) {
    let mut at = crate::segment::SEGMENT_HEADER_SIZE;
    let mut last = None;
    while let Some(rest) = segment.get(at..) {
        let Ok((h, _)) = crate::frame::decode_frame(rest) else {
            break;
        };
        let len = h.frame_len() as usize;
        last = rest.get(..len).map(|f| (at, f.to_vec()));
        at += len;
    }
    last.expect("a frame")
}

/// Rewrites the frame at offset `at` of the segment file at `path`, CRC and all, with its
/// header saying `first_position` and (with `continues`) that its unit goes on in the next
/// frame: damage that only a check of positions or units can find.
///
/// # Panics
/// On any I/O error, or when no whole frame starts at `at` (a test helper).
pub fn reforge_frame(path: &Path, at: usize, first_position: u64, continues: bool) {
    let mut bytes = std::fs::read(path).expect("read the segment");
    let (h, payload) = crate::frame::decode_frame(&bytes[at..]).expect("a whole frame");
    let len = h.frame_len() as usize;
    let mut forged = Vec::new();
    crate::frame::encode_unit_frame_with(
        &mut forged,
        first_position,
        h.durable_position,
        h.event_count,
        continues,
        |o| {
            o.extend_from_slice(payload);
            Ok(())
        },
    )
    .expect("encode");
    assert_eq!(forged.len(), len);
    bytes[at..at + len].copy_from_slice(&forged);
    std::fs::write(path, &bytes).expect("write the segment");
}

/// Rewrites the last frame of the segment file at `path` to say that its unit goes on in the
/// next frame (what a unit cut at the end of a sealed segment looks like); returns the
/// frame's offset.
///
/// # Panics
/// On any I/O error, or when the last frame already says so (a test helper).
pub fn forge_unit_continues(path: &Path) -> usize {
    let (at, frame) = last_frame(&std::fs::read(path).expect("read the segment"));
    let (h, _) = crate::frame::decode_frame(&frame).expect("a whole frame");
    assert!(!h.continues, "the unit's last frame");
    reforge_frame(path, at, h.first_position, true);
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn setup() -> SimFs {
        let fs = SimFs::new();
        fs.create_dir_all(&p("/d")).unwrap();
        fs
    }

    #[test]
    fn synced_data_and_entries_survive_every_crash() {
        let fs = setup();
        let f = fs.create_new(&p("/d/a")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        assert_eq!(fs.pending_changes(), 0);
        for seed in 0..50 {
            let c = fs.crash(seed);
            assert_eq!(c.live_bytes(&p("/d/a")).unwrap(), b"hello");
        }
    }

    #[test]
    fn unsynced_write_lands_drops_or_tears() {
        let fs = setup();
        let f = fs.create_new(&p("/d/a")).unwrap();
        f.write_all_at(b"0123", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        f.write_all_at(b"abcdefgh", 4).unwrap();
        let (mut whole, mut none, mut torn) = (0, 0, 0);
        for seed in 0..300 {
            let got = fs.crash(seed).live_bytes(&p("/d/a")).unwrap();
            assert_eq!(&got[..4], b"0123", "synced bytes never change");
            match got.len() {
                4 => none += 1,
                12 if &got[4..] == b"abcdefgh" => whole += 1,
                _ => torn += 1,
            }
            assert!(got.len() <= 12);
        }
        assert!(whole > 0 && none > 0 && torn > 0, "{whole} {none} {torn}");
    }

    #[test]
    fn unsynced_entry_may_vanish_and_crash_is_deterministic() {
        let fs = setup();
        let f = fs.create_new(&p("/d/a")).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        let mut present = 0;
        for seed in 0..100 {
            let c = fs.crash(seed);
            let again = fs.crash(seed);
            assert_eq!(
                c.live_bytes(&p("/d/a")),
                again.live_bytes(&p("/d/a")),
                "same seed, same crash"
            );
            if let Some(b) = c.live_bytes(&p("/d/a")) {
                assert_eq!(b, b"x");
                present += 1;
            }
        }
        assert!(present > 0 && present < 100);
        assert_eq!(fs.list(&p("/d")).unwrap(), vec!["a".to_string()]);
    }

    #[test]
    fn rename_then_sync_dir_is_durable() {
        let fs = setup();
        let f = fs.create_new(&p("/d/tmp")).unwrap();
        f.write_all_at(b"v1", 0).unwrap();
        f.sync_data().unwrap();
        fs.rename(&p("/d/tmp"), &p("/d/final")).unwrap();
        assert!(!fs.exists(&p("/d/tmp")));
        fs.sync_dir(&p("/d")).unwrap();
        for seed in 0..20 {
            let c = fs.crash(seed);
            assert_eq!(c.live_bytes(&p("/d/final")).unwrap(), b"v1");
            assert!(c.live_bytes(&p("/d/tmp")).is_none());
        }
        fs.remove(&p("/d/final")).unwrap();
        assert!(fs.durable_bytes(&p("/d/final")).is_some());
        assert_eq!(f.len().unwrap(), 2, "an open handle outlives its name");
    }

    #[test]
    fn faulty_fs_counts_and_fails_the_nth_operation() {
        let sim: Arc<dyn Vfs> = Arc::new(setup());
        let fs = FaultyFs::new(sim.clone());
        let f = fs.create_new(&p("/d/a")).unwrap(); // op 0
        f.write_all_at(b"abcd", 0).unwrap(); // op 1
        let mut buf = [0u8; 4];
        f.read_exact_at(&mut buf, 0).unwrap(); // not counted
        assert_eq!(fs.ops_so_far(), 2);

        fs.arm(2, FaultKind::Enospc, false);
        fs.set_partial_writes(true);
        let e = f.write_all_at(b"WXYZ", 4).unwrap_err(); // op 2 fails, writes "WX"
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(f.len().unwrap(), 6);
        f.sync_data().unwrap(); // op 3: transient, so it succeeds

        fs.arm(5, FaultKind::Eio, true);
        fs.sync_dir(&p("/d")).unwrap(); // op 4
        assert_eq!(fs.sync_dir(&p("/d")).unwrap_err().raw_os_error(), Some(5));
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
        assert_eq!(fs.failures(), 3);
        fs.disarm();
        f.sync_data().unwrap();
        assert_eq!(fs.ops_so_far(), 8);
        assert_eq!(fs.op_kinds()[2], OpKind::WriteAllAt);
    }
}
