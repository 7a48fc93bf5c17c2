//! A checkpoint whose offset is a frame boundary of this log, but whose position is not the
//! position there, is not this log's (an index of another store or history): open answers
//! `CheckpointMismatch` (the caller rebuilds its index), not `Corrupted` (an intact log
//! refused) and not a replay from the wrong position.

mod common;

use common::*;
use orchestrix_log::{open, Checkpoint, LogError};

#[test]
fn a_checkpoint_at_a_frame_boundary_with_another_position_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut opened = open_collect(no_sync_fs(), dir.path()).unwrap();
    let mut locations = Vec::new();
    for id in 0..6 {
        locations.push(append_commit(&mut opened.writer, &attempt(id, 2, 30)).unwrap());
    }
    let segment = dir.path().join(&opened.reader.segments()[0].name);
    let before = std::fs::read(&segment).unwrap();
    drop(opened);

    // After the third frame the log is at position 6; a checkpoint there that says 5 or 9.
    let at = locations[2];
    for next_position in [5, 9] {
        let checkpoint = Checkpoint {
            segment: at.segment,
            offset: at.offset + at.len,
            next_position,
        };
        let r = open(
            no_sync_fs(),
            dir.path(),
            config(),
            Some(checkpoint),
            &mut |_, _, _| Ok(()),
        );
        match r {
            Err(LogError::CheckpointMismatch(_)) => {}
            Err(e) => panic!("position {next_position}: expected CheckpointMismatch, got {e}"),
            Ok((_, _, report)) => panic!(
                "position {next_position}: opened from another log's checkpoint (next position {})",
                report.next_position
            ),
        }
    }
    assert_eq!(std::fs::read(&segment).unwrap(), before);
}
