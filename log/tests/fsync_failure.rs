//! A failed write, fsync, create or directory sync latches the writer, and reopening recovers
//! exactly a prefix that holds every acknowledged append.
//!
//! PostgreSQL's 2018 "fsyncgate" showed that retrying a failed fsync and carrying on loses
//! data. The log's rule: the first failed I/O poisons the writer (every later call fails with
//! `Poisoned` and does no I/O), nothing is acknowledged after it, and the next open recovers.
//! The workload (about 200 counted operations: appends, commits, syncs, four segment rolls) is
//! run once per operation index with that operation failing with EIO, transiently (only that
//! operation; a failing write writes nothing) and sticky (that one and all later ones; a
//! failing write first writes half its buffer). After each run the directory is reopened
//! with the plain file system: open must succeed and return a prefix of the attempted frames
//! that holds every acknowledged one, whole.

mod common;

use common::*;
use orchestrix_log::testing::FaultKind;

#[test]
fn every_failed_operation_latches_and_recovers_the_acknowledged_prefix() {
    let total = fault_workload_ops();
    assert!(
        (180..=240).contains(&total),
        "workload has {total} counted operations"
    );
    let scratch = tempfile::tempdir().unwrap();
    parallel_chunks(total as usize, |range| {
        for n in range {
            for (sticky, partial) in [(false, false), (true, true)] {
                let dir = scratch.path().join(format!("{n}-{sticky}"));
                let (run, _) = fault_case(&dir, n as u64, FaultKind::Eio, sticky, partial, total);
                assert!(run.acked <= run.attempts.len());
            }
        }
    });
}
