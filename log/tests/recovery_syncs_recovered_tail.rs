//! Regression (found by `power_loss.rs`): frames that recovery adopts must be durable before
//! a new frame records them as durable.
//!
//! Every frame carries the log's durable end when it was written, and recovery treats damage
//! followed by a frame whose durable end lies past it as corruption of acknowledged data. A
//! writer opened after a process crash used to take the recovered end as durable although
//! the dead process had written the last frames without syncing them. Its next frame then
//! claimed them durable; a power loss before that frame's own sync could drop or tear the old
//! frames and land the new one, and recovery refused the log as `Corrupted` although nothing
//! acknowledged was damaged. This reproduces that sequence and checks that recovery succeeds,
//! with the acknowledged frame, under 64 crash seeds.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use orchestrix_log::testing::{FaultKind, FaultyFs, OpKind, SimFs};

#[test]
fn a_power_loss_after_a_process_crash_is_not_reported_as_corruption() {
    let dir = Path::new("/db/log");
    let sim = Arc::new(SimFs::new());
    let attempts: Vec<Attempt> = (0..3).map(|id| attempt(id, 2, 60)).collect();

    // First process: one acknowledged frame, one written but not synced, then it dies.
    let mut first = open_collect(sim.clone(), dir).unwrap();
    append_commit(&mut first.writer, &attempts[0]).unwrap();
    append(&mut first.writer, &attempts[1]).unwrap();
    first.writer.commit(false).unwrap();
    drop(first);

    // Second process: recovers both, appends a third, and the power fails before its sync.
    let fs = Arc::new(FaultyFs::new(sim.clone()));
    let mut second = open_collect(fs.clone(), dir).unwrap();
    assert_eq!(second.frames.len(), 2);
    append(&mut second.writer, &attempts[2]).unwrap();
    let sync = fs.ops_so_far() + 1;
    fs.arm(sync, FaultKind::Eio, true);
    assert!(second.writer.commit(true).is_err());
    assert_eq!(fs.op_kinds()[sync as usize], OpKind::SyncData);
    drop(second);

    for seed in 0..64 {
        let recovered = open_collect(Arc::new(sim.crash(seed)), dir)
            .unwrap_or_else(|e| panic!("crash seed {seed}: {e}"));
        check_prefix(&recovered.frames, &attempts, 1)
            .unwrap_or_else(|e| panic!("crash seed {seed}: {e}"));
    }
}
