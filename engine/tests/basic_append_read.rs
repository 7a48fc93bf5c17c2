//! The basic contract: append with every expected-version mode, read by stream both ways,
//! read all with filters, reopen and find everything again, idempotent repeats.

use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store, StoreError};

fn ev(t: &'static str, n: u32) -> EventData {
    EventData::json(t, format!("{{\"n\":{n}}}").into_bytes())
}

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open_with(dir.path(), Options::test()).unwrap();
        let r = s
            .append("a", ExpectedVersion::NoStream, vec![ev("A", 0), ev("A", 1)])
            .unwrap();
        assert_eq!(r.first_position, 0);
        assert_eq!(r.streams, vec![("a".to_string(), 0, 1)]);
        let err = s
            .append("a", ExpectedVersion::Exact(0), vec![ev("A", 2)])
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::WrongExpectedVersion {
                    current: Some(1),
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            s.append("a", ExpectedVersion::NoStream, vec![ev("A", 2)]),
            Err(StoreError::WrongExpectedVersion { .. })
        ));
        assert!(matches!(
            s.append("b", ExpectedVersion::StreamExists, vec![ev("B", 0)]),
            Err(StoreError::WrongExpectedVersion { current: None, .. })
        ));
        s.append("b", ExpectedVersion::Any, vec![ev("B", 0)])
            .unwrap();
        for i in 2..200 {
            s.append(
                "a",
                ExpectedVersion::Exact(i - 1),
                vec![ev(if i % 2 == 0 { "A" } else { "X" }, i as u32)],
            )
            .unwrap();
        }
        let m = s
            .append_multi(vec![
                ("a".into(), ExpectedVersion::Exact(199), vec![ev("A", 200)]),
                (
                    "c".into(),
                    ExpectedVersion::NoStream,
                    vec![ev("C", 0), ev("C", 1)],
                ),
            ])
            .unwrap();
        assert_eq!(m.streams.len(), 2);
        // A multi-stream append with one bad expectation writes nothing.
        let before = s.committed_position();
        assert!(s
            .append_multi(vec![
                ("a".into(), ExpectedVersion::Exact(200), vec![ev("A", 201)]),
                ("c".into(), ExpectedVersion::Exact(0), vec![ev("C", 2)]),
            ])
            .is_err());
        assert_eq!(s.committed_position(), before);
        assert!(s.info().unwrap().segments.len() > 3, "4 KiB segments roll");
    }
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    let a = s.read_stream("a", 0, Direction::Forwards, 1000).unwrap();
    assert_eq!(a.len(), 201);
    assert!(a.iter().enumerate().all(|(i, e)| e.version == i as u64));
    let back = s
        .read_stream("a", u64::MAX, Direction::Backwards, 5)
        .unwrap();
    assert_eq!(
        back.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![200, 199, 198, 197, 196]
    );
    let mid = s.read_stream("a", 50, Direction::Forwards, 3).unwrap();
    assert_eq!(
        mid.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![50, 51, 52]
    );
    let all = s
        .read_all(0, Direction::Forwards, 10_000, &ReadFilter::all())
        .unwrap();
    assert_eq!(all.len() as u64, s.committed_position());
    assert!(all.iter().enumerate().all(|(i, e)| e.position == i as u64));
    let xs = s
        .read_all(0, Direction::Forwards, 10_000, &ReadFilter::types(["X"]))
        .unwrap();
    assert_eq!(xs.len(), 99);
    let cs = s
        .read_all(
            0,
            Direction::Forwards,
            10_000,
            &ReadFilter::stream_prefix("c"),
        )
        .unwrap();
    assert_eq!(cs.len(), 2);
    let last = s
        .read_all(u64::MAX, Direction::Backwards, 2, &ReadFilter::all())
        .unwrap();
    assert_eq!(last[0].position, s.committed_position() - 1);
    assert_eq!(s.stream_head("a").unwrap(), Some(200));
    assert_eq!(s.list_streams(None).len(), 3);
    assert_eq!(s.verify().unwrap(), s.committed_position());
}

#[test]
fn idempotent_repeat_and_conflicting_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    let e1 = ev("A", 1);
    let e2 = ev("A", 2);
    let r1 = s
        .append("s", ExpectedVersion::NoStream, vec![e1.clone(), e2.clone()])
        .unwrap();
    let r2 = s
        .append("s", ExpectedVersion::NoStream, vec![e1.clone(), e2.clone()])
        .unwrap();
    assert!(r2.already_stored);
    assert_eq!(r2.first_position, r1.first_position);
    assert_eq!(s.committed_position(), 2);
    // The same ids in another stream are a conflict.
    assert!(matches!(
        s.append("t", ExpectedVersion::Any, vec![e1.clone()]),
        Err(StoreError::DuplicateEventId { position: 0, .. })
    ));
    // Mixed new and old ids are a conflict.
    assert!(matches!(
        s.append("s", ExpectedVersion::Any, vec![e2.clone(), ev("A", 3)]),
        Err(StoreError::DuplicateEventId { .. })
    ));
    assert_eq!(s.committed_position(), 2);
    drop(s);
    // After reopen (ids now in the persistent index) the repeat still succeeds.
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    let r3 = s.append(
        "s",
        ExpectedVersion::Exact(u64::MAX),
        vec![e1.clone(), e2.clone()],
    );
    assert!(
        matches!(r3, Err(StoreError::WrongExpectedVersion { .. })),
        "{r3:?}"
    );
    let r4 = s
        .append("s", ExpectedVersion::NoStream, vec![e1, e2])
        .unwrap();
    assert!(r4.already_stored);
    assert_eq!(s.committed_position(), 2);
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _s = Store::open(dir.path()).unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::Locked { .. })
    ));
}

#[test]
fn deleting_the_index_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open_with(dir.path(), Options::test()).unwrap();
        for i in 0..100 {
            s.append(
                &format!("s-{}", i % 7),
                ExpectedVersion::Any,
                vec![ev("A", i)],
            )
            .unwrap();
        }
    }
    std::fs::remove_file(dir.path().join("index.redb")).unwrap();
    let (s, report) = orchestrix::Store::open_with_vfs(
        dir.path(),
        Options::test(),
        std::sync::Arc::new(orchestrix_log::fs::StdFs),
    )
    .unwrap();
    assert_eq!(report.log.events_replayed, 100);
    assert_eq!(
        s.read_stream("s-3", 0, Direction::Forwards, 100)
            .unwrap()
            .len(),
        14
    );
    assert_eq!(s.list_streams(None).len(), 7);
}

#[test]
fn an_id_repeated_within_one_append_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    let e = ev("A", 1);
    assert!(matches!(
        s.append("a", ExpectedVersion::Any, vec![e.clone(), e.clone()]),
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        s.append_multi(vec![
            ("a".into(), ExpectedVersion::Any, vec![e.clone()]),
            ("b".into(), ExpectedVersion::Any, vec![e.clone()]),
        ]),
        Err(StoreError::InvalidInput(_))
    ));
    assert_eq!(s.committed_position(), 0);
}
