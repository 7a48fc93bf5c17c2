//! A frame location comes from the index, which is derived data: one that points outside its
//! segment (or whose offset and length overflow when added) is refused as corruption, never
//! read past the file or allowed to panic.

mod common;

use std::sync::Arc;

use common::*;
use orchestrix_log::fs::StdFs;
use orchestrix_log::{FrameLocation, LogError};

#[test]
fn locations_outside_the_segment_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open_collect(Arc::new(StdFs), dir.path()).unwrap();
    let good = append_commit(&mut o.writer, &attempt(0, 1, 40)).unwrap();
    assert!(o.reader.read_frame(good).is_ok());
    let bad = [
        (good.offset, u64::MAX),
        (u64::MAX - 8, 100),
        (u64::MAX, u64::MAX),
        (good.offset + good.len, good.len),
        (good.offset, 3),
    ];
    for (offset, len) in bad {
        let loc = FrameLocation {
            segment: good.segment,
            offset,
            len,
        };
        match o.reader.read_frame(loc) {
            Err(LogError::Corrupted { .. }) => {}
            other => panic!("{loc:?}: {:?}", other.map(|(h, _)| h)),
        }
    }
}
