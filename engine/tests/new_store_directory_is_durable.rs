//! Opening a store in a directory that does not exist yet makes every directory it creates
//! durable in its parent before the first append is acknowledged (a directory's entry lives
//! in its parent: without that fsync a power loss could take the new store away, with every
//! acknowledged append in it). Reopening an existing store syncs none of its ancestors.
//!
//! Power loss of directory entries is not simulated here: the calls to the file layer are
//! recorded instead (`RecordingFs`), as in the log's `new_log_directory_is_durable`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orchestrix::{EventData, ExpectedVersion, Options, Store};
use orchestrix_log::fs::StdFs;
use orchestrix_log::testing::{DirCall, RecordingFs};

fn open(dir: &Path) -> (Store, Arc<RecordingFs>) {
    let fs = Arc::new(RecordingFs::new(Arc::new(StdFs)));
    let (store, _) = Store::open_with_vfs(dir, Options::test(), fs.clone()).unwrap();
    (store, fs)
}

/// The directories synced among `calls`.
fn synced_dirs(calls: Vec<DirCall>) -> Vec<PathBuf> {
    calls
        .into_iter()
        .filter_map(|c| match c {
            DirCall::SyncDir(d) => Some(d),
            _ => None,
        })
        .collect()
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
    let synced = synced_dirs(fs.take_calls());
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
    let synced = synced_dirs(fs.take_calls());
    assert!(
        synced.iter().all(|d| d.starts_with(&dir)),
        "reopening synced a directory outside the store: {synced:?}"
    );
    drop(store);
}
