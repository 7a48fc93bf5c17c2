//! A torn, never-synced frame whose event data holds a whole, CRC-valid frame (a frame of
//! another log stored as data, say) is still a torn tail: the embedded frame does not fit
//! this log where it lies, so it is not taken for a later frame proving the torn one durable.
//! Recovery cuts the tail and the log goes on; the acknowledged frame before it stays.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::*;
use orchestrix_log::frame::encode_frame;
use orchestrix_log::fs::StdFs;
use orchestrix_log::segment::file_name;

/// Writes a durable frame, then a frame (never synced) whose data embeds `embedded` after 64
/// bytes, tears that write after 400 bytes (the rest reads as zeros) and reopens. Returns the
/// reopened log's frames and the torn frame's offset, or the open error.
fn torn_with(
    embedded: &[u8],
) -> (
    Result<Opened, orchestrix_log::LogError>,
    u64,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let durable = attempt(0, 1, 40);
    let torn_at;
    {
        let mut o = open_collect(Arc::new(StdFs), dir.path()).unwrap();
        let first = append_commit(&mut o.writer, &durable).unwrap();
        torn_at = first.offset + first.len;
        let mut data = vec![9u8; 64];
        data.extend_from_slice(embedded);
        data.extend_from_slice(&[9u8; 3000]);
        o.writer
            .append(1, move |b| {
                b.extend_from_slice(&data);
                Ok(())
            })
            .unwrap();
        o.writer.commit(false).unwrap();
    }
    let seg = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(file_name(0)))
        .unwrap();
    seg.write_all_at(&[0u8; 8192], torn_at + 400).unwrap();
    let opened = open_collect(Arc::new(StdFs), dir.path());
    if let Ok(o) = &opened {
        check_prefix(&o.frames, std::slice::from_ref(&durable), 1).unwrap();
    }
    (opened, torn_at, dir)
}

#[test]
fn a_frame_inside_a_torn_frame_is_no_proof() {
    // A frame far ahead of this log; a copy of this log's first frame (behind it).
    let cases = [
        (
            "far ahead",
            encode_frame(1_000_000, 999_999, 1, b"x").unwrap(),
        ),
        ("behind", encode_frame(0, 0, 1, b"x").unwrap()),
    ];
    for (what, frame) in cases {
        let (opened, torn_at, _dir) = torn_with(&frame);
        let o = opened.unwrap_or_else(|e| panic!("{what}: the torn tail refused to open: {e}"));
        assert_eq!(o.frames.len(), 1, "{what}: only the durable frame");
        assert_eq!(o.report.next_position, 1, "{what}");
        let (_, cut, _) = o.report.truncated.clone().expect("the tail was cut");
        assert_eq!(cut, torn_at, "{what}: cut where the torn frame starts");
    }
}

#[test]
fn a_frame_that_fits_after_a_damaged_one_still_proves_it_durable() {
    // The same bytes with a frame that could follow the damaged one (position 2, durable end
    // 2 > 1): the damaged frame was durable, so this is corruption, not a tail to cut.
    let (opened, _, _dir) = torn_with(&encode_frame(2, 2, 1, b"x").unwrap());
    match opened {
        Err(e) => assert!(
            e.to_string().contains("proves it durable"),
            "unexpected error: {e}"
        ),
        Ok(_) => panic!("damage before a frame proving it durable was cut as a torn tail"),
    }
}
