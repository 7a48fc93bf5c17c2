//! A checkpoint whose offset lies inside a segment's header names no place of the log: it is
//! a damaged index, answered with `CheckpointMismatch` (the caller rebuilds its index), and
//! the log is left untouched.
//!
//! Scanning from such an offset would read the header as a damaged frame; with a position past
//! the log's, no later frame could prove it durable, and the whole segment would be cut as a
//! torn tail.

mod common;

use common::*;
use orchestrix_log::{open, Checkpoint, LogError};

#[test]
fn a_checkpoint_inside_a_segment_header_is_a_mismatch_and_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut opened = open_collect(no_sync_fs(), dir.path()).unwrap();
    for id in 0..6 {
        append_commit(&mut opened.writer, &attempt(id, 2, 30)).unwrap();
    }
    let segment = dir.path().join(&opened.reader.segments()[0].name);
    drop(opened);
    let before = std::fs::read(&segment).unwrap();

    for (offset, next_position) in [(0, 0), (8, 12), (8, 1000), (31, 1000)] {
        let checkpoint = Checkpoint {
            segment: 0,
            offset,
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
            Err(e) => panic!("{checkpoint:?}: expected CheckpointMismatch, got {e}"),
            Ok((_, _, report)) => {
                panic!("{checkpoint:?}: opened (truncated: {:?})", report.truncated)
            }
        }
        assert_eq!(
            std::fs::read(&segment).unwrap(),
            before,
            "{checkpoint:?}: the segment changed"
        );
    }
}
