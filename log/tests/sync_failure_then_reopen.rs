//! A log reopened in the same boot after a failed fdatasync keeps every frame acknowledged
//! after the reopen through a later power loss (fsyncgate).
//!
//! When the kernel fails to write a file's dirty pages, it reports the error to one fdatasync
//! and may keep the pages cached, marked clean: reads still see the frames, no later
//! fdatasync writes them, a power loss loses them (`SimFs::lose_unsynced` models this). The
//! store latches on the error and its documented way out is to reopen. Recovery then found the
//! failed group's frames whole in the cache, synced the segment (which wrote nothing) and
//! counted them durable; frames appended and acknowledged after the reopen recorded them as
//! durable, and after a power loss the log had a hole where they were, with acknowledged frames
//! behind it: recovery refused the log as `Corrupted`. The failed fdatasync now leaves a
//! `SYNC_FAILED` file in the directory naming the segment, the end of its last successful
//! fdatasync and the boot (it only has to outlive the process, so it is not synced), and the
//! next open in the same boot writes the bytes after that end again before its fdatasync,
//! then removes the file. `power_loss.rs` runs the same fault at seeded points.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use orchestrix_log::fs::Vfs;
use orchestrix_log::testing::{FaultKind, FaultyFs, OpKind, SimFs};
use orchestrix_log::{segment, SYNC_FAILED_FILE};

/// Appends `a` and `b` durably, writes `c` and `d` as a pending group whose fdatasync fails
/// with the pages lost to the disk, reopens on the live state (same boot) and appends `e`
/// durably. Returns the file system, the attempts in log order, and the frames recovered by
/// the reopen.
fn fail_then_reopen(dir: &Path) -> (Arc<SimFs>, Vec<Attempt>, Vec<Found>) {
    let sim = Arc::new(SimFs::new());
    let fs = Arc::new(FaultyFs::new(sim.clone()));
    let attempts: Vec<Attempt> = (0..5).map(|id| attempt(id, 2, 40)).collect();
    {
        let mut opened = open_collect(fs.clone() as Arc<dyn Vfs>, dir).expect("open");
        let w = &mut opened.writer;
        for a in &attempts[..2] {
            append_commit(w, a).expect("acknowledged");
        }
        for a in &attempts[2..4] {
            append(w, a).expect("append");
        }
        let pending = w.write_pending().expect("write");
        sim.lose_unsynced(&dir.join(segment::file_name(0)))
            .expect("segment");
        fs.arm(fs.ops_so_far(), FaultKind::Eio, false);
        assert!(pending.sync().is_err(), "the injected fdatasync failure");
        fs.disarm();
        assert!(
            sim.live_bytes(&dir.join(SYNC_FAILED_FILE)).is_some(),
            "the failure leaves its file"
        );
    }
    let mut opened = open_collect(fs.clone() as Arc<dyn Vfs>, dir).expect("reopen");
    assert!(
        sim.live_bytes(&dir.join(SYNC_FAILED_FILE)).is_none(),
        "the reopen removes the file"
    );
    let recovered = opened.frames.clone();
    append_commit(&mut opened.writer, &attempts[4]).expect("acknowledged after the reopen");
    (sim, attempts, recovered)
}

#[test]
fn frames_acknowledged_after_the_reopen_survive_a_power_loss() {
    let dir = Path::new("/db/log");
    let (sim, attempts, recovered) = fail_then_reopen(dir);
    // The failed group's frames were whole in the cache: the reopen kept them (allowed: they
    // were never acknowledged), so the log is every attempt, the last one acknowledged.
    check_prefix(&recovered, &attempts[..4], 4).expect("the reopen's log");
    for seed in 0..64 {
        let crashed = Arc::new(sim.crash(seed));
        let opened = open_collect(crashed as Arc<dyn Vfs>, dir)
            .unwrap_or_else(|e| panic!("seed {seed}: recovery after the power loss: {e}"));
        check_prefix(&opened.frames, &attempts, attempts.len())
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn an_open_after_no_failure_writes_nothing_again() {
    let dir = Path::new("/db/log");
    let sim = Arc::new(SimFs::new());
    let attempts: Vec<Attempt> = (0..3).map(|id| attempt(id, 2, 40)).collect();
    {
        let mut opened = open_collect(sim.clone() as Arc<dyn Vfs>, dir).expect("open");
        for a in &attempts {
            append_commit(&mut opened.writer, a).expect("acknowledged");
        }
    }
    let fs = Arc::new(FaultyFs::new(sim.clone()));
    let opened = open_collect(fs.clone() as Arc<dyn Vfs>, dir).expect("reopen");
    check_prefix(&opened.frames, &attempts, attempts.len()).expect("log");
    let kinds = fs.op_kinds();
    assert!(
        !kinds.contains(&OpKind::WriteAllAt),
        "an open after no failure wrote: {kinds:?}"
    );
}
