//! `Store::verify` finds a frame at the wrong position where recovery does not look (below the
//! index checkpoint).
//!
//! Recovery scans the log from the index checkpoint on; `verify` reads the whole log and must
//! check that positions run on without a gap. Here the first frame of a clean store, in a
//! sealed segment, is rewritten, CRC and all, to claim the next position: the store still
//! opens (recovery starts after it, and the sealed segment's index files are whole), and
//! `verify` must name the frame's segment and offset.

use orchestrix::{EventData, ExpectedVersion, Options, Store, StoreError};
mod common;

use common::segment_files;
use orchestrix_log::frame::decode_frame;
use orchestrix_log::segment::SEGMENT_HEADER_SIZE;
use orchestrix_log::testing::reforge_frame;
use orchestrix_log::LogError;

#[test]
fn verify_finds_a_frame_at_the_wrong_position_below_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), Options::test()).unwrap();
        for i in 0..4u8 {
            store
                .append(
                    &format!("s{i}"),
                    ExpectedVersion::NoStream,
                    vec![EventData::json("E", b"{}".to_vec())],
                )
                .unwrap();
        }
        // An event too large for what is left of the first segment: the log rolls.
        store
            .append(
                "big",
                ExpectedVersion::NoStream,
                vec![EventData::new("E", vec![7; 3900])],
            )
            .unwrap();
        assert_eq!(store.verify().unwrap(), 5);
        store.close().unwrap();
    }
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 2, "{segments:?}");
    let path = segments[0].clone();

    // The first frame (position 0), rewritten to say it holds position 1.
    let at = SEGMENT_HEADER_SIZE;
    let (h, _) = decode_frame(&std::fs::read(&path).unwrap()[at..]).unwrap();
    assert_eq!(h.first_position, 0);
    reforge_frame(&path, at, 1, h.continues);

    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    match store.verify() {
        Err(StoreError::Log(LogError::Corrupted {
            segment,
            offset,
            reason,
        })) => {
            assert!(path.ends_with(&segment), "{segment}");
            assert_eq!(offset, at as u64);
            assert!(reason.contains("where 0 was expected"), "{reason}");
        }
        other => panic!("verify passed a frame at the wrong position: {other:?}"),
    }
}
