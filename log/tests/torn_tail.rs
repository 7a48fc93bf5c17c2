//! A torn tail of the active segment is cut back to the last whole frame, and the log goes on
//! from there.
//!
//! A crash while appending can leave the active segment ending anywhere: cut short, or
//! followed by zeros (a file extended but not written), by 0xFF (erased flash) or by garbage
//! (a sector half written). This test builds a log of four 4 KiB segments and, for every byte
//! offset of the active segment (zero-filled ahead to 4 KiB, so this is its "last 4 KiB") and each
//! of those four fill patterns, damages a copy of it from that offset to its end and reopens:
//! open must succeed, recover exactly the frames whose bytes are intact (those wholly before
//! the cut, plus any the fill happened to leave byte-identical), report the cut (or nothing,
//! when only zeros follow the last whole frame: the clean end of a zero-filled segment), and accept an
//! append that reads back. Recovery goes through the real file system on copies of a template
//! directory; fsync is switched off (`no_sync_fs`) because nothing here loses power.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use orchestrix_log::segment::SEGMENT_HEADER_SIZE;
use orchestrix_log::testing::SplitMix64;

#[derive(Debug, Clone, Copy)]
enum Fill {
    Truncate,
    Zeros,
    Ones,
    Garbage,
}

const FILLS: [Fill; 4] = [Fill::Truncate, Fill::Zeros, Fill::Ones, Fill::Garbage];

struct Template {
    dir: tempfile::TempDir,
    attempts: Vec<Attempt>,
    frames: Vec<Found>,
    active_name: String,
    active_first: u64,
    active_bytes: Vec<u8>,
}

fn build_template() -> Template {
    let dir = tempfile::tempdir().unwrap();
    let mut opened = open_collect(no_sync_fs(), dir.path()).unwrap();
    let mut attempts = Vec::new();
    let mut rng = SplitMix64::new(7);
    for id in 0.. {
        let a = attempt(id, 1 + rng.below(3) as u32, 10 + rng.below(40) as usize);
        let segments = opened.reader.segments();
        let active = segments.last().unwrap();
        let frame_len = 32 + a.payload.len() as u64;
        if segments.len() == 4 && active.size_bytes + frame_len > SEGMENT_SIZE {
            break;
        }
        append_commit(&mut opened.writer, &a).unwrap();
        attempts.push(a);
    }
    let frames = scan_all(&opened.reader);
    check_prefix(&frames, &attempts, attempts.len()).unwrap();
    let active = opened.reader.segments().last().unwrap().clone();
    assert!(
        active.size_bytes > SEGMENT_SIZE - 200,
        "active segment nearly full"
    );
    // The active segment has zeros written ahead of its frames, to the segment size.
    let active_bytes = std::fs::read(dir.path().join(&active.name)).unwrap();
    assert_eq!(active_bytes.len() as u64, SEGMENT_SIZE, "zero-filled ahead");
    assert!(
        active_bytes[active.size_bytes as usize..]
            .iter()
            .all(|&b| b == 0),
        "zeros after the last frame"
    );
    Template {
        dir,
        attempts,
        frames,
        active_name: active.name,
        active_first: active.first_position,
        active_bytes,
    }
}

fn damage(original: &[u8], cut: usize, fill: Fill, seed: u64) -> Vec<u8> {
    let mut bytes = original[..cut].to_vec();
    let rest = original.len() - cut;
    match fill {
        Fill::Truncate => {}
        Fill::Zeros => bytes.resize(original.len(), 0),
        Fill::Ones => bytes.resize(original.len(), 0xFF),
        Fill::Garbage => {
            let mut g = vec![0u8; rest];
            SplitMix64::new(seed).fill(&mut g);
            bytes.extend_from_slice(&g);
        }
    }
    bytes
}

/// How many frames of the template survive `damaged`: every frame of sealed segments, and the
/// active segment's frames up to the first one whose bytes changed. A damaged segment header
/// loses the whole active segment.
fn survivors(t: &Template, damaged: &[u8]) -> usize {
    let sealed = t
        .frames
        .iter()
        .filter(|f| f.loc.segment != t.active_first)
        .count();
    if damaged.get(..SEGMENT_HEADER_SIZE) != t.active_bytes.get(..SEGMENT_HEADER_SIZE) {
        return sealed;
    }
    let intact = t.frames[sealed..]
        .iter()
        .take_while(|f| {
            let range = f.loc.offset as usize..(f.loc.offset + f.loc.len) as usize;
            damaged.get(range.clone()) == t.active_bytes.get(range)
        })
        .count();
    sealed + intact
}

fn run_case(t: &Template, work: &Path, cut: usize, fill: Fill, case: u64) {
    let what = format!("cut at {cut} with {fill:?}");
    // The sealed segments are copied once per worker (recovery never writes to them, which
    // the end of the test checks); the active segment is rewritten and any segment the last
    // case's append rolled into is removed.
    if !work.exists() {
        copy_dir(t.dir.path(), work);
    }
    for name in std::fs::read_dir(work).unwrap() {
        let name = name.unwrap().file_name().into_string().unwrap();
        if name > t.active_name {
            std::fs::remove_file(work.join(name)).unwrap();
        }
    }
    let damaged = damage(&t.active_bytes, cut, fill, case);
    // Overwrite in place rather than truncate-and-write: ext4 flushes a file truncated to zero
    // when it is closed, which would make this sweep I/O bound.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(work.join(&t.active_name))
        .unwrap();
    file.write_all_at(&damaged, 0).unwrap();
    file.set_len(damaged.len() as u64).unwrap();
    drop(file);
    let expected = survivors(t, &damaged);

    let mut opened =
        open_collect(no_sync_fs(), work).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    check_prefix(&opened.frames, &t.attempts, expected).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        opened.frames.len(),
        expected,
        "{what}: recovered frame count"
    );
    assert_eq!(opened.frames[..], t.frames[..expected], "{what}: locations");
    let next = t.frames[..expected]
        .last()
        .map_or(0, |f| f.header.next_position());
    assert_eq!(opened.report.next_position, next, "{what}");
    let header_intact =
        damaged.get(..SEGMENT_HEADER_SIZE) == t.active_bytes.get(..SEGMENT_HEADER_SIZE);
    let end_of_intact = t.frames[..expected]
        .last()
        .filter(|f| f.loc.segment == t.active_first)
        .map_or(SEGMENT_HEADER_SIZE as u64, |f| f.loc.offset + f.loc.len);
    match opened.report.truncated.clone() {
        // A torn segment header is rewritten: the report says "cut at 0".
        Some((segment, at, _)) if !header_intact => {
            assert_eq!(
                (segment.as_str(), at),
                (t.active_name.as_str(), 0),
                "{what}"
            )
        }
        Some((segment, at, dropped)) => {
            assert_eq!(segment, t.active_name, "{what}");
            assert_eq!(at, end_of_intact, "{what}: cut position");
            // Dropped: up to the last nonzero byte (zeros after it were written ahead).
            let data_end = damaged
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |i| i as u64 + 1);
            assert_eq!(at + dropped, data_end, "{what}: bytes dropped");
        }
        // Only zeros after the last whole frame: the clean end of a zero-filled segment.
        None => assert!(
            header_intact && damaged[end_of_intact as usize..].iter().all(|&b| b == 0),
            "{what}: bytes after the last whole frame but nothing cut"
        ),
    }

    // The log goes on from the cut.
    let a = attempt(10_000 + case, 2, 33);
    let loc = append_commit(&mut opened.writer, &a).unwrap_or_else(|e| panic!("{what}: {e}"));
    let (header, payload) = opened.reader.read_frame(loc).unwrap();
    assert_eq!(header.first_position, next, "{what}");
    assert_eq!(payload, a.payload, "{what}");
    let all = scan_all(&opened.reader);
    assert_eq!(all.len(), expected + 1, "{what}");
    assert_eq!(all[..expected], t.frames[..expected], "{what}");
    assert_eq!(all[expected].payload, a.payload, "{what}");

    // Now and then, check that the repaired log also reopens cleanly with the new frame.
    if case.is_multiple_of(101) {
        drop(opened);
        let again = open_collect(no_sync_fs(), work).unwrap();
        assert_eq!(again.frames, all, "{what}: reopen after append");
        assert!(
            again.report.truncated.is_none(),
            "{what}: nothing left to cut"
        );
    }
}

#[test]
fn every_cut_of_the_active_segment_recovers_the_intact_prefix() {
    let t = build_template();
    assert_eq!(
        t.dir.path().read_dir().unwrap().count(),
        4,
        "three sealed segments and the active one"
    );
    let len = t.active_bytes.len();
    let first_cut = len.saturating_sub(4096);
    let cases: Vec<(usize, Fill)> = (first_cut..len)
        .flat_map(|cut| FILLS.iter().map(move |&f| (cut, f)))
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    parallel_chunks(cases.len(), |range| {
        let work = scratch.path().join(format!("w{}", range.start));
        for i in range {
            let (cut, fill) = cases[i];
            run_case(&t, &work, cut, fill, i as u64);
        }
        for entry in std::fs::read_dir(t.dir.path()).unwrap() {
            let name = entry.unwrap().file_name();
            if name.to_str() != Some(t.active_name.as_str()) {
                let original = std::fs::read(t.dir.path().join(&name)).unwrap();
                let now = std::fs::read(work.join(&name)).unwrap();
                assert!(original == now, "sealed segment {name:?} was modified");
            }
        }
    });
}
