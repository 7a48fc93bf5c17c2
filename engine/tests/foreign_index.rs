//! The index is derived data: an `index.redb` that is not of this log (copied from another
//! store, or kept from another history of it) must cost a rebuild, never events.
//!
//! Open scans the log from the index checkpoint's offset. When that offset lay in the middle
//! of a frame of the last segment, the scan took the rest of the frame for a torn tail and cut
//! the segment there (then failed: the frame before now ran past the end), destroying
//! acknowledged events: 27 of 50 here, found gone at the next open. Where a later frame proved
//! the log durable, open failed instead, reporting the (intact) log as corrupted. A
//! checkpoint at whose offset no frame of its position starts (nor the log's end, nor the
//! zeros ahead of it) is now checked against the segment's frames from its start; if no
//! frame ends there at its position, the checkpoint is not of this log and the index is
//! rebuilt.

use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store};

fn fill(dir: &std::path::Path, n: u32, size: usize) {
    let s = Store::open_with(dir, Options::default()).unwrap();
    for i in 0..n {
        s.append(
            "s",
            ExpectedVersion::Any,
            vec![EventData::new("E", vec![i as u8; size])],
        )
        .unwrap();
    }
}

fn run(other_events: u32, other_size: usize) {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    fill(a.path(), 50, 1000);
    fill(b.path(), other_events, other_size);
    std::fs::copy(b.path().join("index.redb"), a.path().join("index.redb")).unwrap();
    let opened = Store::open_with(a.path(), Options::default()).map(|_| ());
    // Whatever open said, the log must still hold every event.
    std::fs::remove_file(a.path().join("index.redb")).unwrap();
    let s = Store::open_with(a.path(), Options::default()).unwrap();
    assert_eq!(
        s.committed_position(),
        50,
        "events kept (the open with the other index answered {opened:?})"
    );
    drop(s);
    opened.unwrap();

    // The foreign index again: open rebuilds it and reads back everything.
    std::fs::copy(b.path().join("index.redb"), a.path().join("index.redb")).unwrap();
    let s = Store::open_with(a.path(), Options::default()).unwrap();
    let all = s
        .read_all(0, Direction::Forwards, 1000, &ReadFilter::default())
        .unwrap();
    assert_eq!(all.len(), 50);
    assert_eq!(
        s.read_stream("s", 0, Direction::Forwards, 1000)
            .unwrap()
            .len(),
        50
    );
    assert_eq!(s.verify().unwrap(), 50);
}

/// The other store's checkpoint is in the middle of a frame, at a position past this log's.
#[test]
fn a_checkpoint_past_this_log_inside_a_frame_cuts_nothing() {
    run(300, 1);
}

/// The other store's checkpoint is in the middle of a frame, at a position within this log.
#[test]
fn a_checkpoint_within_this_log_inside_a_frame_is_not_taken_for_damage() {
    run(20, 137);
}
