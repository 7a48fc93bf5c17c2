//! Opening a store in a directory that does not exist yet makes every directory it creates
//! durable in its parent before the first append is acknowledged (a directory's entry lives
//! in its parent: without that fsync a power loss could take the new store away, with every
//! acknowledged append in it). Reopening an existing store syncs none of its ancestors.
//!
//! Power loss of directory entries is not simulated here: the calls to the file layer are
//! recorded instead, as in the log's `new_log_directory_is_durable`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orchestrix::{EventData, ExpectedVersion, Options, Store};
use orchestrix_log::fs::{StdFs, VFile, Vfs};

struct Recording {
    inner: StdFs,
    synced_dirs: Mutex<Vec<PathBuf>>,
}

impl Vfs for Recording {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        self.inner.open(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
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
        self.synced_dirs.lock().unwrap().push(dir.to_path_buf());
        self.inner.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
}

fn open(dir: &Path) -> (Store, Arc<Recording>) {
    let fs = Arc::new(Recording {
        inner: StdFs,
        synced_dirs: Mutex::new(Vec::new()),
    });
    let (store, _) = Store::open_with_vfs(dir, Options::test(), fs.clone()).unwrap();
    (store, fs)
}

#[test]
fn a_new_store_directory_is_synced_in_its_parents() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a").join("b").join("store");
    let (store, fs) = open(&dir);
    store
        .append(
            "s",
            ExpectedVersion::NoStream,
            vec![EventData::new("E", b"x".to_vec())],
        )
        .unwrap();
    let synced = fs.synced_dirs.lock().unwrap().clone();
    // The parent of each directory created: the root (for a), a (for b), b (for the store).
    for parent in [
        root.path().to_path_buf(),
        root.path().join("a"),
        root.path().join("a").join("b"),
    ] {
        assert!(
            synced.contains(&parent),
            "{} was not synced before the first acknowledgement: {synced:?}",
            parent.display()
        );
    }
    store.close().unwrap();
    drop(store);

    let (store, fs) = open(&dir);
    let synced = fs.synced_dirs.lock().unwrap().clone();
    assert!(
        synced.iter().all(|d| d.starts_with(&dir)),
        "reopening synced a directory outside the store: {synced:?}"
    );
    drop(store);
}
