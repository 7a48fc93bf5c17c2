//! An event-id file whose entries are damaged (header intact, so open keeps it) is found by
//! the first look-up that reaches them: the writer drops the file and rebuilds it from its
//! segment. When that rebuild cannot be written (a full or unwritable disk; here a directory
//! stands where the file's temporary copy goes), the append failed with the write's error,
//! and the dropped file's ids were then in no file and not in memory: the client's retry of
//! the same append was written a second time, and an id of that segment was accepted again
//! in another stream. The ids of a segment whose file cannot be rebuilt are now held by the
//! writer, as those of a sealed segment whose file is not written yet, until a reopen.

use orchestrix::{EventData, ExpectedVersion, Options, Store, StoreError};

fn ev(n: u32) -> EventData {
    EventData::json("E", format!("{{\"n\":{n}}}").into_bytes())
}

/// Builds a store with many 4 KiB segments; returns the first append's events.
fn build(dir: &std::path::Path) -> Vec<EventData> {
    let s = Store::open_with(dir, Options::test()).unwrap();
    let first = vec![ev(0), ev(1)];
    s.append("s-0", ExpectedVersion::NoStream, first.clone())
        .unwrap();
    for i in 2..400 {
        s.append(&format!("s-{}", i % 5), ExpectedVersion::Any, vec![ev(i)])
            .unwrap();
    }
    first
}

#[test]
fn a_damaged_id_file_that_cannot_be_rebuilt_keeps_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let first = build(dir.path());
    let ids = dir.path().join("ids");
    let f = ids.join("00000000000000000000.ids");
    let mut b = std::fs::read(&f).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0x01;
    std::fs::write(&f, &b).unwrap();
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    std::fs::create_dir(ids.join("00000000000000000000.ids.tmp")).unwrap();

    let first_try = s.append("s-0", ExpectedVersion::NoStream, first.clone());
    let retry = s.append("s-0", ExpectedVersion::NoStream, first.clone());
    let reuse = s.append("other", ExpectedVersion::Any, vec![first[0].clone()]);
    assert_eq!(
        s.committed_position(),
        400,
        "nothing may be written: first try {first_try:?}, retry {retry:?}, reuse {reuse:?}"
    );
    for r in [first_try, retry] {
        let r = r.unwrap();
        assert!(r.already_stored);
        assert_eq!(r.first_position, 0);
    }
    assert!(
        matches!(reuse, Err(StoreError::DuplicateEventId { position: 0, .. })),
        "{reuse:?}"
    );
    drop(s);

    // The next open rebuilds the file once it can be written.
    std::fs::remove_dir(ids.join("00000000000000000000.ids.tmp")).unwrap();
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    assert!(
        s.append("s-0", ExpectedVersion::NoStream, first.clone())
            .unwrap()
            .already_stored
    );
    assert_eq!(s.committed_position(), 400);
    assert_ne!(std::fs::read(&f).unwrap(), b, "the file was rebuilt");
}
