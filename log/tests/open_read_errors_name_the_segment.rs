//! A read error while open examines a torn tail names the segment file it read, like every
//! other I/O error of the log (`i/o error on <path>`), not a placeholder.

mod common;

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use orchestrix_log::fs::VFile;
use orchestrix_log::{open, LogError};

/// A file whose reads fail from the `fail_from`-th on (counted over all files: `reads`).
struct FailingFile {
    inner: Arc<dyn VFile>,
    reads: Arc<AtomicU64>,
    fail_from: u64,
}

impl VFile for FailingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if self.reads.fetch_add(1, Ordering::Relaxed) >= self.fail_from {
            return Err(io::Error::from_raw_os_error(5));
        }
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
}

#[test]
fn every_read_error_of_open_names_a_segment_file() {
    let template = tempfile::tempdir().unwrap();
    let mut opened = open_collect(no_sync_fs(), template.path()).unwrap();
    for id in 0..20 {
        append_commit(&mut opened.writer, &attempt(id, 1, 30)).unwrap();
    }
    let active = opened.reader.segments().last().unwrap().clone();
    drop(opened);
    // A torn tail: garbage after the last frame, then a frame-like run of bytes.
    let seg = std::fs::OpenOptions::new()
        .write(true)
        .open(template.path().join(&active.name))
        .unwrap();
    seg.write_all_at(b"OXFR garbage garbage garbage garbage", active.size_bytes)
        .unwrap();
    drop(seg);

    let mut io_errors = 0;
    for fail_from in 0..64 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let reads = Arc::new(AtomicU64::new(0));
        let vfs = Arc::new(WrappedStdFs {
            wrap: move |_: &Path, inner: Arc<dyn VFile>| -> Arc<dyn VFile> {
                Arc::new(FailingFile {
                    inner,
                    reads: reads.clone(),
                    fail_from,
                })
            },
            sync_dirs: true,
        });
        match open(vfs, dir.path(), config(), None, &mut |_, _, _| Ok(())) {
            Err(LogError::Io { path, .. }) => {
                io_errors += 1;
                assert!(
                    path.extension().is_some_and(|e| e == "seg"),
                    "read {fail_from} failed: the error names {path:?}"
                );
            }
            Err(e) => panic!("read {fail_from} failed: unexpected error {e}"),
            Ok(_) => break,
        }
    }
    assert!(io_errors > 1);
}
