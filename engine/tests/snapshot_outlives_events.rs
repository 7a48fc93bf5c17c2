//! A snapshot never outlives the events it reflects, and is never trusted past its stream's
//! head.
//!
//! Under relaxed durability (`Never`, `Interval`) appends are acknowledged before they are
//! durable, while a snapshot file is synced when saved: a power loss could keep a snapshot of
//! version 9 and lose the events up to it, and new events would then take versions the
//! snapshot claims to cover. `save_snapshot` syncs the log first (`Store::sync`), so after a
//! simulated power loss the events are there whenever the snapshot is; `load_snapshot`
//! ignores a snapshot past the head (one copied from another store, say); and a snapshot past
//! the head cannot be saved.

mod common;

use std::sync::Arc;

use common::deposit;

use orchestrix::snapshot::Snapshot;
use orchestrix::{Durability, Options, Store, StoreError};
use orchestrix_log::testing::SimFs;

fn snapshot(version: u64) -> Snapshot {
    Snapshot {
        stream: "acct".into(),
        version,
        aggregate_type: "Account".into(),
        state: format!("balance after {version}").into_bytes(),
    }
}

#[test]
fn a_saved_snapshot_keeps_its_events_through_a_power_loss() {
    let opts = Options {
        durability: Durability::Never,
        ..Options::test()
    };
    for seed in 0..8 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let sim = Arc::new(SimFs::new());
        let (store, _) = Store::open_with_vfs(&dir, opts.clone(), sim.clone()).unwrap();
        for n in 0..10 {
            deposit(&store, n as i64);
        }
        store.save_snapshot(&snapshot(9)).unwrap();
        // Acknowledged but never synced: these may go.
        for n in 10..13 {
            deposit(&store, n as i64);
        }
        let crashed = sim.crash(seed);
        store.close().unwrap();
        drop(store);
        // The index and its files live on the real file system, which did not lose power:
        // they are derived data, dropped here as the crash would have left them behind the
        // log, and rebuilt by the next open.
        std::fs::remove_file(dir.join("index.redb")).unwrap();
        std::fs::remove_dir_all(dir.join("ids")).unwrap();
        std::fs::remove_dir_all(dir.join("streams")).unwrap();
        let (store, _) = Store::open_with_vfs(&dir, opts.clone(), Arc::new(crashed)).unwrap();
        let head = store.stream_head("acct").unwrap();
        assert!(
            head.is_some_and(|h| h >= 9),
            "seed {seed}: the snapshot's events were lost (head {head:?})"
        );
        let loaded = store.load_snapshot("acct").unwrap();
        assert_eq!(loaded, Some(snapshot(9)), "seed {seed}");
        store.close().unwrap();
    }
}

#[test]
fn snapshots_past_the_head_are_neither_saved_nor_loaded() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let store = Store::open_with(a.path(), Options::test()).unwrap();
    match store.save_snapshot(&snapshot(0)) {
        Err(StoreError::InvalidInput(why)) => assert!(why.contains("no events"), "{why}"),
        other => panic!("a snapshot of a stream without events: {other:?}"),
    }
    for n in 0..10 {
        deposit(&store, n as i64);
    }
    assert!(matches!(
        store.save_snapshot(&snapshot(10)),
        Err(StoreError::InvalidInput(_))
    ));
    store.save_snapshot(&snapshot(9)).unwrap();
    assert_eq!(store.load_snapshot("acct").unwrap(), Some(snapshot(9)));
    store.close().unwrap();
    drop(store);

    // The snapshot files copied into a store whose stream is shorter.
    let other = Store::open_with(b.path(), Options::test()).unwrap();
    for n in 0..3 {
        deposit(&other, n as i64);
    }
    other.close().unwrap();
    drop(other);
    for f in std::fs::read_dir(a.path().join("snapshots")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), b.path().join("snapshots").join(f.file_name())).unwrap();
    }
    let other = Store::open_with(b.path(), Options::test()).unwrap();
    assert_eq!(other.stream_head("acct").unwrap(), Some(2));
    assert_eq!(
        other.load_snapshot("acct").unwrap(),
        None,
        "a snapshot past the head is ignored"
    );
}
