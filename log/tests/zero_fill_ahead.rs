//! The writer keeps zeros written ahead of its frames in the active segment (so that an
//! fdatasync has only data to flush), cuts them off when it seals a segment, and recovery
//! reads them as the clean end of the log: nothing reported, nothing truncated, and appends
//! go on overwriting them.

mod common;

use std::sync::Arc;

use common::*;
use orchestrix_log::fs::StdFs;

fn file_len(dir: &std::path::Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(name)).unwrap().len()
}

#[test]
fn zeros_ahead_of_the_active_segment_only_and_a_clean_end_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut opened = open_collect(Arc::new(StdFs), dir.path()).unwrap();
    let mut attempts = Vec::new();
    let a = attempt(0, 1, 20);
    append_commit(&mut opened.writer, &a).unwrap();
    attempts.push(a);
    let active = opened.reader.segments().last().unwrap().clone();
    assert_eq!(
        file_len(dir.path(), &active.name),
        SEGMENT_SIZE,
        "the active segment is zero-filled ahead, to the segment size"
    );
    let bytes = std::fs::read(dir.path().join(&active.name)).unwrap();
    assert!(bytes[active.size_bytes as usize..].iter().all(|&b| b == 0));

    // Roll a few times: every sealed segment ends at its last frame.
    for id in 1..200 {
        let a = attempt(id, 1, 40);
        append_commit(&mut opened.writer, &a).unwrap();
        attempts.push(a);
    }
    let segments = opened.reader.segments();
    assert!(segments.len() > 3, "rolled: {} segments", segments.len());
    let (last, sealed) = segments.split_last().unwrap();
    for s in sealed {
        assert_eq!(file_len(dir.path(), &s.name), s.size_bytes, "{}", s.name);
    }
    assert_eq!(file_len(dir.path(), &last.name), SEGMENT_SIZE);
    let frames = scan_all(&opened.reader);
    drop(opened);

    // Reopen: the zeros are the end of the log, not a torn tail.
    let mut again = open_collect(Arc::new(StdFs), dir.path()).unwrap();
    assert_eq!(again.report.truncated, None);
    assert_eq!(again.frames, frames);
    assert_eq!(file_len(dir.path(), &last.name), SEGMENT_SIZE, "zeros kept");
    let a = attempt(1000, 2, 30);
    let loc = append_commit(&mut again.writer, &a).unwrap();
    assert_eq!(
        loc.offset, last.size_bytes,
        "appended right after the last frame"
    );
    attempts.push(a);
    let all = scan_all(&again.reader);
    check_prefix(&all, &attempts, attempts.len()).unwrap();
}
