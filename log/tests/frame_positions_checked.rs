//! Recovery checks that the log's positions run on without a gap or a repeat: a CRC-valid
//! frame at the wrong position, and a segment that does not start where the log goes on, are
//! corruption, reported with segment and offset (never replayed, never cut).
//!
//! A frame's CRC covers its position, so a whole frame at the wrong place is a copy (a block
//! written twice, a frame of another log); a segment that starts past where the one before it
//! ends means frames between them were lost. Accepting either would replay events twice or
//! hand out positions that already belong to lost, acknowledged events.

mod common;

use common::*;
use orchestrix_log::segment::SEGMENT_HEADER_SIZE;
use orchestrix_log::LogError;

fn expect_corrupted<T>(r: Result<T, LogError>, segment: &str, offset: u64) {
    match r {
        Err(LogError::Corrupted {
            segment: s,
            offset: o,
            ..
        }) => assert_eq!((s.as_str(), o), (segment, offset)),
        Err(e) => panic!("expected Corrupted, got {e}"),
        Ok(_) => panic!("the damage went unnoticed"),
    }
}

#[test]
fn a_whole_frame_at_the_wrong_position_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut opened = open_collect(no_sync_fs(), dir.path()).unwrap();
    let mut locations = Vec::new();
    for id in 0..5 {
        locations.push(append_commit(&mut opened.writer, &attempt(id, 2, 30)).unwrap());
    }
    let segment = opened.reader.segments()[0].name.clone();
    drop(opened);

    // The second frame, written again after the last one (a repeated block).
    let path = dir.path().join(&segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let end = locations[4].offset + locations[4].len;
    bytes.truncate(end as usize);
    let copy = &locations[1];
    let frame = bytes[copy.offset as usize..(copy.offset + copy.len) as usize].to_vec();
    bytes.extend_from_slice(&frame);
    std::fs::write(&path, &bytes).unwrap();

    expect_corrupted(open_collect(no_sync_fs(), dir.path()), &segment, end);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "recovery changed the segment"
    );
}

#[test]
fn a_segment_missing_before_an_empty_last_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (opened, _) = log_of_segments(dir.path(), 3, |id| attempt(id, 2, 40));
    let segments = opened.reader.segments();
    drop(opened);

    // The newest segment as a crash right after its creation leaves it (its header only), and
    // the one before it gone: the events of the missing segment are lost.
    let last = dir.path().join(&segments[2].name);
    let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(SEGMENT_HEADER_SIZE as u64).unwrap();
    drop(file);
    std::fs::remove_file(dir.path().join(&segments[1].name)).unwrap();

    expect_corrupted(open_collect(no_sync_fs(), dir.path()), &segments[2].name, 0);
}
