//! Pins "bad input gets a typed error, never a panic, and writes nothing" (RELIABILITY.md
//! promise 7) for appends: an event at max-1 and max bytes is accepted and one at max+1 is
//! `TooLarge { size: max+1, max }`; empty stream ids, ids with NUL or other control
//! characters, 1025-byte ids (1024 is fine), more than `BATCH_EVENT_COUNT_MAX` events, a stream
//! twice in one multi-append, an event id twice in one append, zero events and zero parts are
//! each rejected with their typed
//! error, and `committed_position()` does not move (nor does anything reach the log on reopen).

use orchestrix::limits::{BATCH_EVENT_COUNT_MAX, BATCH_SIZE_MAX, STREAM_ID_LEN_MAX};
use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store, StoreError};

const MAX: u64 = 4096;

fn options() -> Options {
    Options {
        event_size_max: MAX,
        ..Options::test()
    }
}

fn ev(data_len: usize) -> EventData {
    EventData::new("T", vec![7u8; data_len])
}

/// Asserts the append fails as `check` wants and writes nothing.
fn rejected(
    store: &Store,
    r: orchestrix::Result<orchestrix::AppendResult>,
    check: fn(&StoreError) -> bool,
    what: &str,
) {
    let before = store.committed_position();
    match r {
        Ok(r) => panic!("{what}: accepted: {r:?}"),
        Err(e) => assert!(check(&e), "{what}: wrong error {e:?}"),
    }
    assert_eq!(
        store.committed_position(),
        before,
        "{what}: something was written"
    );
}

#[test]
fn event_size_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    // Learn the per-event attribute overhead from the error itself.
    let probe = 5000usize;
    let overhead = match store.append("s", ExpectedVersion::Any, vec![ev(probe)]) {
        Err(StoreError::TooLarge { size, max, .. }) => {
            assert_eq!(max, MAX);
            size - probe as u64
        }
        other => panic!("probe: {other:?}"),
    };
    assert!(overhead > 0 && overhead < 100, "overhead {overhead}");
    assert_eq!(store.committed_position(), 0);
    let at = |total: u64| ev((total - overhead) as usize);

    let r = store
        .append("s", ExpectedVersion::NoStream, vec![at(MAX - 1)])
        .unwrap();
    assert_eq!(r.first_position, 0);
    let r = store
        .append("s", ExpectedVersion::Exact(0), vec![at(MAX)])
        .unwrap();
    assert_eq!(r.first_position, 1);
    let before = store.committed_position();
    match store.append("s", ExpectedVersion::Exact(1), vec![at(MAX + 1)]) {
        Err(StoreError::TooLarge { size, max, .. }) => {
            assert_eq!((size, max), (MAX + 1, MAX));
        }
        other => panic!("max+1: {other:?}"),
    }
    // One oversized event in an otherwise fine batch rejects the whole batch.
    rejected(
        &store,
        store.append(
            "s",
            ExpectedVersion::Any,
            vec![at(10 + overhead), at(MAX + 1)],
        ),
        |e| matches!(e, StoreError::TooLarge { .. }),
        "batch with one oversized event",
    );
    assert_eq!(store.committed_position(), before);
    let back = store.read_stream("s", 0, Direction::Forwards, 10).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[1].data().len() as u64, MAX - overhead);
    store.close().unwrap();
    drop(store);
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.committed_position(), 2);
    assert_eq!(store.verify().unwrap(), 2);
}

#[test]
fn bad_stream_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    store
        .append("ok", ExpectedVersion::Any, vec![ev(1)])
        .unwrap();
    let invalid = |e: &StoreError| matches!(e, StoreError::InvalidStreamId { .. });
    rejected(
        &store,
        store.append("", ExpectedVersion::Any, vec![ev(1)]),
        invalid,
        "empty id",
    );
    for bad in [
        "a\0b",
        "\0",
        "a\nb",
        "tab\there",
        "bell\u{7}",
        "del\u{7f}",
        "c1\u{85}",
    ] {
        rejected(
            &store,
            store.append(bad, ExpectedVersion::Any, vec![ev(1)]),
            invalid,
            bad,
        );
    }
    let long_ok = "x".repeat(STREAM_ID_LEN_MAX);
    let r = store
        .append(&long_ok, ExpectedVersion::NoStream, vec![ev(1)])
        .unwrap();
    assert_eq!(r.streams[0].0, long_ok);
    let too_long = "x".repeat(STREAM_ID_LEN_MAX + 1);
    let before = store.committed_position();
    match store.append(&too_long, ExpectedVersion::Any, vec![ev(1)]) {
        Err(StoreError::TooLarge { size, max, .. }) => {
            assert_eq!((size, max), (1025, 1024));
        }
        other => panic!("1025-byte id: {other:?}"),
    }
    assert_eq!(store.committed_position(), before);
    // Multi-byte characters count in bytes: 513 two-byte characters are 1026 bytes.
    rejected(
        &store,
        store.append(&"é".repeat(513), ExpectedVersion::Any, vec![ev(1)]),
        |e| matches!(e, StoreError::TooLarge { size: 1026, .. }),
        "1026 bytes of two-byte characters",
    );
    // A bad id in the second part of a multi-append rejects the whole append.
    rejected(
        &store,
        store.append_multi(vec![
            ("fine".into(), ExpectedVersion::Any, vec![ev(1)]),
            ("bad\0".into(), ExpectedVersion::Any, vec![ev(1)]),
        ]),
        invalid,
        "bad id in part 2",
    );
    // Reads reject bad ids too, without panicking.
    assert!(matches!(
        store.read_stream("", 0, Direction::Forwards, 1),
        Err(StoreError::InvalidStreamId { .. })
    ));
    assert!(matches!(
        store.stream_head(&too_long),
        Err(StoreError::TooLarge { .. })
    ));
    store.close().unwrap();
    drop(store);
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.committed_position(), 2);
    let all = store
        .read_all(0, Direction::Forwards, 100, &ReadFilter::all())
        .unwrap();
    assert_eq!(all.len(), 2);
}

#[test]
fn bad_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    store
        .append("a", ExpectedVersion::Any, vec![ev(1)])
        .unwrap();

    let too_many: Vec<EventData> = (0..=BATCH_EVENT_COUNT_MAX).map(|_| ev(0)).collect();
    let before = store.committed_position();
    match store.append("a", ExpectedVersion::Any, too_many) {
        Err(e @ StoreError::TooLarge { size, max, .. }) => {
            assert_eq!(
                (size, max),
                (
                    BATCH_EVENT_COUNT_MAX as u64 + 1,
                    BATCH_EVENT_COUNT_MAX as u64
                )
            );
            assert_eq!(
                e.to_string(),
                format!(
                    "batch of {} events exceeds the maximum of {BATCH_EVENT_COUNT_MAX} events",
                    BATCH_EVENT_COUNT_MAX + 1
                )
            );
        }
        other => panic!("too many events: {:?}", other.map(|r| r.streams)),
    }
    assert_eq!(store.committed_position(), before);

    // Split over two streams, the count still adds up.
    let half = BATCH_EVENT_COUNT_MAX / 2 + 1;
    rejected(
        &store,
        store.append_multi(vec![
            (
                "a".into(),
                ExpectedVersion::Any,
                (0..half).map(|_| ev(0)).collect(),
            ),
            (
                "b".into(),
                ExpectedVersion::Any,
                (0..half).map(|_| ev(0)).collect(),
            ),
        ]),
        |e| matches!(e, StoreError::TooLarge { .. }),
        "too many events over two streams",
    );

    let input = |e: &StoreError| matches!(e, StoreError::InvalidInput(_));
    rejected(
        &store,
        store.append_multi(vec![
            ("a".into(), ExpectedVersion::Any, vec![ev(1)]),
            ("b".into(), ExpectedVersion::Any, vec![ev(1)]),
            ("a".into(), ExpectedVersion::Any, vec![ev(1)]),
        ]),
        input,
        "a stream twice",
    );
    rejected(
        &store,
        store.append("a", ExpectedVersion::Any, vec![]),
        input,
        "zero events",
    );
    rejected(
        &store,
        store.append_multi(vec![
            ("a".into(), ExpectedVersion::Any, vec![ev(1)]),
            ("b".into(), ExpectedVersion::Any, vec![]),
        ]),
        input,
        "zero events in part 2",
    );
    rejected(&store, store.append_multi(vec![]), input, "zero parts");
    // An id twice in one append: among increasing ids (the usual case, settled without a
    // set), after an earlier one, and across two streams.
    let (x, y, z) = (ev(1), ev(1), ev(1));
    rejected(
        &store,
        store.append(
            "a",
            ExpectedVersion::Any,
            vec![x.clone(), y.clone(), x.clone()],
        ),
        input,
        "an id twice in one stream's events",
    );
    rejected(
        &store,
        store.append_multi(vec![
            ("a".into(), ExpectedVersion::Any, vec![y.clone(), z.clone()]),
            ("b".into(), ExpectedVersion::Any, vec![z.clone()]),
        ]),
        input,
        "an id in two streams of one append",
    );
    rejected(
        &store,
        store.append(
            "a",
            ExpectedVersion::Any,
            vec![EventData::new("", b"x".to_vec())],
        ),
        input,
        "empty event type",
    );
    // Nothing above reached the stream heads either.
    assert_eq!(store.stream_head("a").unwrap(), Some(0));
    assert_eq!(store.stream_head("b").unwrap(), None);
    // Exactly at the count limit is accepted.
    let at_max: Vec<EventData> = (0..BATCH_EVENT_COUNT_MAX).map(|_| ev(0)).collect();
    let r = store
        .append("big", ExpectedVersion::NoStream, at_max)
        .unwrap();
    assert_eq!(
        r.streams[0],
        ("big".to_string(), 0, BATCH_EVENT_COUNT_MAX as u64 - 1)
    );
    assert_eq!(store.committed_position(), 1 + BATCH_EVENT_COUNT_MAX as u64);
    // Distinct ids in decreasing order (checked with a set) are accepted.
    let (older, newer) = (ev(1), ev(1));
    let (older_id, newer_id) = (older.id, newer.id);
    store
        .append("c", ExpectedVersion::NoStream, vec![newer, older])
        .unwrap();
    let read = store.read_stream("c", 0, Direction::Forwards, 10).unwrap();
    let ids: Vec<_> = read.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![newer_id, older_id]);
}

/// Options out of their ranges are refused with a message naming the option, before anything
/// is created: the directory does not exist afterwards (and nothing panics: a queue depth
/// past tokio's channel limit used to).
#[test]
fn bad_options_are_refused_before_the_directory_is_made() {
    use orchestrix::Durability;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    // Each case: the default options with one changed, and what the error must say.
    let case = |change: fn(&mut Options), says: &'static str| {
        let mut o = Options::default();
        change(&mut o);
        (o, says)
    };
    let cases = [
        case(
            |o| o.segment_size_bytes_max = 0,
            "segment_size_bytes_max 0 is below the minimum of 4096 bytes",
        ),
        case(
            |o| o.segment_size_bytes_max = 4095,
            "segment_size_bytes_max 4095",
        ),
        case(|o| o.queue_depth = 0, "queue_depth 0 is outside"),
        case(|o| o.queue_depth = usize::MAX, "queue_depth"),
        case(|o| o.event_size_max = 0, "event_size_max 0 is outside"),
        case(
            |o| o.event_size_max = BATCH_SIZE_MAX + 1,
            "event_size_max 67108865 is outside 1 to 67108864",
        ),
        case(|o| o.event_size_max = u64::MAX, "event_size_max"),
        case(
            |o| o.durability = Durability::Interval(Duration::ZERO),
            "sync interval of 0ns is below the minimum of 1ms",
        ),
        case(
            |o| o.durability = Durability::Interval(Duration::from_nanos(1)),
            "sync interval of 1ns",
        ),
        case(
            |o| o.index_checkpoint_interval = Duration::ZERO,
            "index_checkpoint_interval",
        ),
        case(
            |o| o.index_checkpoint_interval = Duration::from_micros(999),
            "index_checkpoint_interval 999",
        ),
    ];
    for (options, says) in cases {
        match Store::open_with(&dir, options.clone()) {
            Err(StoreError::InvalidInput(m)) => assert!(m.contains(says), "{says}: {m}"),
            Err(e) => panic!("{options:?}: {e}"),
            Ok(_) => panic!("{options:?} accepted"),
        }
        assert!(!dir.exists(), "{options:?}: the directory was made");
    }
    // The limits themselves are accepted.
    let ok = Options {
        segment_size_bytes_max: 4096,
        queue_depth: orchestrix::options::QUEUE_DEPTH_MAX,
        durability: Durability::Interval(Duration::from_millis(1)),
        index_checkpoint_interval: Duration::from_millis(1),
        event_size_max: BATCH_SIZE_MAX,
        ..Options::default()
    };
    let store = Store::open_with(&dir, ok).unwrap();
    store
        .append("s", ExpectedVersion::Any, vec![ev(1)])
        .unwrap();
}
