//! Readers on several threads while writers append and segments roll (4 KiB segments): every
//! read returns a gapless run of a stream's events, each one holding exactly the data that was
//! appended at its version, and read_all returns gapless positions. This exercises the segment
//! maps being made by whichever reader comes first, the active segment growing under them,
//! and the per-thread map buffers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store};

const WRITERS: usize = 3;
const READERS: usize = 4;
const APPENDS_PER_WRITER: u64 = 400;

/// The data of version `v` of stream `s`: its size varies up to past the segment size.
fn data(s: usize, v: u64) -> Vec<u8> {
    let size = match v % 11 {
        0 => 5_000,
        _ => 20 + (v as usize * 7 + s * 13) % 600,
    };
    (0..size).map(|i| (i as u64 ^ v ^ s as u64) as u8).collect()
}

#[test]
fn readers_see_gapless_correct_streams_while_writers_append_and_roll() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_with(dir.path(), Options::test()).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|s| {
            let store = store.clone();
            std::thread::spawn(move || {
                for v in 0..APPENDS_PER_WRITER {
                    let expected = match v {
                        0 => ExpectedVersion::NoStream,
                        _ => ExpectedVersion::Exact(v - 1),
                    };
                    store
                        .append(
                            &format!("s-{s}"),
                            expected,
                            vec![EventData::new("E", data(s, v))],
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut k = r;
                while !done.load(Ordering::Acquire) || reads < 10 {
                    k = (k + 1) % WRITERS;
                    let stream = format!("s-{k}");
                    let events = store
                        .read_stream(&stream, 0, Direction::Forwards, usize::MAX)
                        .unwrap();
                    for (v, e) in events.iter().enumerate() {
                        assert_eq!(e.version, v as u64, "{stream}: version gap");
                        assert_eq!(e.stream(), stream);
                        assert_eq!(e.data(), &data(k, v as u64)[..], "{stream} v{v}");
                    }
                    let back = store
                        .read_stream(&stream, u64::MAX, Direction::Backwards, 5)
                        .unwrap();
                    for w in back.windows(2) {
                        assert_eq!(w[0].version, w[1].version + 1, "{stream}: backwards gap");
                    }
                    for e in &back {
                        assert_eq!(e.data(), &data(k, e.version)[..]);
                    }
                    let from = store.committed_position() / 2;
                    let all = store
                        .read_all(from, Direction::Forwards, 200, &ReadFilter::all())
                        .unwrap();
                    for (i, e) in all.iter().enumerate() {
                        assert_eq!(e.position, from + i as u64, "read_all gap");
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() >= 10);
    }
    // Everything, once more, after the writers are done.
    for s in 0..WRITERS {
        let events = store
            .read_stream(&format!("s-{s}"), 0, Direction::Forwards, usize::MAX)
            .unwrap();
        assert_eq!(events.len() as u64, APPENDS_PER_WRITER);
        for e in &events {
            assert_eq!(e.data(), &data(s, e.version)[..]);
        }
    }
    let all = store
        .read_all(0, Direction::Forwards, usize::MAX, &ReadFilter::all())
        .unwrap();
    assert_eq!(all.len() as u64, WRITERS as u64 * APPENDS_PER_WRITER);
}
