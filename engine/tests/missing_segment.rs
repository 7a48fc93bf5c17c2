//! A segment file missing between two others (deleted by hand, lost by a bad copy) lies below
//! the index checkpoint, where open does not scan, so the store opens; but a read across the
//! gap must fail naming it, never return events with positions missing between them.

use std::time::Duration;

use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store, StoreError};

#[test]
fn reads_across_a_missing_segment_fail() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    for i in 0..200u64 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                vec![EventData::new("E", vec![i as u8; 100])],
            )
            .unwrap();
    }
    let segments = store.info().unwrap().segments;
    assert!(segments.len() >= 4, "{} segments", segments.len());
    store.close().unwrap();
    drop(store);
    let (name, first, _) = &segments[1];
    std::fs::remove_file(dir.path().join("log").join(name)).unwrap();

    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    match store.read_all(0, Direction::Forwards, usize::MAX, &ReadFilter::all()) {
        Err(StoreError::Log(e)) => assert!(
            e.to_string().contains(&format!("{first} was expected")),
            "{e}"
        ),
        Err(e) => panic!("another error: {e}"),
        Ok(events) => panic!(
            "read {} events across the missing segment at position {first}",
            events.len()
        ),
    }
    let mut sub = store.subscribe_all(0, ReadFilter::all());
    let mut delivered = 0u64;
    loop {
        match sub.next_timeout(Duration::from_secs(5)) {
            Ok(Some(e)) => {
                assert_eq!(e.position, delivered, "the subscription skipped positions");
                delivered += 1;
            }
            Ok(None) => panic!("the subscription went quiet after {delivered} events"),
            Err(_) => break,
        }
    }
    // The error may come with the page that reaches the gap: never an event past it.
    assert!(delivered <= *first, "{delivered} events delivered");
}
