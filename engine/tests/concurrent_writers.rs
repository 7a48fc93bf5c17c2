//! Pins "concurrent writers on one stream" of RELIABILITY.md: 16 threads each make
//! `APPENDS_PER_THREAD` successful appends to ONE stream with `Exact(head)` (or `NoStream`),
//! re-reading the head and retrying after every `WrongExpectedVersion`. Exactly one append
//! wins each version, the final versions are gap-free `0..total`, every successful append's
//! event is found at the version (and position) it was told, and the same holds after reopen.
//! RELIABILITY.md's figure, 16 threads x 10^4 appends, is what every CI run does (about a
//! minute here); its "x10" is the soak run (set `ORCHESTRIX_SOAK=1`: ten rounds, each on a
//! fresh store).

use std::collections::HashMap;
use std::sync::Arc;

use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store, StoreError};
use uuid::Uuid;

const THREADS: usize = 16;
/// Successful appends per thread and round: RELIABILITY.md's 10^4.
const APPENDS_PER_THREAD: usize = 10_000;
/// Rounds of the soak run (one per CI run).
const SOAK_ROUNDS: usize = 10;
const STREAM: &str = "contended";

#[test]
fn one_winner_per_version() {
    let rounds = if std::env::var_os("ORCHESTRIX_SOAK").is_some() {
        SOAK_ROUNDS
    } else {
        1
    };
    for _ in 0..rounds {
        round(APPENDS_PER_THREAD);
    }
}

/// One round on a fresh store: `per_thread` wins for each of [`THREADS`] threads.
fn round(per_thread: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_with(dir.path(), Options::test()).unwrap());
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let store = store.clone();
        handles.push(std::thread::spawn(move || {
            // (version, position, id) of each win; number of conflicts seen.
            let mut wins: Vec<(u64, u64, Uuid)> = Vec::with_capacity(per_thread);
            let mut conflicts = 0u64;
            while wins.len() < per_thread {
                let head = store.stream_head(STREAM).unwrap();
                let expected = head.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let e = EventData::new("Tick", format!("{t}").into_bytes());
                let id = e.id;
                match store.append(STREAM, expected, vec![e]) {
                    Ok(r) => {
                        assert!(!r.already_stored);
                        let (s, v0, v1) = r.streams[0].clone();
                        assert_eq!((s.as_str(), v0), (STREAM, v1));
                        assert_eq!(v0, head.map_or(0, |h| h + 1), "won at the wrong version");
                        wins.push((v0, r.first_position, id));
                    }
                    Err(StoreError::WrongExpectedVersion {
                        expected: x,
                        current,
                        ..
                    }) => {
                        assert_eq!(x, expected);
                        assert_ne!(current, head, "conflict reported at the expected head");
                        conflicts += 1;
                    }
                    Err(e) => panic!("thread {t}: {e}"),
                }
            }
            (wins, conflicts)
        }));
    }
    let mut by_version: HashMap<u64, (usize, u64, Uuid)> = HashMap::new();
    let mut conflicts = 0;
    for (t, h) in handles.into_iter().enumerate() {
        let (wins, c) = h.join().unwrap();
        conflicts += c;
        for (v, pos, id) in wins {
            if let Some(other) = by_version.insert(v, (t, pos, id)) {
                panic!(
                    "version {v} won twice: by thread {} and thread {t}",
                    other.0
                );
            }
        }
    }
    let total = (THREADS * per_thread) as u64;
    assert_eq!(by_version.len() as u64, total);
    let check = |store: &Store| {
        assert_eq!(store.stream_head(STREAM).unwrap(), Some(total - 1));
        assert_eq!(store.committed_position(), total);
        // Global order first (does not go through the stream index) ...
        let events = store
            .read_all(0, Direction::Forwards, usize::MAX, &ReadFilter::all())
            .unwrap();
        assert_eq!(events.len() as u64, total);
        assert!(events
            .iter()
            .all(|e| e.stream() == STREAM && e.version == e.position));
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.version, i as u64, "version gap");
            let (t, pos, id) = by_version[&e.version];
            assert_eq!((e.id, e.position), (id, pos), "version {i}");
            assert_eq!(e.data(), format!("{t}").as_bytes());
        }
        // ... then the same through the stream index, in one call and backwards.
        let by_stream = store
            .read_stream(STREAM, 0, Direction::Forwards, usize::MAX)
            .unwrap();
        assert_eq!(
            by_stream.len() as u64,
            total,
            "read_stream skipped versions: got {:?}",
            by_stream.iter().map(|e| e.version).collect::<Vec<_>>()
        );
        assert!(by_stream == events, "read_stream differs from read_all");
        let mut back = store
            .read_stream(STREAM, u64::MAX, Direction::Backwards, usize::MAX)
            .unwrap();
        back.reverse();
        assert!(back == events, "read_stream backwards differs");
    };
    check(&store);
    eprintln!("{total} appends, {conflicts} conflicts");
    store.close().unwrap();
    drop(store);
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    check(&store);
    assert_eq!(store.verify().unwrap(), total);
}
