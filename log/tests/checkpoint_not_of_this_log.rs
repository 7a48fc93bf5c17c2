//! A checkpoint that names no place of this log is a damaged index or one of another store or
//! history: open answers `CheckpointMismatch` (the caller rebuilds its index), not `Corrupted`
//! (an intact log refused), not a replay from the wrong position, and leaves the log
//! untouched.
//!
//! - Inside a segment's header: scanning from there would read the header as a damaged frame;
//!   with a position past the log's, no later frame could prove it durable, and the whole
//!   segment would be cut as a torn tail.
//! - At a frame boundary of this log, with a position other than the one there.

mod common;

use common::*;
use orchestrix_log::{Checkpoint, LogError};

/// Opens the log of `dir` from `checkpoint`, which must be answered `CheckpointMismatch`,
/// with the segment file at `segment` unchanged.
fn assert_mismatch(dir: &std::path::Path, segment: &std::path::Path, checkpoint: Checkpoint) {
    let before = std::fs::read(segment).unwrap();
    match open_from(dir, checkpoint) {
        Err(LogError::CheckpointMismatch(_)) => {}
        Err(e) => panic!("{checkpoint:?}: expected CheckpointMismatch, got {e}"),
        Ok((_, _, report)) => panic!(
            "{checkpoint:?}: opened (next position {}, truncated: {:?})",
            report.next_position, report.truncated
        ),
    }
    assert_eq!(
        std::fs::read(segment).unwrap(),
        before,
        "{checkpoint:?}: the segment changed"
    );
}

/// A log of 6 frames of 2 events in its first segment; the segment's path and the frames'
/// locations.
fn six_frames(dir: &std::path::Path) -> (std::path::PathBuf, Vec<orchestrix_log::FrameLocation>) {
    let mut opened = open_collect(no_sync_fs(), dir).unwrap();
    let locations = (0..6)
        .map(|id| append_commit(&mut opened.writer, &attempt(id, 2, 30)).unwrap())
        .collect();
    (dir.join(&opened.reader.segments()[0].name), locations)
}

#[test]
fn a_checkpoint_inside_a_segment_header_is_a_mismatch_and_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, _) = six_frames(dir.path());
    for (offset, next_position) in [(0, 0), (8, 12), (8, 1000), (31, 1000)] {
        let checkpoint = Checkpoint {
            segment: 0,
            offset,
            next_position,
        };
        assert_mismatch(dir.path(), &segment, checkpoint);
    }
}

#[test]
fn a_checkpoint_at_a_frame_boundary_with_another_position_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, locations) = six_frames(dir.path());
    // After the third frame the log is at position 6; a checkpoint there that says 5 or 9.
    let at = locations[2];
    for next_position in [5, 9] {
        let checkpoint = Checkpoint {
            segment: at.segment,
            offset: at.offset + at.len,
            next_position,
        };
        assert_mismatch(dir.path(), &segment, checkpoint);
    }
}
