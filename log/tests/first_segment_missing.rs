//! Positions are gapless from 0 (docs/architecture.md, "Invariants"): a log whose first
//! segment file is gone (so that its oldest segment starts past position 0) has lost
//! acknowledged events. Open refuses it as `Corrupted`, with or without an index checkpoint,
//! instead of opening a log that starts at a later position (whose reads from position 0
//! then find nothing).

mod common;

use std::sync::Arc;

use common::*;
use orchestrix_log::fs::StdFs;
use orchestrix_log::{open, Checkpoint, LogError};

#[test]
fn a_log_without_its_first_segment_is_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let (opened, _) = log_of_segments(dir.path(), 3, |id| attempt(id, 2, 40));
    let segments = opened.reader.segments();
    let next = opened.writer.next_position();
    let last = segments.last().unwrap().clone();
    drop(opened);
    std::fs::remove_file(dir.path().join(&segments[0].name)).unwrap();

    let checkpoint = Checkpoint {
        segment: last.first_position,
        offset: last.size_bytes,
        next_position: next,
    };
    for cp in [None, Some(checkpoint)] {
        let r = open(Arc::new(StdFs), dir.path(), config(), cp, &mut |_, _, _| {
            Ok(())
        });
        match r {
            Err(LogError::Corrupted { segment, .. }) => {
                assert_eq!(segment, segments[1].name, "checkpoint {cp:?}")
            }
            Err(e) => panic!("checkpoint {cp:?}: expected Corrupted, got {e}"),
            Ok(_) => panic!(
                "checkpoint {cp:?}: a log starting at position {} opened",
                segments[1].first_position
            ),
        }
    }
}
