//! A stream index file that cannot be written when its segment is sealed leaves that
//! segment's batches in the in-memory index, and the next segment's seal must not take them
//! away: reads, forwards and backwards, and a stream subscription still return every
//! acknowledged event. Reopening rebuilds the missing file.
//!
//! The write is made to fail by a directory standing where the file's temporary copy goes.

use std::path::Path;
use std::time::{Duration, Instant};

use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store};

const STREAM: &str = "s";

fn append(store: &Store, version: u64) {
    let expected = version
        .checked_sub(1)
        .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
    store
        .append(STREAM, expected, vec![EventData::new("E", vec![7u8; 200])])
        .expect("append");
}

fn segments(store: &Store) -> Vec<u64> {
    store
        .info()
        .expect("info")
        .segments
        .iter()
        .map(|s| s.1)
        .collect()
}

fn stream_file(dir: &Path, segment: u64) -> std::path::PathBuf {
    dir.join("streams").join(format!("{segment:020}.streams"))
}

/// Waits (a condition, not a time) until the indexer has written `segment`'s stream file.
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn check_reads(store: &Store, events: u64, when: &str) {
    let want: Vec<u64> = (0..events).collect();
    let forwards: Vec<u64> = store
        .read_stream(STREAM, 0, Direction::Forwards, usize::MAX)
        .expect("read forwards")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(forwards, want, "{when}: forwards");
    let mut backwards: Vec<u64> = store
        .read_stream(STREAM, u64::MAX, Direction::Backwards, usize::MAX)
        .expect("read backwards")
        .iter()
        .map(|e| e.version)
        .collect();
    backwards.reverse();
    assert_eq!(backwards, want, "{when}: backwards");
    // In pages of 3, as a caller paging through the stream does.
    let mut paged = Vec::new();
    while let Some(page) = Some(
        store
            .read_stream(STREAM, paged.len() as u64, Direction::Forwards, 3)
            .expect("read a page"),
    )
    .filter(|p| !p.is_empty())
    {
        paged.extend(page.iter().map(|e| e.version));
    }
    assert_eq!(paged, want, "{when}: paged");
}

#[test]
fn a_failed_stream_file_keeps_its_batches_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    let mut version = 0;
    for _ in 0..3 {
        append(&store, version);
        version += 1;
    }
    let blocked = *segments(&store).last().expect("a segment");
    let tmp = dir
        .path()
        .join("streams")
        .join(format!("{blocked:020}.streams.tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    // Two more segments sealed after the blocked one: the first of them has its file written.
    while segments(&store).len() < 4 {
        append(&store, version);
        version += 1;
    }
    let all = segments(&store);
    let next_sealed = all[all.iter().position(|&s| s == blocked).unwrap() + 1];
    wait_for_file(&stream_file(dir.path(), next_sealed));
    assert!(
        !stream_file(dir.path(), blocked).exists(),
        "the blocked segment's file could not be written"
    );

    check_reads(&store, version, "after the failed write");
    let mut sub = store
        .subscribe_stream(STREAM, 0, ReadFilter::all())
        .unwrap();
    for v in 0..version {
        let e = sub
            .next_timeout(Duration::from_secs(10))
            .expect("subscription")
            .unwrap_or_else(|| panic!("the subscription stopped before version {v}"));
        assert_eq!(
            e.version, v,
            "the subscription delivers every version in order"
        );
    }
    drop(sub);

    store.close().unwrap();
    drop(store);
    std::fs::remove_dir(&tmp).unwrap();
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    check_reads(&store, version, "after reopening");
    store.verify().expect("verify after reopening");
}
