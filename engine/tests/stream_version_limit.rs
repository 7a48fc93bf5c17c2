//! A stream's versions end below `u64::MAX`: an append whose events would run past that is
//! refused with a typed error, and the store carries on. No stream reaches those versions one
//! append at a time, so the test writes a frame near the end into the log itself (as a log
//! from elsewhere, or a damaged one that is still CRC-valid, could hold), and the store picks
//! it up on open.

use std::sync::Arc;

use orchestrix::{Direction, EventData, ExpectedVersion, Options, Store, StoreError};
use orchestrix_log::fs::StdFs;
use orchestrix_log::record::encode_payload;
use orchestrix_log::{EventRecord, LogConfig};

fn record(n: u8) -> EventRecord {
    EventRecord {
        id: [n; 16],
        event_type: "E".into(),
        source: "test".into(),
        subject: None,
        time_unix_nanos: 0,
        data_content_type: None,
        data_schema: None,
        correlation_id: None,
        causation_id: None,
        metadata: Vec::new(),
        data: vec![n],
    }
}

fn one() -> Vec<EventData> {
    vec![EventData::new("E", b"x".to_vec())]
}

#[test]
fn appends_past_the_last_version_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    Store::open_with(dir.path(), Options::test())
        .unwrap()
        .close()
        .unwrap();
    {
        let (_, mut w, _) = orchestrix_log::open(
            Arc::new(StdFs),
            &dir.path().join("log"),
            LogConfig::default(),
            None,
            &mut |_, _, _| Ok(()),
        )
        .unwrap();
        let events = [record(1)];
        w.append(1, |out| {
            encode_payload(out, std::iter::once(("s", u64::MAX - 3, &events[..])))
        })
        .unwrap();
        w.commit(true).unwrap();
    }
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    assert_eq!(store.stream_head("s").unwrap(), Some(u64::MAX - 3));
    store.append("s", ExpectedVersion::Any, one()).unwrap();
    // Versions MAX - 1 and MAX: the second is not a version a stream can have.
    let two = vec![
        EventData::new("E", b"a".to_vec()),
        EventData::new("E", b"b".to_vec()),
    ];
    match store.append("s", ExpectedVersion::Exact(u64::MAX - 2), two) {
        Err(StoreError::InvalidInput(why)) => assert!(why.contains("no versions left"), "{why}"),
        other => panic!("an append past the last version gave {other:?}"),
    }
    let r = store
        .append("s", ExpectedVersion::Exact(u64::MAX - 2), one())
        .unwrap();
    assert_eq!(r.next_expected_version(), u64::MAX - 1);
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, one()),
        Err(StoreError::InvalidInput(_))
    ));
    // The store carries on: other streams, and reads of this one.
    store.append("t", ExpectedVersion::NoStream, one()).unwrap();
    let last = store
        .read_stream("s", u64::MAX, Direction::Backwards, 1)
        .unwrap();
    assert_eq!(last[0].version, u64::MAX - 1);
    store.close().unwrap();
    drop(store);
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    assert_eq!(store.stream_head("s").unwrap(), Some(u64::MAX - 1));
    store.verify().unwrap();
}
