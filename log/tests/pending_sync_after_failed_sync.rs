//! A group handed to the syncer (a pending commit) is never made durable by an fdatasync that
//! runs after another fdatasync of the log has failed.
//!
//! The kernel reports a writeback error to one fdatasync only: if a segment roll's fdatasync
//! (on the writer's thread) gets the error, a later fdatasync of the same file (the syncer's,
//! for a group written before the roll) succeeds although that group's pages may never have
//! reached the disk. The injected failure here is transient, as the kernel's is: only the
//! failing call sees it. Every fdatasync after it must fail until the log is reopened.

mod common;

use std::sync::Arc;

use common::*;
use orchestrix_log::fs::{StdFs, Vfs};
use orchestrix_log::testing::{FaultKind, FaultyFs, OpKind};
use orchestrix_log::LogError;

/// Writes one group and leaves it pending, then appends until the log rolls. Returns the
/// pending commit's sync outcome, the index of the first counted operation of the roll, and
/// the outcome of the append that rolled.
fn pending_then_roll(
    fs: &Arc<FaultyFs>,
    dir: &std::path::Path,
    arm_at: Option<u64>,
) -> (Result<(), LogError>, u64, Result<(), LogError>) {
    let vfs: Arc<dyn Vfs> = fs.clone();
    let mut opened = open_collect(vfs, dir).expect("open");
    let w = &mut opened.writer;
    let first_segment = append(w, &attempt(0, 1, 40)).expect("append").segment;
    let pending = w.write_pending().expect("write");
    let roll_starts = fs.ops_so_far();
    if let Some(n) = arm_at {
        fs.arm(n, FaultKind::Eio, false);
    }
    let mut rolled = Ok(());
    for id in 1.. {
        match append(w, &attempt(id, 2, 300)) {
            Ok(loc) if loc.segment == first_segment => continue,
            Ok(_) => break,
            Err(e) => {
                rolled = Err(e);
                break;
            }
        }
    }
    fs.disarm();
    (pending.sync(), roll_starts, rolled)
}

#[test]
fn a_pending_commit_does_not_sync_after_a_failed_roll_sync() {
    // A clean run finds the roll's fdatasync among the operations it counts.
    let clean = tempfile::tempdir().unwrap();
    let fs = Arc::new(FaultyFs::new(Arc::new(StdFs)));
    let (synced, roll_starts, rolled) = pending_then_roll(&fs, clean.path(), None);
    synced.expect("without a failure the pending commit syncs");
    rolled.expect("without a failure the log rolls");
    let kinds = fs.op_kinds();
    let roll_sync = (roll_starts as usize..kinds.len())
        .find(|&i| kinds[i] == OpKind::SyncData)
        .expect("the roll fdatasyncs the sealed segment") as u64;

    // The same run with that fdatasync failing once.
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(FaultyFs::new(Arc::new(StdFs)));
    let (synced, _, rolled) = pending_then_roll(&fs, dir.path(), Some(roll_sync));
    assert_eq!(fs.failures(), 1, "the roll's fdatasync failed");
    match rolled {
        Err(LogError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(5)),
        other => panic!("the append that rolled got {other:?}, not the roll's EIO"),
    }
    // The file system would now let an fdatasync through: the log must not.
    match synced {
        Err(LogError::Poisoned) => {}
        other => panic!("the pending commit's fdatasync after the failed one gave {other:?}"),
    }
    assert_eq!(fs.failures(), 1, "no further failure was injected");
}
