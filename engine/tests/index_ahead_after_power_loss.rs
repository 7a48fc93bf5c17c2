//! Under relaxed durability the indexer commits its rows to redb (without moving its
//! checkpoint) before the log below them is durable; a power loss can then leave an index
//! that has applied frames the recovered log no longer holds. Open must notice and rebuild
//! the index, also when the replay from the checkpoint is long enough to commit progress of
//! its own in batches (it overwrote the record of how far the index had been before the
//! check read it, and stale rows then sent reads of new events to wrong offsets).
//!
//! The power loss is made by hand: the index file as it was once the indexer had flushed
//! (copied aside), and the log cut in the middle of a frame well past the checkpoint.

use std::path::Path;
use std::time::{Duration, Instant};

use orchestrix::{Direction, Durability, EventData, ExpectedVersion, Options, ReadFilter, Store};

const SYNCED: u64 = 100;
const UNSYNCED: u64 = 30_000;

fn append(store: &Store, stream: &str, n: u64) {
    for i in 0..n {
        store
            .append(
                stream,
                ExpectedVersion::Any,
                vec![EventData::new("E", format!("{i}").into_bytes())],
            )
            .unwrap();
    }
}

/// The index's checkpoint position and how far it had applied frames, from a copy of it.
fn index_state(copy: &Path, scratch: &Path) -> (u64, u64) {
    std::fs::copy(copy, scratch).unwrap();
    let index = orchestrix_index::Index::open(scratch).unwrap();
    let checkpoint = index.checkpoint().unwrap().map_or(0, |c| c.next_position);
    let indexed = index.indexed_position().unwrap().unwrap_or(0);
    (checkpoint, indexed)
}

#[test]
fn an_index_ahead_of_the_recovered_log_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let opts = Options {
        durability: Durability::Never,
        index_checkpoint_interval: Duration::from_millis(20),
        ..Options::default()
    };
    let store = Store::open_with(&dir, opts.clone()).unwrap();
    append(&store, "a", SYNCED);
    store.sync().unwrap();
    append(&store, "a", UNSYNCED);
    // Wait (a condition) until the indexer has committed every frame without a checkpoint
    // past the synced ones: the state a power loss would find.
    let saved = tmp.path().join("index.saved");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        std::fs::copy(dir.join("index.redb"), &saved).unwrap();
        let (checkpoint, indexed) = index_state(&saved, &tmp.path().join("index.check"));
        assert!(
            checkpoint <= SYNCED,
            "checkpoint {checkpoint} past the synced log"
        );
        if indexed == SYNCED + UNSYNCED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the indexer stopped at {indexed}"
        );
    }
    store.close().unwrap();
    drop(store);

    // The power loss: the index as saved, the log cut inside a frame at 80% of its data.
    std::fs::copy(&saved, dir.join("index.redb")).unwrap();
    let segment = dir.join("log").join("00000000000000000000.seg");
    let bytes = std::fs::read(&segment).unwrap();
    let data_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let cut = (data_end as u64) * 4 / 5;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let (store, report) =
        Store::open_with_vfs(&dir, opts, std::sync::Arc::new(orchestrix_log::fs::StdFs)).unwrap();
    let recovered = report.log.next_position;
    assert!(
        recovered > SYNCED + 16_384 && recovered < SYNCED + UNSYNCED,
        "recovered {recovered}: the replay from the checkpoint must be longer than one batch"
    );
    assert!(report.index_rebuilt, "the index ahead of the log was kept");
    // New events take the lost positions: every one reads back where it is.
    append(&store, "b", 5_000);
    let events = store
        .read_all(
            recovered,
            Direction::Forwards,
            usize::MAX,
            &ReadFilter::all(),
        )
        .unwrap();
    assert_eq!(events.len(), 5_000);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, recovered + i as u64);
        assert_eq!(e.stream(), "b");
    }
    for p in [recovered, recovered + 2_500, recovered + 4_999] {
        let one = store
            .read_all(p, Direction::Forwards, 1, &ReadFilter::all())
            .unwrap();
        assert_eq!(one.first().map(|e| e.position), Some(p));
    }
    store.verify().unwrap();
}
