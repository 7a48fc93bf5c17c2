//! A group whose write or fdatasync fails is never readable from the store that tried it.
//!
//! The writer enters a group's frames in the in-memory recent index before the group's
//! fdatasync (so that the syncer has less to do between two fdatasyncs); readers must look
//! there only below the committed position. This sweep fails each file operation of one append
//! in turn (`FaultyFs`) and checks, on the same live store, that every read path shows exactly
//! the events acknowledged before it: read_stream both ways, read_all both ways, scan_forwards,
//! stream heads, existence, listing and a subscription.

use std::sync::Arc;
use std::time::Duration;

use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store, StoreError};
use orchestrix_log::fs::{StdFs, Vfs};
use orchestrix_log::testing::{FaultKind, FaultyFs};

/// Events acknowledged before the failing append: stream "a" gets versions 0..COMMITTED.
const COMMITTED: u64 = 5;

fn events(n: usize, size: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| EventData::new("E", vec![b'a' + i as u8; size]))
        .collect()
}

/// Opens a store on `fs` and acknowledges the first events.
fn committed_store(fs: &Arc<FaultyFs>, dir: &std::path::Path) -> Store {
    let vfs: Arc<dyn Vfs> = fs.clone();
    let (store, _) = Store::open_with_vfs(dir, Options::test(), vfs).unwrap();
    for _ in 0..COMMITTED {
        store
            .append("a", ExpectedVersion::Any, events(1, 100))
            .unwrap();
    }
    store
}

/// The failing append: to the existing stream and to a new one, atomically, large enough to
/// roll the 4 KiB test segments.
fn failing_parts() -> Vec<(String, ExpectedVersion, Vec<EventData>)> {
    vec![
        ("a".to_string(), ExpectedVersion::Any, events(3, 1500)),
        ("b".to_string(), ExpectedVersion::NoStream, events(2, 50)),
    ]
}

/// The operations one failing append performs, counted without faults.
fn ops_of_append() -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(FaultyFs::new(Arc::new(StdFs)));
    let store = committed_store(&fs, dir.path());
    let before = fs.ops_so_far();
    store.append_multi(failing_parts()).unwrap();
    let after = fs.ops_so_far();
    store.close().unwrap();
    (before, after)
}

fn assert_only_committed(store: &Store, what: &str) {
    assert_eq!(store.committed_position(), COMMITTED, "{what}: committed");
    let fwd = store.read_stream("a", 0, Direction::Forwards, 100).unwrap();
    let versions: Vec<u64> = fwd.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (0..COMMITTED).collect::<Vec<_>>(),
        "{what}: read_stream"
    );
    let back = store
        .read_stream("a", u64::MAX, Direction::Backwards, 100)
        .unwrap();
    assert_eq!(
        back.len() as u64,
        COMMITTED,
        "{what}: read_stream backwards"
    );
    assert_eq!(
        back[0].version,
        COMMITTED - 1,
        "{what}: read_stream backwards"
    );
    assert!(
        store
            .read_stream("b", 0, Direction::Forwards, 100)
            .unwrap()
            .is_empty(),
        "{what}: the new stream is readable"
    );
    let all = store
        .read_all(0, Direction::Forwards, 100, &ReadFilter::all())
        .unwrap();
    assert_eq!(all.len() as u64, COMMITTED, "{what}: read_all");
    let all_back = store
        .read_all(u64::MAX, Direction::Backwards, 100, &ReadFilter::all())
        .unwrap();
    assert_eq!(
        all_back.len() as u64,
        COMMITTED,
        "{what}: read_all backwards"
    );
    let mut seen = 0;
    let next = store
        .scan_forwards(0, &ReadFilter::all(), &mut |_| {
            seen += 1;
            true
        })
        .unwrap();
    assert_eq!(
        (seen, next),
        (COMMITTED, COMMITTED),
        "{what}: scan_forwards"
    );
    assert!(
        store
            .read_all(COMMITTED, Direction::Forwards, 100, &ReadFilter::all())
            .unwrap()
            .is_empty(),
        "{what}: read_all from the failed group's position"
    );
    assert_eq!(
        store.stream_head("a").unwrap(),
        Some(COMMITTED - 1),
        "{what}: head"
    );
    assert!(!store.stream_exists("b").unwrap(), "{what}: exists");
    assert_eq!(
        store.list_streams(None),
        vec![("a".to_string(), COMMITTED - 1)],
        "{what}: list"
    );
    let mut sub = store.subscribe_all(0, ReadFilter::all());
    for v in 0..COMMITTED {
        let e = sub.next().unwrap().unwrap();
        assert_eq!(e.position, v, "{what}: subscription");
    }
    // The store is latched: the subscription ends with `Poisoned` after the committed events.
    match sub.next_timeout(Duration::from_millis(50)) {
        Ok(None) | Err(StoreError::Poisoned) => {}
        Ok(Some(e)) => panic!(
            "{what}: the subscription delivered an unacknowledged event at {}",
            e.position
        ),
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn a_failed_group_is_never_readable() {
    let (before, after) = ops_of_append();
    assert!(
        after > before + 1,
        "the append has a write and an fdatasync"
    );
    for n in 0..after - before {
        let what = format!("operation {n} of the append fails");
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(FaultyFs::new(Arc::new(StdFs)));
        let store = committed_store(&fs, dir.path());
        fs.arm(fs.ops_so_far() + n, FaultKind::Eio, false);
        assert!(
            store.append_multi(failing_parts()).is_err(),
            "{what}: acknowledged"
        );
        assert_eq!(fs.failures(), 1, "{what}: the fault was not reached");
        assert_only_committed(&store, &what);
        drop(store);
    }
}
