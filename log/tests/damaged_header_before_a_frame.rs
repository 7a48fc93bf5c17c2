//! A newest segment whose header is damaged but which holds a valid frame is corruption, not
//! a segment torn while rolling (the header is synced before any frame is written): open
//! refuses it, even when that frame is the segment's only one (its position is the
//! segment's first, which a later frame's check must accept).

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::*;
use orchestrix_log::fs::StdFs;
use orchestrix_log::segment::file_name;
use orchestrix_log::LogError;

#[test]
fn a_damaged_header_before_a_frame_is_corruption() {
    for frames in [1u64, 2] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = open_collect(Arc::new(StdFs), dir.path()).unwrap();
            for id in 0..frames {
                append_commit(&mut o.writer, &attempt(id, 1, 40)).unwrap();
            }
        }
        let seg = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(file_name(0)))
            .unwrap();
        seg.write_all_at(b"X", 1).unwrap();
        match open_collect(Arc::new(StdFs), dir.path()) {
            Err(LogError::Corrupted { offset: 0, .. }) => {}
            Err(e) => panic!("{frames} frames: {e}"),
            Ok(o) => panic!(
                "{frames} frames: opened with {} frames, truncated {:?}",
                o.frames.len(),
                o.report.truncated
            ),
        }
    }
}
