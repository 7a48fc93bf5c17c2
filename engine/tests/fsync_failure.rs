//! Pins "fsync / write fails" and "disk full" of RELIABILITY.md at the engine level: a
//! ~50-append workload over 4 KiB segments runs on a countdown file layer
//! (`orchestrix_log::testing::FaultyFs`) armed at every operation index, with EIO and ENOSPC,
//! transient and sticky. Every append that returned Ok must be present (same id, stream,
//! version, position) after reopening with the real file system; after the first failed append
//! every later one must fail too (the store is latched: Poisoned or the I/O error); nothing
//! that is not from an attempted append appears; reopen succeeds and `verify()` passes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store, StoreError};
use orchestrix_log::fs::{StdFs, Vfs};
use orchestrix_log::testing::{FaultKind, FaultyFs};
use orchestrix_log::LogError;
use uuid::Uuid;

const APPENDS: usize = 50;

/// A scratch directory, on tmpfs when there is one: the faults come from the countdown file
/// layer, not the disk, and real fsyncs would make the sweep take minutes.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

/// The deterministic workload: append `k` goes to stream `s{k % 3}` with `1 + k % 3` events,
/// some large enough that segments roll every few appends.
fn batch(k: usize) -> (String, Vec<EventData>) {
    let events = (0..1 + k % 3)
        .map(|i| {
            let size = if k.is_multiple_of(5) { 900 } else { 40 };
            EventData::new("E", vec![b'a' + (i as u8); size])
        })
        .collect();
    (format!("s{}", k % 3), events)
}

struct Outcome {
    /// position -> (stream, version, id) of acknowledged events.
    acked: HashMap<u64, (String, u64, Uuid)>,
    /// Every id ever attempted.
    attempted: HashMap<Uuid, ()>,
    failed: bool,
}

fn run_workload(store: &Store) -> Outcome {
    let mut out = Outcome {
        acked: HashMap::new(),
        attempted: HashMap::new(),
        failed: false,
    };
    for k in 0..APPENDS {
        let (stream, events) = batch(k);
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        for id in &ids {
            out.attempted.insert(*id, ());
        }
        match store.append(&stream, ExpectedVersion::Any, events) {
            Ok(r) => {
                assert!(
                    !out.failed,
                    "append {k} acknowledged after an earlier failure"
                );
                let (s, v0, v1) = r.streams[0].clone();
                assert_eq!(v1 - v0 + 1, ids.len() as u64);
                for (i, id) in ids.iter().enumerate() {
                    out.acked
                        .insert(r.first_position + i as u64, (s.clone(), v0 + i as u64, *id));
                }
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        StoreError::Poisoned | StoreError::Io { .. } | StoreError::Index(_)
                    ) || matches!(&e, StoreError::Log(l) if !matches!(l, LogError::Poisoned)),
                    "append {k}: unexpected error {e:?}"
                );
                out.failed = true;
            }
        }
    }
    out
}

fn check_after_reopen(dir: &Path, out: &Outcome, what: &str) {
    let store = Store::open_with(dir, Options::test())
        .unwrap_or_else(|e| panic!("{what}: reopen with StdFs failed: {e}"));
    let all = store
        .read_all(0, Direction::Forwards, usize::MAX, &ReadFilter::all())
        .unwrap();
    let mut heads: HashMap<String, u64> = HashMap::new();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64, "{what}: position gap");
        let next = heads.entry(e.stream().to_string()).or_insert(0);
        assert_eq!(e.version, *next, "{what}: version gap in {}", e.stream());
        *next += 1;
        assert!(
            out.attempted.contains_key(&e.id),
            "{what}: event {} at {} was never appended",
            e.id,
            e.position
        );
    }
    for (pos, (s, v, id)) in &out.acked {
        let e = all
            .get(*pos as usize)
            .unwrap_or_else(|| panic!("{what}: acknowledged position {pos} lost"));
        assert_eq!(
            (e.stream(), e.version, e.id),
            (s.as_str(), *v, *id),
            "{what}: at {pos}"
        );
    }
    assert_eq!(store.verify().unwrap(), all.len() as u64, "{what}: verify");
    // And the store is writable again.
    let r = store
        .append(
            "after",
            ExpectedVersion::Any,
            vec![EventData::new("A", b"x".to_vec())],
        )
        .unwrap_or_else(|e| panic!("{what}: append after reopen failed: {e}"));
    assert_eq!(r.first_position, all.len() as u64);
    store.close().unwrap();
}

/// Counted operations of the whole workload (open included) without faults.
fn ops_of_workload() -> u64 {
    let dir = scratch_dir();
    let fs = Arc::new(FaultyFs::new(Arc::new(StdFs)));
    let vfs: Arc<dyn Vfs> = fs.clone();
    let (store, _) = Store::open_with_vfs(dir.path(), Options::test(), vfs).unwrap();
    let out = run_workload(&store);
    assert!(!out.failed);
    store.close().unwrap();
    drop(store);
    fs.ops_so_far()
}

fn sweep(kind: FaultKind, sticky: bool) {
    let total = ops_of_workload();
    assert!(total > 60, "workload too small: {total} ops");
    eprintln!("{kind:?} sticky={sticky}: {total} operations");
    let mut injected = 0;
    for n in 0..total {
        let what = format!("{kind:?} sticky={sticky} at op {n}");
        let dir = scratch_dir();
        let fs = Arc::new(FaultyFs::new(Arc::new(StdFs)));
        fs.arm(n, kind, sticky);
        let vfs: Arc<dyn Vfs> = fs.clone();
        let out = match Store::open_with_vfs(dir.path(), Options::test(), vfs) {
            Ok((store, _)) => {
                let out = run_workload(&store);
                // A failed operation during the workload must surface as a failed append.
                assert!(
                    fs.failures() == 0 || out.failed,
                    "{what}: an I/O failure was swallowed"
                );
                let _ = store.close();
                drop(store);
                out
            }
            Err(_) => Outcome {
                acked: HashMap::new(),
                attempted: HashMap::new(),
                failed: true,
            },
        };
        if fs.failures() > 0 {
            injected += 1;
        }
        check_after_reopen(dir.path(), &out, &what);
    }
    assert!(
        injected as u64 >= total / 2,
        "faults rarely reached: {injected}/{total}"
    );
}

#[test]
fn eio_transient() {
    sweep(FaultKind::Eio, false);
}

#[test]
fn eio_sticky() {
    sweep(FaultKind::Eio, true);
}

#[test]
fn enospc_transient() {
    sweep(FaultKind::Enospc, false);
}

#[test]
fn enospc_sticky() {
    sweep(FaultKind::Enospc, true);
}
