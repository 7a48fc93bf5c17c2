//! A snapshot names the event at its version, and the store trusts it only while that event
//! is the one at that version. The documented way to open a log restored from an older copy
//! (delete `index.redb`, reopen) keeps the snapshot directory: a snapshot taken against the
//! newer history was trusted once the restored stream grew other events to its version.

mod common;

use std::path::Path;

use common::deposit;

use orchestrix::snapshot::Snapshot;
use orchestrix::Store;

fn snap(version: u64, state: &str) -> Snapshot {
    Snapshot {
        stream: "acct".to_owned(),
        version,
        aggregate_type: "Account".to_owned(),
        state: state.as_bytes().to_vec(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_snapshot_of_events_a_restore_replaced_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let d = tmp.path();
    {
        let store = Store::open(d).unwrap();
        for _ in 0..4 {
            deposit(&store, 10);
        }
        store.close().unwrap();
    }
    copy_dir(&d.join("log"), backup.path());
    {
        let store = Store::open(d).unwrap();
        for _ in 0..8 {
            deposit(&store, 10);
        }
        // Versions 0..=11, ten each: 120.
        store.save_snapshot(&snap(11, "balance 120")).unwrap();
        store.save_snapshot(&snap(9, "balance 100")).unwrap();
        assert_eq!(
            store.load_snapshot("acct").unwrap(),
            Some(snap(11, "balance 120")),
            "the newer snapshot stays"
        );
        store.close().unwrap();
    }
    // Restore the older copy (versions 0..=3); the stream then takes other events.
    std::fs::remove_dir_all(d.join("log")).unwrap();
    copy_dir(backup.path(), &d.join("log"));
    std::fs::remove_file(d.join("index.redb")).unwrap();
    let store = Store::open(d).unwrap();
    assert_eq!(store.stream_head("acct").unwrap(), Some(3));
    assert_eq!(store.load_snapshot("acct").unwrap(), None, "past the head");
    for _ in 0..10 {
        deposit(&store, -1);
    }
    // Versions 4..=13 are withdrawals now: the snapshot at 11 describes other events.
    assert_eq!(store.stream_head("acct").unwrap(), Some(13));
    assert_eq!(store.load_snapshot("acct").unwrap(), None);
    // Nor does it keep its place against an older save of the stream's own events.
    store.save_snapshot(&snap(5, "balance 38")).unwrap();
    assert_eq!(
        store.load_snapshot("acct").unwrap(),
        Some(snap(5, "balance 38"))
    );
}
