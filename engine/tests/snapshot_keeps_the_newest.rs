//! A stream keeps the snapshot of the highest version saved: a save of an older version (a
//! slower writer snapshotting the same aggregate) is skipped; one of the same version
//! replaces it; and a stored snapshot past the stream's head (copied from another store) is
//! no reason to skip, since it is never trusted. A review found an older save replacing a
//! newer one.

use orchestrix::snapshot::Snapshot;
use orchestrix::{EventData, ExpectedVersion, Store};

fn snap(version: u64, state: &[u8]) -> Snapshot {
    Snapshot {
        stream: "acct".to_owned(),
        version,
        aggregate_type: "Account".to_owned(),
        state: state.to_vec(),
    }
}

fn store_with_events(dir: &std::path::Path, n: usize) -> Store {
    let store = Store::open(dir).unwrap();
    let events: Vec<_> = (0..n)
        .map(|i| EventData::json("T", format!("{{\"i\":{i}}}").into_bytes()))
        .collect();
    store.append("acct", ExpectedVersion::Any, events).unwrap();
    store
}

#[test]
fn an_older_save_leaves_the_newer_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_events(tmp.path(), 10);
    store.save_snapshot(&snap(9, b"v9")).unwrap();
    store.save_snapshot(&snap(3, b"v3")).unwrap();
    assert_eq!(store.load_snapshot("acct").unwrap(), Some(snap(9, b"v9")));
    store.save_snapshot(&snap(9, b"v9 again")).unwrap();
    assert_eq!(
        store.load_snapshot("acct").unwrap(),
        Some(snap(9, b"v9 again"))
    );
}

#[test]
fn a_snapshot_past_the_head_from_another_store_is_replaced() {
    let other = tempfile::tempdir().unwrap();
    let mine = tempfile::tempdir().unwrap();
    let name = {
        let o = store_with_events(other.path(), 10);
        o.save_snapshot(&snap(9, b"elsewhere")).unwrap();
        let names: Vec<_> = std::fs::read_dir(other.path().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        names[0].clone()
    };
    let store = store_with_events(mine.path(), 4);
    std::fs::copy(
        other.path().join("snapshots").join(&name),
        mine.path().join("snapshots").join(&name),
    )
    .unwrap();
    // Past the head (3): not trusted, and not in the way of a save.
    assert_eq!(store.load_snapshot("acct").unwrap(), None);
    store.save_snapshot(&snap(3, b"mine")).unwrap();
    assert_eq!(store.load_snapshot("acct").unwrap(), Some(snap(3, b"mine")));
}
