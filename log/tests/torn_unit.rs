//! A unit of frames (the frames of one multi-stream append) survives a crash whole or not at
//! all, and a roll never splits it.
//!
//! The test writes single frames, then a unit of three frames, into a log of 4 KiB segments
//! (the unit's frames do not fit in what is left of the segment, so the log rolls before
//! them). Then, for every byte offset of the unit and three ways of damaging the rest of it
//! (cut short, zeros, garbage), it damages a copy from that offset to the unit's end and
//! reopens: recovery must replay the single frames and none of the unit's (a unit with its
//! last frame missing is cut back to its start, even when its first frames are whole), and
//! the log must take a new append that survives another reopen (the cut unit's bytes are gone
//! from the file, so no stale frame is found after the new one).

mod common;

use common::*;
use orchestrix_log::testing::SplitMix64;
use orchestrix_log::{FrameLocation, LogError, LogWriter};

#[derive(Debug, Clone, Copy)]
enum Fill {
    Truncate,
    Zeros,
    Garbage,
}

/// Appends `parts` as one unit and commits it durably.
fn append_unit(writer: &mut LogWriter, parts: &[Attempt]) -> Result<Vec<FrameLocation>, LogError> {
    let bytes: u64 = parts.iter().map(|a| 32 + a.payload.len() as u64).sum();
    writer.begin_unit(bytes)?;
    let mut locations = Vec::new();
    for (i, a) in parts.iter().enumerate() {
        let continues = i + 1 < parts.len();
        locations.push(writer.append_to_unit(a.event_count(), continues, |out| {
            out.extend_from_slice(&a.payload);
            Ok(())
        })?);
    }
    writer.commit(true)?;
    Ok(locations)
}

#[test]
fn a_torn_unit_is_cut_whole_and_the_log_goes_on() {
    let template = tempfile::tempdir().unwrap();
    let mut opened = open_collect(no_sync_fs(), template.path()).unwrap();
    // Single frames until the first segment has less than a unit's room left.
    let mut singles = Vec::new();
    let mut id = 0;
    while opened.reader.segments()[0].size_bytes < SEGMENT_SIZE - 600 {
        let a = attempt(id, 2, 60);
        append_commit(&mut opened.writer, &a).unwrap();
        singles.push(a);
        id += 1;
    }
    let unit: Vec<Attempt> = (0..3).map(|k| attempt(id + k, 1 + k as u32, 120)).collect();
    let locations = append_unit(&mut opened.writer, &unit).unwrap();
    // The roll came before the unit, and the unit is in one segment.
    assert!(locations.iter().all(|l| l.segment == locations[0].segment));
    assert_ne!(locations[0].segment, 0, "the log rolled before the unit");
    let unit_start = locations[0].offset;
    let unit_end = locations[2].offset + locations[2].len;
    let segment_name = opened.reader.segments().last().unwrap().name.clone();
    drop(opened);

    // Whole, the unit is replayed with its flags.
    let whole = open_collect(no_sync_fs(), template.path()).unwrap();
    let mut all = singles.clone();
    all.extend(unit.iter().cloned());
    check_prefix(&whole.frames, &all, all.len()).unwrap();
    let flags: Vec<bool> = whole.frames[singles.len()..]
        .iter()
        .map(|f| f.header.continues)
        .collect();
    assert_eq!(flags, [true, true, false]);
    drop(whole);

    let mut rng = SplitMix64::new(11);
    for cut in unit_start..unit_end {
        for fill in [Fill::Truncate, Fill::Zeros, Fill::Garbage] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(template.path(), dir.path());
            let path = dir.path().join(&segment_name);
            let mut bytes = std::fs::read(&path).unwrap();
            match fill {
                Fill::Truncate => bytes.truncate(cut as usize),
                Fill::Zeros => bytes[cut as usize..unit_end as usize].fill(0),
                Fill::Garbage => rng.fill(&mut bytes[cut as usize..unit_end as usize]),
            }
            std::fs::write(&path, &bytes).unwrap();

            let mut reopened = open_collect(no_sync_fs(), dir.path())
                .unwrap_or_else(|e| panic!("cut at {cut} ({fill:?}): {e}"));
            check_prefix(&reopened.frames, &singles, singles.len())
                .unwrap_or_else(|e| panic!("cut at {cut} ({fill:?}): {e}"));
            assert_eq!(
                reopened.frames.len(),
                singles.len(),
                "cut at {cut} ({fill:?}): part of the unit was replayed"
            );
            if cut > unit_start {
                assert!(
                    reopened.report.truncated.is_some(),
                    "cut at {cut} ({fill:?}): the unit's whole frames were not cut"
                );
            }
            // The log goes on where the unit began, and a reopen finds exactly that.
            let next = attempt(1000, 1, 10);
            let mut expected = singles.clone();
            expected.push(next.clone());
            let loc = append_commit(&mut reopened.writer, &next).unwrap();
            assert_eq!(
                loc.offset, unit_start,
                "cut at {cut} ({fill:?}): the new frame goes where the unit began"
            );
            drop(reopened);
            let again = open_collect(no_sync_fs(), dir.path())
                .unwrap_or_else(|e| panic!("cut at {cut} ({fill:?}), reopen: {e}"));
            assert_eq!(again.frames.len(), expected.len());
            check_prefix(&again.frames, &expected, expected.len())
                .unwrap_or_else(|e| panic!("cut at {cut} ({fill:?}), reopen: {e}"));
        }
    }
}

#[test]
fn an_aborted_unit_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut opened = open_collect(no_sync_fs(), dir.path()).unwrap();
    let first = attempt(0, 1, 10);
    append_commit(&mut opened.writer, &first).unwrap();
    let before = opened.writer.next_position();
    opened.writer.begin_unit(1000).unwrap();
    let a = attempt(1, 2, 10);
    opened
        .writer
        .append_to_unit(a.event_count(), true, |out| {
            out.extend_from_slice(&a.payload);
            Ok(())
        })
        .unwrap();
    // The second part fails to encode: the caller drops the unit.
    let r = opened.writer.append_to_unit(1, false, |_| {
        Err(LogError::Payload("refused by the test".into()))
    });
    assert!(r.is_err());
    opened.writer.abort_unit();
    assert_eq!(opened.writer.next_position(), before);
    let second = attempt(2, 1, 10);
    append_commit(&mut opened.writer, &second).unwrap();
    drop(opened);
    let reopened = open_collect(no_sync_fs(), dir.path()).unwrap();
    check_prefix(&reopened.frames, &[first.clone(), second.clone()], 2).unwrap();
    assert_eq!(reopened.frames.len(), 2);
}
