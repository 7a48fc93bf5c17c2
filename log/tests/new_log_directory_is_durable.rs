//! Regression (found in review): creating a log directory must sync its parent before the
//! first append is acknowledged.
//!
//! A directory's own entry lives in its parent. `open` on a missing directory created it and
//! synced only the directory itself (when creating the first segment), so a power loss could
//! erase the new directory, and with it every acknowledged append. The simulator treats
//! directories as durable on creation, so this test records the calls instead: the parent is
//! synced right after creation and before the first segment is created, and not again when an
//! existing log is reopened.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use orchestrix_log::fs::{VFile, Vfs};
use orchestrix_log::testing::SimFs;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    CreateDirAll(PathBuf),
    SyncDir(PathBuf),
    CreateNew(PathBuf),
}

struct Recording {
    inner: SimFs,
    calls: Mutex<Vec<Call>>,
}

impl Recording {
    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }
}

impl Vfs for Recording {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        self.inner.open(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        self.record(Call::CreateNew(path.to_path_buf()));
        self.inner.create_new(path)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        self.inner.create(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.record(Call::SyncDir(dir.to_path_buf()));
        self.inner.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.record(Call::CreateDirAll(dir.to_path_buf()));
        self.inner.create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
}

#[test]
fn a_new_log_directory_is_synced_in_its_parent() {
    let fs = Arc::new(Recording {
        inner: SimFs::new(),
        calls: Mutex::new(Vec::new()),
    });
    let dir = Path::new("/db/log");
    let mut opened = open_collect(fs.clone(), dir).unwrap();
    append_commit(&mut opened.writer, &attempt(0, 1, 10)).unwrap();
    drop(opened);
    let calls = std::mem::take(&mut *fs.calls.lock().unwrap());
    assert_eq!(
        calls[..3],
        [
            Call::CreateDirAll(dir.into()),
            Call::SyncDir("/db".into()),
            Call::CreateNew(dir.join("00000000000000000000.seg")),
        ]
    );

    open_collect(fs.clone(), dir).unwrap();
    let calls = fs.calls.lock().unwrap().clone();
    assert!(!calls.contains(&Call::SyncDir("/db".into())), "{calls:?}");
}
