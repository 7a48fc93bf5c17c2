//! Damaged, hostile and half-written snapshot files must never reach the caller.
//!
//! A snapshot is only a cache of the log, so the store's contract on damage is simple: a load of
//! a damaged file returns `Ok(None)` (the caller replays the stream) rather than a wrong
//! snapshot, a panic, or an error that would block the aggregate. These tests pin that for every
//! possible truncation and every possible single-bit flip of a real file, check that hostile
//! stream ids cannot name a path outside the snapshot directory, and inject `EIO` into each step
//! of the save protocol (write, `sync_data`, rename, directory sync) to show that a failed save
//! leaves the previous snapshot (or none) in place, never a torn file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orchestrix::snapshot::{decode_snapshot_file, Snapshot, SnapshotError, SnapshotStore};
use orchestrix_log::fs::{StdFs, VFile, Vfs};

fn open_store(root: &Path, vfs: Arc<dyn Vfs>) -> SnapshotStore {
    SnapshotStore::open(vfs, root.join("snapshots")).expect("open snapshot store")
}

fn snapshot(stream: &str, version: u64, state: &[u8]) -> Snapshot {
    Snapshot {
        stream: stream.to_owned(),
        version,
        aggregate_type: "Account".to_owned(),
        state: state.to_vec(),
    }
}

/// Writes `bytes` over the snapshot file of `stream` and asserts that loading it yields `Ok(None)`.
fn assert_ignored(store: &SnapshotStore, stream: &str, bytes: &[u8], what: &str) {
    let path = store.path_for(stream);
    std::fs::write(&path, bytes).expect("write damaged file");
    assert!(
        decode_snapshot_file(bytes).is_err(),
        "{what}: decoder accepted damaged bytes"
    );
    match store.load(stream) {
        Ok(None) => {}
        other => panic!("{what}: expected Ok(None), got {other:?}"),
    }
}

#[test]
fn every_truncation_is_ignored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path(), Arc::new(StdFs));
    let original = snapshot("account-7", 3, b"{\"balance\":120,\"owner\":\"ana\"}");
    store.save(&original).expect("save");
    let bytes = std::fs::read(store.path_for("account-7")).expect("read file");
    assert_eq!(store.load("account-7").expect("load"), Some(original));

    for len in 0..bytes.len() {
        assert_ignored(
            &store,
            "account-7",
            &bytes[..len],
            &format!("truncated to {len} of {} bytes", bytes.len()),
        );
    }
}

#[test]
fn every_bit_flip_is_ignored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path(), Arc::new(StdFs));
    let original = snapshot("account-7", 3, b"{\"balance\":120,\"owner\":\"ana\"}");
    store.save(&original).expect("save");
    let bytes = std::fs::read(store.path_for("account-7")).expect("read file");

    let mut damaged = bytes.clone();
    for byte in 0..bytes.len() {
        for bit in 0..8 {
            damaged[byte] ^= 1 << bit;
            assert_ignored(
                &store,
                "account-7",
                &damaged,
                &format!("bit {bit} of byte {byte} flipped"),
            );
            damaged[byte] ^= 1 << bit;
        }
    }
    assert_eq!(damaged, bytes);
}

#[test]
fn hostile_stream_ids_stay_inside_the_snapshot_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path(), Arc::new(StdFs));
    let hostile = [
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        ".",
        "a/../../b",
        "C:\\Windows\\x",
        "nul\0byte",
        "",
    ];

    for (version, stream) in hostile.iter().enumerate() {
        let path = store.path_for(stream);
        assert_eq!(
            path.parent(),
            Some(store.dir()),
            "{stream:?} maps to {}",
            path.display()
        );
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name");
        let stem = name.strip_suffix(".snap").expect(".snap extension");
        assert_eq!(stem.len(), 32, "{name}");
        assert!(stem.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        store
            .save(&snapshot(stream, version as u64, stream.as_bytes()))
            .expect("save");
    }
    for (version, stream) in hostile.iter().enumerate() {
        assert_eq!(
            store.load(stream).expect("load"),
            Some(snapshot(stream, version as u64, stream.as_bytes()))
        );
    }

    // Nothing was created outside the snapshot directory.
    let root: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("list root")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(root, vec![std::ffi::OsString::from("snapshots")]);
    let files = std::fs::read_dir(store.dir()).expect("list dir").count();
    assert_eq!(files, hostile.len());
}

/// The save step that [`FaultyFs`] fails with `EIO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Write,
    SyncData,
    Rename,
    SyncDir,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

/// The real file system, except that the step named by `fault` fails with `EIO`.
struct FaultyFs {
    fault: Mutex<Fault>,
}

impl FaultyFs {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            fault: Mutex::new(Fault::None),
        })
    }
    fn set(&self, fault: Fault) {
        *self.fault.lock().expect("fault lock") = fault;
    }
    fn get(&self) -> Fault {
        *self.fault.lock().expect("fault lock")
    }
    fn wrap(&self, file: Arc<dyn VFile>) -> Arc<dyn VFile> {
        Arc::new(FaultyFile {
            inner: file,
            fault: self.get(),
        })
    }
}

struct FaultyFile {
    inner: Arc<dyn VFile>,
    fault: Fault,
}

impl VFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.fault == Fault::Write {
            // Simulate a partial write before the error, the nastiest case.
            let half = buf.get(..buf.len() / 2).unwrap_or_default();
            self.inner.write_all_at(half, offset)?;
            return Err(eio());
        }
        self.inner.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.fault == Fault::SyncData {
            return Err(eio());
        }
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl Vfs for FaultyFs {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(StdFs.open(path)?))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(StdFs.create_new(path)?))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(StdFs.create(path)?))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.get() == Fault::Rename {
            return Err(eio());
        }
        StdFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.get() == Fault::SyncDir {
            return Err(eio());
        }
        StdFs.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        StdFs.exists(path)
    }
}

fn assert_eio(result: Result<(), SnapshotError>, fault: Fault) {
    match result {
        Err(SnapshotError::Io { source, .. }) if source.raw_os_error() == Some(5) => {}
        other => panic!("{fault:?}: expected an EIO error, got {other:?}"),
    }
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn failed_save_keeps_previous_snapshot() {
    for fault in [Fault::Write, Fault::SyncData, Fault::Rename] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vfs = FaultyFs::new();
        let store = open_store(tmp.path(), vfs.clone());
        let old = snapshot("account-1", 1, b"old state");
        store.save(&old).expect("save without faults");

        vfs.set(fault);
        assert_eio(store.save(&snapshot("account-1", 2, b"new state")), fault);
        vfs.set(Fault::None);

        assert_eq!(
            store.load("account-1").expect("load"),
            Some(old.clone()),
            "{fault:?}"
        );
        // The failed save cleaned up its temp file; only the previous snapshot remains.
        assert_eq!(
            snapshot_files(store.dir()),
            vec![store.path_for("account-1")],
            "{fault:?}"
        );
        // A reopened store sees the same.
        drop(store);
        let store = open_store(tmp.path(), vfs.clone());
        assert_eq!(
            store.load("account-1").expect("load after reopen"),
            Some(old),
            "{fault:?}"
        );
    }
}

#[test]
fn failed_first_save_leaves_no_snapshot() {
    for fault in [Fault::Write, Fault::SyncData, Fault::Rename] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vfs = FaultyFs::new();
        let store = open_store(tmp.path(), vfs.clone());

        vfs.set(fault);
        assert_eio(store.save(&snapshot("account-1", 1, b"state")), fault);
        vfs.set(Fault::None);

        assert_eq!(store.load("account-1").expect("load"), None, "{fault:?}");
        assert!(snapshot_files(store.dir()).is_empty(), "{fault:?}");
    }
}

#[test]
fn failed_dir_sync_leaves_old_or_new_never_torn() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let vfs = FaultyFs::new();
    let store = open_store(tmp.path(), vfs.clone());
    let old = snapshot("account-1", 1, b"old state");
    let new = snapshot("account-1", 2, b"new state");
    store.save(&old).expect("save without faults");

    vfs.set(Fault::SyncDir);
    assert_eio(store.save(&new), Fault::SyncDir);
    vfs.set(Fault::None);

    // The rename happened but may not be durable: either complete version is acceptable.
    let loaded = store.load("account-1").expect("load");
    assert!(loaded == Some(old) || loaded == Some(new), "got {loaded:?}");
}

#[test]
fn torn_temp_file_from_a_crash_is_never_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(tmp.path(), Arc::new(StdFs));
    let old = snapshot("account-1", 1, b"old state");
    store.save(&old).expect("save");

    // A crash between "write temp" and "rename" leaves a torn temp file beside the real one.
    let final_path = store.path_for("account-1");
    let mut temp_name = final_path.file_name().expect("file name").to_os_string();
    temp_name.push(".tmp");
    let temp_path = final_path.with_file_name(temp_name);
    std::fs::write(&temp_path, b"\x89OXS\r\n\x1a\ntorn").expect("write torn temp");

    assert_eq!(store.load("account-1").expect("load"), Some(old.clone()));
    drop(store);
    let store = open_store(tmp.path(), Arc::new(StdFs));
    assert!(!temp_path.exists(), "open removes stale temp files");
    assert_eq!(store.load("account-1").expect("load"), Some(old));
}
