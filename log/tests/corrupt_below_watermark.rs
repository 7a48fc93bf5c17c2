//! Damage to a frame that a later frame proves durable is an error, never a truncation; only
//! the last frame, which nothing proves durable, is treated as a torn tail.
//!
//! Every frame records the log's durable end when it was written. With `commit(true)` after
//! each of 50 appends into one (active) 4 KiB segment, frame k+1 records a durable end past
//! frame k, so frame k was fsynced and may have been acknowledged: truncating at it would
//! silently drop acknowledged events (the FAST '18 protocol-aware-recovery lesson). For every
//! frame k < 49 and three kinds of damage (a payload byte, the low byte of the length field,
//! the high byte of the length field), open must return `Corrupted` at frame k's offset and
//! leave the file untouched. For k = 49 the same damage is indistinguishable from a torn
//! write, so open truncates exactly that frame and nothing else.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use orchestrix_log::fs::StdFs;
use orchestrix_log::LogError;

const FRAMES: usize = 50;

#[derive(Debug, Clone, Copy)]
enum Damage {
    Payload,
    LengthLow,
    LengthHigh,
}

fn damage(bytes: &mut [u8], f: &Found, d: Damage) {
    let at = f.loc.offset as usize;
    match d {
        Damage::Payload => bytes[at + 32 + f.payload.len() / 2] ^= 0x5A,
        Damage::LengthLow => bytes[at + 4] ^= 0x01,
        Damage::LengthHigh => bytes[at + 7] ^= 0xFF,
    }
}

fn build(dir: &Path) -> (Vec<Attempt>, Vec<Found>, String, Vec<u8>) {
    let mut opened = open_collect(Arc::new(StdFs), dir).unwrap();
    let attempts: Vec<Attempt> = (0..FRAMES as u64).map(|id| attempt(id, 1, 1)).collect();
    for a in &attempts {
        append_commit(&mut opened.writer, a).unwrap();
    }
    let segments = opened.reader.segments();
    assert_eq!(segments.len(), 1, "all {FRAMES} frames in one segment");
    let frames = scan_all(&opened.reader);
    check_prefix(&frames, &attempts, FRAMES).unwrap();
    for w in frames.windows(2) {
        assert!(
            w[1].header.durable_position >= w[0].header.next_position(),
            "each frame proves the one before it durable"
        );
    }
    let name = segments[0].name.clone();
    let bytes = std::fs::read(dir.join(&name)).unwrap();
    (attempts, frames, name, bytes)
}

#[test]
fn damage_proven_durable_by_a_later_frame_is_corruption() {
    let template = tempfile::tempdir().unwrap();
    let (attempts, frames, name, original) = build(template.path());
    let scratch = tempfile::tempdir().unwrap();

    for (k, f) in frames.iter().enumerate() {
        for d in [Damage::Payload, Damage::LengthLow, Damage::LengthHigh] {
            let what = format!("frame {k} of {FRAMES}, {d:?}");
            let dir = scratch.path().join(format!("{k}-{d:?}"));
            std::fs::create_dir(&dir).unwrap();
            let mut bytes = original.clone();
            damage(&mut bytes, f, d);
            std::fs::write(dir.join(&name), &bytes).unwrap();

            let result = open_collect(Arc::new(StdFs), &dir);
            if k + 1 < FRAMES {
                match result {
                    Err(LogError::Corrupted {
                        segment, offset, ..
                    }) => assert_eq!(
                        (segment.as_str(), offset),
                        (name.as_str(), f.loc.offset),
                        "{what}"
                    ),
                    Err(e) => panic!("{what}: expected Corrupted, got {e}"),
                    Ok(o) => panic!(
                        "{what}: opened with {} frames (truncated: {:?})",
                        o.frames.len(),
                        o.report.truncated
                    ),
                }
                assert!(
                    std::fs::read(dir.join(&name)).unwrap() == bytes,
                    "{what}: a refused log must not be modified"
                );
            } else {
                // The last frame: nothing proves it durable, so it is a torn tail.
                let opened = result.unwrap_or_else(|e| panic!("{what}: {e}"));
                // Dropped: the frame's bytes up to its last nonzero one (the zeros after it
                // were written ahead of the frames).
                let data_end = bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
                assert!(data_end <= f.loc.offset + f.loc.len, "{what}");
                assert_eq!(
                    opened.report.truncated,
                    Some((name.clone(), f.loc.offset, data_end - f.loc.offset)),
                    "{what}"
                );
                assert_eq!(opened.frames[..], frames[..k], "{what}");
                check_prefix(&opened.frames, &attempts, k).unwrap();
                assert_eq!(opened.report.next_position, f.header.first_position);
                assert_eq!(
                    std::fs::metadata(dir.join(&name)).unwrap().len(),
                    f.loc.offset,
                    "{what}: cut exactly at the frame"
                );
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
