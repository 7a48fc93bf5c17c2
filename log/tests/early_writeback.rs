//! With early writeback (the relaxed durability modes), the writer asks the file to start
//! writing each 8 MiB written, so that the fdatasync at a roll does not meet a whole segment of
//! dirty pages: the ranges are consecutive, start after the header, cover only written frames,
//! and restart at each new segment. Without it (fdatasync every group) it never asks.

mod common;

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use orchestrix_log::fs::VFile;
use orchestrix_log::{open, segment, LogConfig, EARLY_WRITEBACK_BYTES};

/// (file name, offset, length) of each `start_writeback`.
type Call = (String, u64, u64);
type Calls = Arc<Mutex<Vec<Call>>>;

struct RecordingFile {
    inner: Arc<dyn VFile>,
    name: String,
    calls: Calls,
}

impl VFile for RecordingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push((self.name.clone(), offset, len));
        self.inner.start_writeback(offset, len)
    }
}

/// Appends 100 KiB frames, one commit each without a sync, until `total` bytes are written;
/// checks the frames read back; returns the recorded calls and the segments (name, size).
fn run(early_writeback: bool, total: u64) -> (Vec<Call>, Vec<(String, u64)>) {
    let dir = tempfile::tempdir().unwrap();
    // The real file system, recording every `start_writeback` with its file's name.
    let calls = Calls::default();
    let recorded = calls.clone();
    let vfs = Arc::new(WrappedStdFs {
        wrap: move |path: &Path, inner: Arc<dyn VFile>| -> Arc<dyn VFile> {
            Arc::new(RecordingFile {
                inner,
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                calls: recorded.clone(),
            })
        },
        sync_dirs: true,
    });
    let config = LogConfig {
        segment_size_bytes_max: 24 << 20,
        early_writeback,
        ..LogConfig::default()
    };
    let (reader, mut writer, _) =
        open(vfs, dir.path(), config, None, &mut |_, _, _| Ok(())).unwrap();
    let mut attempts = Vec::new();
    let mut written = 0u64;
    let mut id = 0;
    while written < total {
        let a = attempt(id, 1, 100 << 10);
        written += append(&mut writer, &a).unwrap().len;
        writer.commit(false).unwrap();
        attempts.push(a);
        id += 1;
    }
    let frames = scan_all(&reader);
    check_prefix(&frames, &attempts, attempts.len()).unwrap();
    let segments = reader
        .segments()
        .iter()
        .map(|s| (s.name.clone(), s.size_bytes))
        .collect();
    let calls = calls.lock().unwrap().clone();
    (calls, segments)
}

#[test]
fn writeback_is_started_every_8_mib_per_segment_only_when_asked() {
    let (calls, segments) = run(true, 60 << 20);
    assert!(segments.len() >= 3, "rolled: {segments:?}");
    for (name, size) in &segments {
        let mine: Vec<(u64, u64)> = calls
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|&(_, o, l)| (o, l))
            .collect();
        // Consecutive ranges from the end of the header, each at least 8 MiB, inside the frames.
        let mut next = segment::SEGMENT_HEADER_SIZE as u64;
        for &(offset, len) in &mine {
            assert_eq!(offset, next, "{name}: {mine:?}");
            assert!(len >= EARLY_WRITEBACK_BYTES, "{name}: {mine:?}");
            next = offset + len;
        }
        assert!(
            next <= *size,
            "{name}: started past its frames ({next} > {size})"
        );
        // Less than 8 MiB plus a frame is left unstarted at the end of a segment.
        assert!(
            *size - next < EARLY_WRITEBACK_BYTES + (200 << 10),
            "{name}: {mine:?}"
        );
    }
    assert!(calls.len() >= 5, "{calls:?}");

    let (calls, _) = run(false, 20 << 20);
    assert!(calls.is_empty(), "{calls:?}");
}
