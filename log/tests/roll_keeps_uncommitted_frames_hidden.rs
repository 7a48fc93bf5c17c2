//! Regression (found by `model.rs`): a segment roll must not make uncommitted frames visible
//! to readers.
//!
//! When an append does not fit the active segment, the writer writes the frames buffered
//! before it to the old segment, syncs it and creates the next one. It used to publish the
//! old segment's final size right there, so a reader scanning the log saw frames that no
//! `commit` had published yet (and that the engine had not acknowledged). Now the final size,
//! and the new segment, are published by the next commit, old size first, so that a scanner
//! that reached the end of the old segment before the roll resumes there, in order, without
//! skipping the frames written by the roll.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use orchestrix_log::testing::SimFs;

#[test]
fn frames_written_by_a_roll_appear_at_the_next_commit_in_order() {
    let dir = Path::new("/db/log");
    let mut opened = open_collect(Arc::new(SimFs::new()), dir).unwrap();
    let mut attempts = Vec::new();
    for id in 0..5 {
        let a = attempt(id, 1, 100);
        append_commit(&mut opened.writer, &a).unwrap();
        attempts.push(a);
    }

    // A scanner that has read everything committed so far.
    let mut scanner = opened.reader.scan();
    let mut seen = Vec::new();
    while let Some((_, _, payload)) = scanner.next_frame().unwrap() {
        seen.push(payload.to_vec());
    }
    assert_eq!(seen.len(), 5);

    // Uncommitted appends until one lands in a new segment.
    let first_segment = opened.reader.segments()[0].first_position;
    let mut rolled = None;
    for id in 5.. {
        let a = attempt(id, 1, 100);
        let loc = append(&mut opened.writer, &a).unwrap();
        attempts.push(a);
        if loc.segment != first_segment {
            rolled = Some(loc);
            break;
        }
    }
    let rolled = rolled.unwrap();
    assert!(opened.reader.read_frame(rolled).is_err());
    assert_eq!(
        scanner.next_frame().unwrap().map(|f| f.0),
        None,
        "nothing new is committed"
    );
    assert_eq!(
        scan_all(&opened.reader).len(),
        5,
        "a fresh scan sees the committed frames only"
    );
    assert_eq!(
        opened.reader.segments().len(),
        1,
        "the new segment is not published yet"
    );
    assert_eq!(opened.reader.committed_position(), 5);

    opened.writer.commit(false).unwrap();
    while let Some((_, _, payload)) = scanner.next_frame().unwrap() {
        seen.push(payload.to_vec());
    }
    let expected: Vec<Vec<u8>> = attempts.iter().map(|a| a.payload.clone()).collect();
    assert_eq!(seen, expected, "the old scanner resumes without skipping");
    check_prefix(&scan_all(&opened.reader), &attempts, attempts.len()).unwrap();
    assert_eq!(
        opened.reader.read_frame(rolled).unwrap().1,
        attempts.last().unwrap().payload
    );
}
