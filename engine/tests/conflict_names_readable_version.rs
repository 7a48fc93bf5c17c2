//! A `WrongExpectedVersion` error is answered only once the version it names is readable:
//! 8 threads append to one stream with `Exact(head)`, and whenever one is refused, the
//! stream's head and a read of the stream must already show the `current` version the error
//! named (with the plain re-read-and-retry loop of an application, a head that lagged the
//! error would make retries spin against appends still being committed).

use std::sync::Arc;

use orchestrix::{Direction, EventData, ExpectedVersion, Options, Store, StoreError};

const THREADS: usize = 8;
const APPENDS_PER_THREAD: usize = 150;
const STREAM: &str = "contended";

#[test]
fn refused_append_sees_the_version_it_conflicted_with() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_with(dir.path(), Options::test()).unwrap());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let (mut wins, mut conflicts) = (0, 0u64);
                while wins < APPENDS_PER_THREAD {
                    let head = store.stream_head(STREAM).unwrap();
                    let expected = head.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                    let e = EventData::new("Tick", format!("{t}").into_bytes());
                    match store.append(STREAM, expected, vec![e]) {
                        Ok(_) => wins += 1,
                        Err(StoreError::WrongExpectedVersion { current, .. }) => {
                            conflicts += 1;
                            let current = current.expect("the stream exists once anyone won");
                            let now = store.stream_head(STREAM).unwrap();
                            assert!(
                                now >= Some(current),
                                "refused with current {current}, but the head reads {now:?}"
                            );
                            let read = store
                                .read_stream(STREAM, current, Direction::Forwards, 1)
                                .unwrap();
                            assert_eq!(
                                read.first().map(|e| e.version),
                                Some(current),
                                "version {current} named by the error is not readable"
                            );
                        }
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(conflicts > 0, "the writers never contended");
    let total = (THREADS * APPENDS_PER_THREAD) as u64;
    assert_eq!(store.stream_head(STREAM).unwrap(), Some(total - 1));
}
