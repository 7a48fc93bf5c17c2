//! An append that reuses stored ids while expecting the stream's current version (the
//! caller believes its events are new) is a conflicting reuse of ids: `DuplicateEventId`.
//! It was answered `WrongExpectedVersion` naming a current version equal to the expected
//! one, so that a caller re-reading the head and retrying got the same error forever. Found
//! by a review.

use orchestrix::{EventData, ExpectedVersion, Options, Store, StoreError};

fn ev(n: u32) -> EventData {
    EventData::json("E", format!("{{\"n\":{n}}}").into_bytes())
}

#[test]
fn reused_ids_at_the_current_version_are_a_duplicate_id_not_a_version_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    let (a, b, c) = (ev(0), ev(1), ev(2));
    s.append("s", ExpectedVersion::NoStream, vec![a.clone(), b.clone()])
        .unwrap();
    s.append("s", ExpectedVersion::Exact(1), vec![c.clone()])
        .unwrap();
    for (reused, stored_at) in [
        (vec![a.clone()], 0),
        (vec![b.clone()], 1),
        (vec![a.clone(), b.clone()], 0),
    ] {
        // The caller re-reads the head and appends at it, as an optimistic-concurrency retry
        // loop does, three times.
        for attempt in 0..3 {
            let head = s.stream_head("s").unwrap().unwrap();
            let err = s
                .append("s", ExpectedVersion::Exact(head), reused.clone())
                .unwrap_err();
            println!("attempt {attempt}, expected Exact({head}): {err}");
            match err {
                StoreError::DuplicateEventId { id, position } => {
                    assert_eq!(id, reused[0].id.to_string());
                    assert_eq!(position, stored_at);
                }
                e => panic!("{e}"),
            }
        }
    }
    // Without a version to hold (`StreamExists`, `Any`) a repeat is answered as stored.
    let r = s
        .append("s", ExpectedVersion::StreamExists, vec![b.clone()])
        .unwrap();
    assert!(r.already_stored);
    // An expectation wrong against the head too is still a version conflict naming the head.
    match s
        .append("s", ExpectedVersion::Exact(0), vec![c])
        .unwrap_err()
    {
        StoreError::WrongExpectedVersion { current, .. } => assert_eq!(current, Some(2)),
        e => panic!("{e}"),
    }
    match s
        .append("s", ExpectedVersion::NoStream, vec![b])
        .unwrap_err()
    {
        StoreError::WrongExpectedVersion { current, .. } => assert_eq!(current, Some(2)),
        e => panic!("{e}"),
    }
    assert_eq!(s.committed_position(), 3);
}
