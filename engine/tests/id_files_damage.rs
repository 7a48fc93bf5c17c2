//! The event-id files (one per sealed segment, under `ids/`) and the group filters over them
//! (`.group`, one per 8 sealed segments) are derived data: deleted, truncated or bit-flipped,
//! they are rebuilt from their segments (or id files), and idempotency keeps working for
//! events of sealed segments. Pins the id-file layer of the index.

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
