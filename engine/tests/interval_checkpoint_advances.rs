//! Under `Interval` durability the index checkpoint keeps moving while appends keep coming.
//!
//! The indexer may record a checkpoint only where the log is durable. Under steady appends the
//! newest frame it has applied is almost never durable yet at the moment a checkpoint is due
//! (the next tick's fdatasync has not run), so it kept only flushing, and the checkpoint
//! stayed where the store was last idle: open's catch-up after a crash grew without bound. It
//! now records the due checkpoint once the log is durable up to it, with the stream heads as
//! of it. The wait below is for a condition (the checkpoint passing a position while appends
//! continue), with a deadline far beyond the intervals involved.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrix::{Direction, Durability, EventData, ExpectedVersion, Options, Store};

#[test]
fn the_checkpoint_advances_under_steady_appends() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        durability: Durability::Interval(Duration::from_millis(50)),
        index_checkpoint_interval: Duration::from_millis(100),
        ..Options::test()
    };
    let store = Arc::new(Store::open_with(dir.path(), opts.clone()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                store
                    .append(
                        &format!("s{}", n % 7),
                        ExpectedVersion::Any,
                        vec![EventData::new("E", n.to_le_bytes().to_vec())],
                    )
                    .unwrap();
                n += 1;
                // A steady trickle: the indexer keeps up, so the newest frame it applied is
                // newer than the last tick's fdatasync at almost every due moment.
                std::thread::sleep(Duration::from_millis(1));
            }
            n
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let cp = store
            .info()
            .unwrap()
            .index_checkpoint
            .map_or(0, |c| c.next_position);
        seen.push(cp);
        // Passed 500 events, and moved at least eight times, all while appends went on (once or
        // twice a second at most before, by luck; about ten times a second now).
        let moves = seen.windows(2).filter(|w| w[1] > w[0]).count();
        if cp >= 500 && moves >= 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the checkpoint stayed at {cp} while {} events were appended",
            store.committed_position()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let appended = writer.join().unwrap();
    assert!(store.committed_position() >= appended);
    drop(store);

    // The heads recorded with those checkpoints agree with the log.
    let store = Store::open_with(dir.path(), opts).unwrap();
    store.verify().unwrap();
    let mut total = 0;
    for s in 0..7 {
        let name = format!("s{s}");
        let events = store
            .read_stream(&name, 0, Direction::Forwards, usize::MAX)
            .unwrap();
        assert_eq!(
            store.stream_head(&name).unwrap(),
            events.last().map(|e| e.version)
        );
        total += events.len() as u64;
    }
    assert_eq!(total, appended);
}
