//! A flipped bit anywhere in a sealed segment is reported as `Corrupted`, naming the segment
//! and the damaged frame (or offset 0 for the segment header), and never truncated away.
//!
//! A sealed segment was fsynced whole before the next one was created, so every byte of it is
//! durable and may hold acknowledged events: recovery must refuse it, not repair it. For every
//! bit of the second of four 4 KiB segments, the test flips the bit in place and checks three
//! readers of it: a full-scan `open` (no checkpoint) returns `Corrupted` at the segment and the
//! frame's offset; `LogReader::read_frame` of the damaged frame, through a reader opened
//! before the damage (as the index would point at it), returns `Corrupted` at the same place;
//! and a scan of the segment stops with the same error. Frames elsewhere, in this segment and
//! in the others, stay readable.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::*;
use orchestrix_log::fs::StdFs;
use orchestrix_log::segment::SEGMENT_HEADER_SIZE;
use orchestrix_log::testing::SplitMix64;
use orchestrix_log::LogError;

fn expect_corrupted(r: Result<impl Sized, LogError>, segment: &str, offset: u64, what: &str) {
    match r {
        Err(LogError::Corrupted {
            segment: s,
            offset: o,
            ..
        }) => assert_eq!((s.as_str(), o), (segment, offset), "{what}"),
        Err(e) => panic!("{what}: expected Corrupted, got {e}"),
        Ok(_) => panic!("{what}: damage went unnoticed"),
    }
}

#[test]
fn every_bit_flip_in_a_sealed_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut opened = open_collect(no_sync_fs(), dir.path()).unwrap();
    let mut rng = SplitMix64::new(11);
    let mut attempts = Vec::new();
    for id in 0.. {
        if opened.reader.segments().len() == 4 {
            break;
        }
        let a = attempt(id, 1 + rng.below(4) as u32, 5 + rng.below(60) as usize);
        append_commit(&mut opened.writer, &a).unwrap();
        attempts.push(a);
    }
    drop(opened);

    // The reader the "index" uses: opened before any damage.
    let before = open_collect(Arc::new(StdFs), dir.path()).unwrap();
    check_prefix(&before.frames, &attempts, attempts.len()).unwrap();
    let segments = before.reader.segments();
    let victim = segments[1].clone();
    let in_victim: Vec<&Found> = before
        .frames
        .iter()
        .filter(|f| f.loc.segment == victim.first_position)
        .collect();
    let others: Vec<&Found> = before
        .frames
        .iter()
        .filter(|f| f.loc.segment != victim.first_position)
        .collect();
    assert!(victim.size_bytes > SEGMENT_SIZE - 200 && in_victim.len() > 10);

    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join(&victim.name))
        .unwrap();
    let original = std::fs::read(dir.path().join(&victim.name)).unwrap();
    assert_eq!(original.len() as u64, victim.size_bytes);

    for bit in 0..original.len() * 8 {
        let byte = bit / 8;
        let what = format!("bit {bit} (byte {byte}) of {}", victim.name);
        file.write_all_at(&[original[byte] ^ (1 << (bit % 8))], byte as u64)
            .unwrap();

        let hit = in_victim
            .iter()
            .position(|f| (f.loc.offset..f.loc.offset + f.loc.len).contains(&(byte as u64)));
        let offset = match hit {
            Some(i) => in_victim[i].loc.offset,
            None => {
                assert!(
                    byte < SEGMENT_HEADER_SIZE,
                    "{what}: every byte is header or frame"
                );
                0
            }
        };

        // Full-scan recovery refuses the log.
        expect_corrupted(
            open_collect(Arc::new(StdFs), dir.path()),
            &victim.name,
            offset,
            &format!("{what}: open"),
        );

        // The reader opened before the damage reports it where the index points.
        if let Some(i) = hit {
            let f = in_victim[i];
            expect_corrupted(
                before.reader.read_frame(f.loc),
                &victim.name,
                f.loc.offset,
                &format!("{what}: read_frame"),
            );
            let mut scanner = before
                .reader
                .scan_from(victim.first_position, SEGMENT_HEADER_SIZE as u64);
            let scanned = loop {
                match scanner.next_frame() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            expect_corrupted(
                scanned,
                &victim.name,
                f.loc.offset,
                &format!("{what}: scan"),
            );
            // Its neighbours in the same segment are intact.
            for j in [i.wrapping_sub(1), i + 1] {
                if let Some(n) = in_victim.get(j) {
                    let (_, payload) = before.reader.read_frame(n.loc).unwrap();
                    assert_eq!(payload, n.payload, "{what}: neighbour {j}");
                }
            }
        } else {
            // The segment header is not read by read_frame; the frames stay readable.
            let (_, payload) = before.reader.read_frame(in_victim[0].loc).unwrap();
            assert_eq!(payload, in_victim[0].payload, "{what}");
        }

        // Other segments stay readable: their first and last frames every time, all of
        // them now and then.
        let check_all = bit.is_multiple_of(97);
        for (k, f) in others.iter().enumerate() {
            let edge =
                k == 0 || k + 1 == others.len() || others[k + 1].loc.segment != f.loc.segment;
            if check_all || edge {
                let (header, payload) = before
                    .reader
                    .read_frame(f.loc)
                    .unwrap_or_else(|e| panic!("{what}: other segment: {e}"));
                assert_eq!((header, &payload[..]), (f.header, &f.payload[..]), "{what}");
            }
        }

        file.write_all_at(&original[byte..byte + 1], byte as u64)
            .unwrap();
    }

    // Undamaged again: the log opens with nothing cut.
    let after = open_collect(Arc::new(StdFs), dir.path()).unwrap();
    assert_eq!(after.frames, before.frames);
    assert!(after.report.truncated.is_none());
}
