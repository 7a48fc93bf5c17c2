//! Log recovery over an arbitrary first segment: `open` must return Ok or Err, never panic.
//! When it succeeds, recovery must be idempotent (a second open agrees on `next_position`)
//! and a scan of the recovered log must yield frames covering exactly `next_position` events.
//!
//! Input: byte 0 selects the mode (most values prefix a valid segment header so the fuzzer
//! spends its time on frames; `0 mod 8` writes the rest verbatim to exercise header damage).
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use orchestrix_log::fs::Vfs;
use orchestrix_log::testing::SimFs;
use orchestrix_log::{open, segment, LogConfig};

fn config() -> LogConfig {
    LogConfig {
        segment_size_bytes_max: 4096,
        ..LogConfig::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = Vec::with_capacity(rest.len() + segment::SEGMENT_HEADER_SIZE);
    if mode % 8 != 0 {
        file.extend_from_slice(&segment::encode_header(0));
    }
    file.extend_from_slice(rest);

    let fs = SimFs::new();
    let dir = Path::new("/log");
    fs.create_dir_all(dir).expect("mkdir");
    let seg = fs
        .create_new(&dir.join(segment::file_name(0)))
        .expect("create segment");
    seg.write_all_at(&file, 0).expect("write segment");
    drop(seg);
    let vfs: Arc<dyn Vfs> = Arc::new(fs);

    let first = open(vfs.clone(), dir, config(), None, &mut |_, _, _| Ok(()));
    let Ok((reader, writer, report)) = first else {
        return;
    };
    assert_eq!(writer.next_position(), report.next_position);

    let mut scanner = reader.scan();
    let mut events = 0u64;
    let mut frames = 0u64;
    while let Some((_, h, _)) = scanner.next_frame().expect("scan of a recovered log failed") {
        assert_eq!(h.first_position, events, "scan found a gap or overlap");
        events += u64::from(h.event_count);
        frames += 1;
    }
    assert_eq!(events, report.next_position, "scan disagrees with recovery");
    assert_eq!(frames, report.frames_replayed, "scan and replay saw different frames");
    drop(scanner);
    drop(writer);
    drop(reader);

    let (_, _, again) = open(vfs, dir, config(), None, &mut |_, _, _| Ok(()))
        .expect("reopening a recovered log failed");
    assert_eq!(again.next_position, report.next_position, "recovery is not idempotent");
    assert!(again.truncated.is_none(), "second recovery truncated again: {:?}", again.truncated);
});
