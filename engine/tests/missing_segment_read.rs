//! A sealed segment missing below the index checkpoint is not noticed by open (segments
//! there are not scanned: docs/architecture.md, "Recovery"); a read of a stream with events in
//! it reports the log as `Corrupted`, naming the missing segment, and does not write an empty
//! stream index file for it (which it then reported as the damaged file).

use orchestrix::{Direction, EventData, ExpectedVersion, LogError, Options, Store, StoreError};

#[test]
fn a_read_through_a_missing_segment_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    let mut i = 0u64;
    while store.info().unwrap().segments.len() < 4 {
        let stream = format!("s-{}", i % 4);
        let data = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(100));
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![EventData::json("E", data.into_bytes())],
            )
            .unwrap();
        i += 1;
    }
    let segments = store.info().unwrap().segments;
    store.close().unwrap();
    drop(store);
    let (victim, _, _) = &segments[1];
    std::fs::remove_file(dir.path().join("log").join(victim)).unwrap();

    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    match store.read_stream("s-0", 0, Direction::Forwards, 100_000) {
        Err(StoreError::Log(LogError::Corrupted { segment, .. })) => assert_eq!(&segment, victim),
        Err(e) => panic!("expected Corrupted naming {victim}, got {e}"),
        Ok(events) => panic!("read {} events through a missing segment", events.len()),
    }
}
