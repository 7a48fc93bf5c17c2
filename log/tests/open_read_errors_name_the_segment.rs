//! A read error while open examines a torn tail names the segment file it read, like every
//! other I/O error of the log (`i/o error on <path>`), not a placeholder.

mod common;

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use orchestrix_log::fs::{StdFs, VFile, Vfs};
use orchestrix_log::{open, LogError};

/// Fails every read from the `fail_from`-th on (counted over all files).
struct FailingReads {
    reads: Arc<AtomicU64>,
    fail_from: u64,
}

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

impl FailingReads {
    fn wrap(&self, f: Arc<dyn VFile>) -> Arc<dyn VFile> {
        Arc::new(FailingFile {
            inner: f,
            reads: self.reads.clone(),
            fail_from: self.fail_from,
        })
    }
}

impl Vfs for FailingReads {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(StdFs.open(path)?))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(StdFs.create_new(path)?))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(StdFs.create(path)?))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        StdFs.exists(path)
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
        let vfs = Arc::new(FailingReads {
            reads: Arc::new(AtomicU64::new(0)),
            fail_from,
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
