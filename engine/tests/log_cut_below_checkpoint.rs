//! A log that has lost bytes below the index checkpoint is reported as corrupted, not cut.
//!
//! The index records a checkpoint only once the log is durable up to it, so the log's bytes
//! below the checkpoint held acknowledged events. When the log no longer reaches the
//! checkpoint (its segment cut short, the segment or every segment gone), open used to take
//! the index for stale, rebuild it, and then cut what was left of the damaged frame as a torn
//! tail: acknowledged events vanished and `verify` said ok. Open now fails naming the segment
//! and offset, and leaves the files as they were; deleting the index is the deliberate way to
//! open what is left.

use std::path::{Path, PathBuf};

use orchestrix::{EventData, ExpectedVersion, Options, Store, StoreError};
use orchestrix_log::LogError;

/// 60 events over several 4 KiB segments, closed and reopened once so that the checkpoint is
/// recorded at the end of the log; returns the segment files, oldest first.
fn build(dir: &Path) -> Vec<PathBuf> {
    {
        let store = Store::open_with(dir, Options::test()).unwrap();
        for i in 0..60u64 {
            store
                .append(
                    "s",
                    ExpectedVersion::Any,
                    vec![EventData::new("E", vec![i as u8; 100])],
                )
                .unwrap();
        }
    }
    let store = Store::open_with(dir, Options::test()).unwrap();
    let cp = store
        .info()
        .unwrap()
        .index_checkpoint
        .expect("a checkpoint");
    assert_eq!(cp.next_position, 60);
    drop(store);
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{} segments", segs.len());
    segs
}

/// Every file of the store with its length (the store must leave them as they were).
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            } else if e.file_name() != "LOCK" {
                out.push((e.path(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

fn refused(dir: &Path, segment: &Path, what: &str) {
    let before = files(dir);
    match Store::open_with(dir, Options::test()) {
        Ok(s) => panic!(
            "{what}: opened with {} events: acknowledged events are gone without an error",
            s.committed_position()
        ),
        Err(StoreError::Log(LogError::Corrupted {
            segment: named,
            reason,
            ..
        })) => {
            let want = segment.file_name().unwrap().to_string_lossy().to_string();
            assert_eq!(named, want, "{what}: names the segment ({reason})");
            assert!(reason.contains("checkpoint"), "{what}: says why: {reason}");
        }
        Err(e) => panic!("{what}: unexpected error {e}"),
    }
    assert_eq!(files(dir), before, "{what}: open changed the files");
}

/// Deleting the index opens what is left: the events before the damage.
fn opens_without_index(dir: &Path, want: u64) {
    std::fs::remove_file(dir.join("index.redb")).unwrap();
    let store = Store::open_with(dir, Options::test()).unwrap();
    assert_eq!(store.committed_position(), want);
}

#[test]
fn active_segment_cut_below_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path());
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    refused(dir.path(), last, "active segment cut to half");
    let first_of_last: u64 = last.file_stem().unwrap().to_string_lossy().parse().unwrap();
    let store_dir = dir.path().to_path_buf();
    std::fs::remove_file(store_dir.join("index.redb")).unwrap();
    let store = Store::open_with(&store_dir, Options::test()).unwrap();
    let n = store.committed_position();
    assert!(
        n >= first_of_last && n < 60,
        "{n} events after the index was deleted"
    );
}

#[test]
fn newest_segment_missing() {
    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path());
    let last = segs.last().unwrap();
    std::fs::remove_file(last).unwrap();
    refused(dir.path(), last, "newest segment deleted");
    let first_of_last: u64 = last.file_stem().unwrap().to_string_lossy().parse().unwrap();
    opens_without_index(dir.path(), first_of_last);
}

#[test]
fn every_segment_missing() {
    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path());
    for s in &segs {
        std::fs::remove_file(s).unwrap();
    }
    refused(dir.path(), segs.last().unwrap(), "every segment deleted");
    opens_without_index(dir.path(), 0);
}
