//! The syncer completes several written groups with one fdatasync, of the segment the last
//! of them ends in (the segments before it were synced whole when the log rolled). When a
//! batch spans a roll, an fdatasync of any other group's segment leaves the last group
//! unsynced, yet acknowledged. A review's mutation (sync the first group of the batch, not the
//! last) passed every test except, now and then, the randomized `power_loss_acknowledged`;
//! this test builds that batch on purpose.
//!
//! With 4 KiB segments, on the power-loss simulator under a hooked file layer:
//! 1. Append `a` (small). The writer's write of it waits until append `b` is queued, so that
//!    the writer hands `a` to the syncer instead of completing it inline.
//! 2. The syncer's fdatasync of `a` waits while `b` (small), `c` (3.8 KiB: a segment of its
//!    own) and `d` (small: the log rolls again) are written and handed to the syncer's queue.
//! 3. Released, the syncer takes `b`, `c` and `d` as one batch.
//!
//! Once all four are acknowledged, each of 16 crash images of the disk must hold them. With
//! the review's mutation, `d` is lost in one of the first images.
//!
//! The order of steps 1-2 is set by the hook and by waits of 100-300 ms; on a machine too slow
//! for those waits the appends reach the syncer in smaller batches, and the test still passes
//! on correct code (it then proves less). It says how the batch came out.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{on_thread, FileOp, HookFs};
use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store};
use orchestrix_log::testing::SimFs;

/// A gate threads wait at until it is opened.
#[derive(Default)]
struct Gate(Mutex<bool>, Condvar);

impl Gate {
    fn wait(&self) {
        let mut open = self.0.lock().unwrap();
        while !*open {
            let (g, timeout) = self.1.wait_timeout(open, Duration::from_secs(10)).unwrap();
            open = g;
            assert!(!timeout.timed_out() || *open, "a gate stayed shut for 10 s");
        }
    }
    fn open(&self) {
        *self.0.lock().unwrap() = true;
        self.1.notify_all();
    }
}

#[test]
fn a_batch_of_groups_across_a_roll_is_synced_to_its_last_group() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let sim = Arc::new(SimFs::new());
    let armed = Arc::new(AtomicBool::new(false));
    let writer_gate = Arc::new(Gate::default());
    let syncer_gate = Arc::new(Gate::default());
    let syncer_syncs = Arc::new(AtomicUsize::new(0));
    let writer_held = Arc::new(AtomicBool::new(false));
    let hook = {
        let (armed, writer_gate, syncer_gate) =
            (armed.clone(), writer_gate.clone(), syncer_gate.clone());
        let (syncer_syncs, writer_held) = (syncer_syncs.clone(), writer_held.clone());
        move |op: FileOp| {
            if !armed.load(Ordering::Acquire) {
                return Ok(());
            }
            if op == FileOp::Write
                && on_thread("orchestrix-writer")
                && !writer_held.swap(true, Ordering::AcqRel)
            {
                writer_gate.wait();
            }
            if op == FileOp::Sync
                && on_thread("orchestrix-syncer")
                && syncer_syncs.fetch_add(1, Ordering::AcqRel) == 0
            {
                syncer_gate.wait();
            }
            Ok(())
        }
    };
    let vfs = Arc::new(HookFs::over(sim.clone(), hook));
    let (store, _) = Store::open_with_vfs(&dir, Options::test(), vfs).unwrap();
    let store = Arc::new(store);
    armed.store(true, Ordering::Release);

    let append = |stream: &'static str, size: usize| {
        let store = store.clone();
        std::thread::spawn(move || {
            let e = EventData::new("E", vec![7u8; size]);
            let id = e.id;
            let r = store
                .append(stream, ExpectedVersion::NoStream, vec![e])
                .unwrap();
            (stream, r.first_position, id)
        })
    };
    let a = append("a", 40);
    std::thread::sleep(Duration::from_millis(100));
    let b = append("b", 40);
    std::thread::sleep(Duration::from_millis(100));
    // `b` is queued: the writer finds it after writing `a` and hands `a` to the syncer.
    writer_gate.open();
    std::thread::sleep(Duration::from_millis(100));
    let c = append("c", 3900);
    std::thread::sleep(Duration::from_millis(100));
    let d = append("d", 40);
    // The writer writes `b`, then rolls and writes `c`, then `d`, while the syncer waits in
    // `a`'s fdatasync.
    std::thread::sleep(Duration::from_millis(300));
    syncer_gate.open();
    let acked: Vec<_> = [a, b, c, d]
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let batched = syncer_syncs.load(Ordering::Acquire);
    eprintln!("the syncer made {batched} fdatasyncs for a to d (2: b, c and d in one batch)");

    let segments = store.info().unwrap().segments.len();
    assert!(segments >= 2, "c did not roll the log ({segments} segment)");
    // Power losses right after the acknowledgements (before close, which syncs everything).
    let images: Vec<SimFs> = (0..16).map(|seed| sim.crash(seed)).collect();
    Arc::into_inner(store).unwrap().close().unwrap();
    for (seed, image) in images.into_iter().enumerate() {
        // The index and its files live on the real file system, which did not lose power:
        // derived data, dropped and rebuilt by the open.
        for derived in ["ids", "streams"] {
            let _ = std::fs::remove_dir_all(dir.join(derived));
        }
        let _ = std::fs::remove_file(dir.join("index.redb"));
        let (reopened, _) = Store::open_with_vfs(&dir, Options::test(), Arc::new(image)).unwrap();
        let all = reopened
            .read_all(0, Direction::Forwards, usize::MAX, &ReadFilter::all())
            .unwrap();
        for (stream, position, id) in &acked {
            let kept = all.iter().find(|e| e.position == *position);
            assert!(
                kept.is_some_and(|e| e.id == *id && e.stream() == *stream),
                "crash seed {seed}: the acknowledged append to {stream} at position {position} \
                 is lost ({} events kept; the syncer made {batched} fdatasyncs)",
                all.len()
            );
        }
        reopened.close().unwrap();
    }
}
