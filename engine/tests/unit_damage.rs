//! `Store::verify` finds a unit of frames that is not whole where recovery does not look.
//!
//! Recovery checks units from the index checkpoint on; `verify` reads the whole log. Here the
//! last frame of a clean store (the last part of a multi-stream append, below the checkpoint)
//! is rewritten, CRC and all, to say that its unit goes on: the store still opens (recovery
//! starts after it), and `verify` must name the unit's segment and offset. The same holds for
//! a unit forged to go on past the end of a sealed segment (units never span segments).

use std::path::Path;

use orchestrix::{EventData, ExpectedVersion, Options, Store, StoreError};
mod common;

use common::segment_files;
use orchestrix_log::testing::forge_unit_continues;
use orchestrix_log::LogError;

fn only_segment(dir: &Path) -> std::path::PathBuf {
    let mut segments = segment_files(dir);
    assert_eq!(segments.len(), 1);
    segments.pop().unwrap()
}

/// One multi-stream append: a unit of three frames.
fn append_to_three_streams(store: &Store) {
    let parts = ["a", "b", "c"]
        .iter()
        .map(|s| {
            (
                s.to_string(),
                ExpectedVersion::NoStream,
                vec![EventData::json("E", b"{}".to_vec())],
            )
        })
        .collect();
    store.append_multi(parts).unwrap();
}

#[test]
fn verify_finds_a_unit_that_ends_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        append_to_three_streams(&store);
        assert_eq!(store.verify().unwrap(), 3);
        store.close().unwrap();
    }
    let at = forge_unit_continues(&only_segment(dir.path()));

    let store = Store::open(dir.path()).unwrap();
    match store.verify() {
        Err(StoreError::Log(LogError::Corrupted { offset, reason, .. })) => {
            assert_eq!(offset, at as u64);
            assert!(reason.contains("ends with the log"), "{reason}");
        }
        other => panic!("verify passed a unit without its last frame: {other:?}"),
    }
}

#[test]
fn verify_finds_a_unit_that_ends_with_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), Options::test()).unwrap();
        append_to_three_streams(&store);
        // An event too large for what is left of the first segment: the log rolls, and the
        // multi-stream append is the last thing in the sealed segment.
        store
            .append(
                "d",
                ExpectedVersion::NoStream,
                vec![EventData::new("E", vec![7; 3900])],
            )
            .unwrap();
        assert_eq!(store.verify().unwrap(), 4);
        store.close().unwrap();
    }
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 2, "{segments:?}");
    let at = forge_unit_continues(&segments[0]);

    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    match store.verify() {
        Err(StoreError::Log(LogError::Corrupted {
            segment,
            offset,
            reason,
        })) => {
            assert_eq!(offset, at as u64);
            assert!(segments[0].ends_with(&segment), "{segment}");
            assert!(reason.contains("ends with its segment"), "{reason}");
        }
        other => panic!("verify passed a unit cut at the end of its segment: {other:?}"),
    }
}
