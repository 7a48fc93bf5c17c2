//! Regression (found in review): creating a log directory must sync its parent before the
//! first append is acknowledged.
//!
//! A directory's own entry lives in its parent. `open` on a missing directory created it and
//! synced only the directory itself (when creating the first segment), so a power loss could
//! erase the new directory, and with it every acknowledged append. The simulator treats
//! directories as durable on creation, so this test records the calls instead: the parent is
//! synced right after creation and before the first segment is created, with each missing
//! ancestor in its own parent, and not again when an existing log is reopened.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use orchestrix_log::testing::{DirCall as Call, RecordingFs, SimFs};

#[test]
fn a_new_log_directory_is_synced_in_its_parent() {
    let fs = Arc::new(RecordingFs::new(Arc::new(SimFs::new())));
    let dir = Path::new("/db/log");
    let mut opened = open_collect(fs.clone(), dir).unwrap();
    append_commit(&mut opened.writer, &attempt(0, 1, 10)).unwrap();
    drop(opened);
    let calls = fs.take_calls();
    // `/db` was missing too: its entry in `/` is synced before the log's entry in `/db`
    // (only the log directory's parent was synced, a review found).
    assert_eq!(
        calls[..4],
        [
            Call::CreateDirAll(dir.into()),
            Call::SyncDir("/".into()),
            Call::SyncDir("/db".into()),
            Call::CreateNew(dir.join("00000000000000000000.seg")),
        ]
    );

    open_collect(fs.clone(), dir).unwrap();
    let calls = fs.take_calls();
    assert!(!calls.contains(&Call::SyncDir("/db".into())), "{calls:?}");
}
