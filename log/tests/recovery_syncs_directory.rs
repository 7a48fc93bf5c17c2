//! Regression (found by `power_loss.rs`): recovery must make the directory entry of every
//! recovered segment durable before anything is acknowledged in it.
//!
//! Creating a segment is: create the file, write and sync its header, sync the directory. A
//! process that dies before the directory sync leaves a segment that the next process sees
//! (the entry is in the page cache) but that a power loss can still erase. Recovery used to
//! adopt it as the active segment and acknowledge appends into it after syncing only the
//! file, so a later power loss took acknowledged frames with the vanished entry. This cuts
//! the process right before that directory sync, recovers on the live state, acknowledges
//! three appends, and checks that they survive a power loss under 64 seeds.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use orchestrix_log::testing::{FaultKind, FaultyFs, OpKind, SimFs};

#[test]
fn appends_into_a_recovered_segment_survive_power_loss() {
    let dir = Path::new("/db/log");

    // Where the directory sync of the first segment's creation happens.
    let probe = Arc::new(FaultyFs::new(Arc::new(SimFs::new())));
    open_collect(probe.clone(), dir).unwrap();
    let kinds = probe.op_kinds();
    let create = kinds.iter().position(|k| *k == OpKind::CreateNew).unwrap();
    let dir_sync = create
        + kinds[create..]
            .iter()
            .position(|k| *k == OpKind::SyncDir)
            .unwrap();

    // The process dies right before it.
    let sim = Arc::new(SimFs::new());
    let fs = Arc::new(FaultyFs::new(sim.clone()));
    fs.arm(dir_sync as u64, FaultKind::Eio, true);
    assert!(open_collect(fs, dir).is_err());

    // The next process recovers on the live state and acknowledges three appends.
    let mut opened = open_collect(sim.clone(), dir).unwrap();
    let attempts: Vec<Attempt> = (0..3).map(|id| attempt(id, 1, 40)).collect();
    for a in &attempts {
        append_commit(&mut opened.writer, a).unwrap();
    }
    drop(opened);

    for seed in 0..64 {
        let crashed = Arc::new(sim.crash(seed));
        let recovered = open_collect(crashed, dir).unwrap();
        check_prefix(&recovered.frames, &attempts, attempts.len())
            .unwrap_or_else(|e| panic!("crash seed {seed}: {e}"));
    }
}
