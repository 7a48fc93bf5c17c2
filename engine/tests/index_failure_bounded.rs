//! An index that cannot be written costs memory up to a bound, then new appends are refused
//! with `IndexFailed`, never an unbounded growth; once the files can be written again, the
//! indexer's retries write them and appends are taken again.
//!
//! When the indexer cannot write a sealed segment's stream index file (or its id file), the
//! segment's batches stay in the in-memory recent index and its ids with the writer, so that
//! reads keep working. Before, a disk on which the index could not be written made the
//! process grow with every segment sealed until it ran out of memory. Now, while
//! `SEGMENTS_HELD_MAX` such segments are held, new appends are refused with a typed error
//! naming the failure (a repeat of stored events is still answered: it writes nothing); reads
//! still return every acknowledged event, the files are retried, and a reopen rebuilds what
//! is missing.
//!
//! Every stream index file write is made to fail by a directory standing where its temporary
//! copy goes, for every position a segment can start at in this test.

use std::path::Path;

use std::time::{Duration, Instant};

use orchestrix::{Direction, EventData, ExpectedVersion, Options, Store, StoreError};
use uuid::Uuid;

const STREAM: &str = "s";
/// More appends than the test can need: 4 KiB segments hold about a dozen of its events.
const APPENDS_MAX: u64 = 2_000;

/// The id of the event at `version` (so that an append can be repeated).
fn id(version: u64) -> Uuid {
    Uuid::from_u128(u128::from(version) + 1)
}

fn append(store: &Store, version: u64) -> Result<(), StoreError> {
    let expected = version
        .checked_sub(1)
        .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
    let event = EventData::new("E", vec![7u8; 200]).with_id(id(version));
    store.append(STREAM, expected, vec![event]).map(|_| ())
}

fn versions(store: &Store) -> Vec<u64> {
    store
        .read_stream(STREAM, 0, Direction::Forwards, usize::MAX)
        .expect("read")
        .iter()
        .map(|e| e.version)
        .collect()
}

fn blockers(dir: &Path) -> Vec<std::path::PathBuf> {
    (0..=APPENDS_MAX)
        .map(|p| dir.join("streams").join(format!("{p:020}.streams.tmp")))
        .collect()
}

#[test]
fn appends_are_refused_once_the_held_segments_reach_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    let blocked = blockers(dir.path());
    for b in &blocked {
        std::fs::create_dir_all(b).unwrap();
    }
    let mut acknowledged = 0u64;
    let refusal = loop {
        assert!(
            acknowledged < APPENDS_MAX,
            "{APPENDS_MAX} appends over {} segments and none refused",
            store.info().unwrap().segments.len()
        );
        match append(&store, acknowledged) {
            Ok(()) => acknowledged += 1,
            Err(e) => break e,
        }
    };
    let StoreError::IndexFailed { reason, segments } = &refusal else {
        panic!("refused with {refusal:?}");
    };
    assert!(*segments >= orchestrix::SEGMENTS_HELD_MAX, "{refusal}");
    assert!(
        reason.contains("stream index file"),
        "the first failure is named: {reason}"
    );
    let sealed = store.info().unwrap().segments.len() as u64 - 1;
    assert!(
        sealed >= orchestrix::SEGMENTS_HELD_MAX,
        "refused after {sealed} sealed segments"
    );
    assert!(refusal.to_string().contains("reopening"), "{refusal}");
    // Still refused, and nothing of the refused appends is stored; reads keep working.
    assert!(matches!(
        append(&store, acknowledged),
        Err(StoreError::IndexFailed { .. })
    ));
    let want: Vec<u64> = (0..acknowledged).collect();
    assert_eq!(versions(&store), want, "reads after the refusal");
    // A repeat of a stored append writes nothing: it is answered, not refused.
    append(&store, acknowledged - 1).expect("a repeat of the last acknowledged append");

    store.close().unwrap();
    drop(store);
    for b in &blocked {
        std::fs::remove_dir(b).unwrap();
    }
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    assert_eq!(versions(&store), want, "reads after reopening");
    append(&store, acknowledged).expect("appends are taken after reopening");
    store.verify().expect("verify after reopening");
}

#[test]
fn appends_are_taken_again_once_the_held_segments_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        index_checkpoint_interval: Duration::from_millis(20),
        ..Options::test()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let blocked = blockers(dir.path());
    for b in &blocked {
        std::fs::create_dir_all(b).unwrap();
    }
    let mut acknowledged = 0u64;
    while append(&store, acknowledged).is_ok() {
        acknowledged += 1;
        assert!(acknowledged < APPENDS_MAX, "no append refused");
    }
    // The disk is writable again: the retries write the held segments' files.
    for b in &blocked {
        std::fs::remove_dir(b).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match append(&store, acknowledged) {
            Ok(()) => break,
            Err(StoreError::IndexFailed { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("appends were not taken again: {e}"),
        }
    }
    acknowledged += 1;
    let want: Vec<u64> = (0..acknowledged).collect();
    assert_eq!(versions(&store), want, "reads after the retries");
    store.verify().expect("verify");
}
