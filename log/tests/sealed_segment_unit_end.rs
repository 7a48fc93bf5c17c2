//! A sealed segment whose last frame says that its unit goes on is corruption, reported with
//! the segment and the frame's offset, and never cut.
//!
//! A roll never splits a unit, and a sealed segment was fsynced whole before the next one was
//! created: a sealed segment that ends inside a unit (its last frame, CRC-valid, carries
//! `FRAME_CONTINUES`) has lost durable bytes or was written by something else. Recovery
//! must refuse to open it, not take it for a torn tail and truncate the sealed segment (which
//! would drop acknowledged frames and leave the segments after it unscanned).

mod common;

use common::*;
use orchestrix_log::testing::{forge_unit_continues, last_frame};
use orchestrix_log::LogError;

#[test]
fn a_sealed_segment_ending_inside_a_unit_is_reported_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (opened, _) = log_of_segments(dir.path(), 3, |id| attempt(id, 1 + (id % 3) as u32, 40));
    let sealed = opened.reader.segments()[0].clone();
    drop(opened);

    // The sealed segment's last frame, rewritten (CRC and all) to say its unit goes on.
    let path = dir.path().join(&sealed.name);
    let (last, frame) = last_frame(&std::fs::read(&path).unwrap());
    assert_eq!(
        last + frame.len(),
        std::fs::metadata(&path).unwrap().len() as usize,
        "the frame ends the segment"
    );
    let at = forge_unit_continues(&path);
    let bytes = std::fs::read(&path).unwrap();

    match open_collect(no_sync_fs(), dir.path()) {
        Err(LogError::Corrupted {
            segment, offset, ..
        }) => assert_eq!(
            (segment.as_str(), offset),
            (sealed.name.as_str(), at as u64)
        ),
        Err(e) => panic!("expected Corrupted, got {e}"),
        Ok(o) => panic!(
            "a sealed segment ending inside a unit was opened (truncated: {:?})",
            o.report.truncated
        ),
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "recovery changed the sealed segment"
    );
}
