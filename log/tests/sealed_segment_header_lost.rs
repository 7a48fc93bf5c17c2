//! A sealed segment that lost its header is reported, even when recovery starts after it (at
//! an index checkpoint in the last segment), and the last segment is left alone.
//!
//! Only the newest segment can have a torn header (a crash while rolling): recovery rewrites
//! that one's header, dropping what follows it. A sealed segment was fsynced whole before the
//! next one was created, so a sealed segment cut short inside its header is damage to report;
//! taking it for the torn creation of the newest segment would wipe the last segment,
//! acknowledged frames below the checkpoint included.

mod common;

use common::*;
use orchestrix_log::segment::SEGMENT_HEADER_SIZE;
use orchestrix_log::{Checkpoint, LogError};

#[test]
fn a_sealed_segment_cut_inside_its_header_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut opened = open_collect(no_sync_fs(), dir.path()).unwrap();
    let mut last = None;
    for id in 0.. {
        let a = attempt(id, 2, 40);
        let loc = append_commit(&mut opened.writer, &a).unwrap();
        let segments = opened.reader.segments();
        if segments.len() == 3 && loc.segment == segments[2].first_position {
            last = Some((loc, id));
            // Two frames in the last segment, the checkpoint after the second.
            if loc.offset > SEGMENT_HEADER_SIZE as u64 {
                break;
            }
        }
    }
    let (loc, _) = last.unwrap();
    let segments = opened.reader.segments();
    let next_position = opened.reader.committed_position();
    drop(opened);
    let checkpoint = Checkpoint {
        segment: loc.segment,
        offset: loc.offset + loc.len,
        next_position,
    };
    let last_path = dir.path().join(&segments[2].name);
    let last_bytes = std::fs::read(&last_path).unwrap();

    // The sealed segment before it, cut inside its header.
    let sealed = dir.path().join(&segments[1].name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&sealed)
        .unwrap();
    file.set_len(SEGMENT_HEADER_SIZE as u64 / 2).unwrap();
    drop(file);

    match open_from(dir.path(), checkpoint) {
        Err(LogError::Corrupted {
            segment, offset, ..
        }) => assert_eq!((segment.as_str(), offset), (segments[1].name.as_str(), 0)),
        Err(e) => panic!("expected Corrupted, got {e}"),
        Ok((_, _, report)) => panic!(
            "a sealed segment without its header was opened (truncated: {:?})",
            report.truncated
        ),
    }
    assert_eq!(
        std::fs::read(&last_path).unwrap(),
        last_bytes,
        "recovery changed the last segment"
    );
}
