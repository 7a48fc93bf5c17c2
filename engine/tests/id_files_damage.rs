//! The event-id files (one per sealed segment, under `ids/`) and the group filters over them
//! (`.group`, one per 8 sealed segments) are derived data: deleted, truncated or bit-flipped,
//! they are rebuilt from their segments (or id files), and idempotency keeps working for
//! events of sealed segments. Pins the id-file layer of the index.
//!
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

fn files_with(dir: &std::path::Path, extension: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("ids"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    v.sort();
    v
}

fn id_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    files_with(dir, "ids")
}

fn check(dir: &std::path::Path, first: &[EventData]) {
    let s = Store::open_with(dir, Options::test()).unwrap();
    assert!(
        s.info().unwrap().id_files > 3,
        "sealed segments have id files again"
    );
    // Repeating the first append (its events sit in the first, sealed segment) is recognised.
    let r = s
        .append("s-0", ExpectedVersion::NoStream, first.to_vec())
        .unwrap();
    assert!(r.already_stored);
    assert_eq!(r.first_position, 0);
    // Reusing one of those ids elsewhere is refused.
    assert!(matches!(
        s.append("other", ExpectedVersion::Any, vec![first[0].clone()]),
        Err(StoreError::DuplicateEventId { position: 0, .. })
    ));
    assert_eq!(s.committed_position(), 400);
    s.verify().unwrap();
}

#[test]
fn deleted_id_directory_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let first = build(dir.path());
    std::fs::remove_dir_all(dir.path().join("ids")).unwrap();
    check(dir.path(), &first);
}

#[test]
fn truncated_id_file_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let first = build(dir.path());
    let f = id_files(dir.path())[0].clone();
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    check(dir.path(), &first);
}

#[test]
fn flipped_header_byte_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let first = build(dir.path());
    let f = id_files(dir.path())[0].clone();
    let mut b = std::fs::read(&f).unwrap();
    b[30] ^= 0x10;
    std::fs::write(&f, &b).unwrap();
    check(dir.path(), &first);
}

#[test]
fn flipped_entry_byte_is_found_by_the_lookup_and_rebuilt_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let first = build(dir.path());
    let f = id_files(dir.path())[0].clone();
    let mut b = std::fs::read(&f).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0x01;
    std::fs::write(&f, &b).unwrap();
    {
        // The header is intact, so open keeps the file; the first lookup that reaches its
        // entries finds their checksum wrong, and the writer rebuilds the file from the
        // segment and answers correctly.
        let s = Store::open_with(dir.path(), Options::test()).unwrap();
        let r = s
            .append("s-0", ExpectedVersion::NoStream, first.clone())
            .unwrap();
        assert!(r.already_stored);
        assert_eq!(s.committed_position(), 400, "nothing written");
        assert_ne!(std::fs::read(&f).unwrap(), b, "the file was rewritten");
    }
    check(dir.path(), &first);
}

#[test]
fn damaged_and_deleted_group_filters_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let first = build(dir.path());
    let ids = id_files(dir.path()).len();
    let groups = files_with(dir.path(), "group");
    assert_eq!(
        groups.len(),
        ids / 8,
        "a group filter per 8 sealed segments"
    );
    assert!(!groups.is_empty(), "{ids} id files");
    let group = groups[0].clone();
    let good = std::fs::read(&group).unwrap();
    let mut b = good.clone();
    let last = b.len() - 1;
    b[last] ^= 0x40;
    std::fs::write(&group, &b).unwrap();
    check(dir.path(), &first);
    assert_eq!(
        std::fs::read(&group).unwrap(),
        good,
        "the damaged filter was rebuilt"
    );
    std::fs::remove_file(&group).unwrap();
    check(dir.path(), &first);
    assert_eq!(
        std::fs::read(&group).unwrap(),
        good,
        "the deleted filter was rebuilt"
    );
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
