//! A save of an older snapshot racing a newer one: the older must not replace the newer. The
//! save judged the stored snapshot against the stream's head as of its own start, which a
//! newer snapshot saved meanwhile was past, so the older one replaced it (found by a review;
//! fails without the fix).
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use common::{on_thread, FileOp, HookFs};
use orchestrix::snapshot::Snapshot;
use orchestrix::{EventData, ExpectedVersion, Options, Store};

/// Holds up the first log read of the thread `slow-saver` once armed, until released.
struct Gate {
    armed: AtomicBool,
    reached: Barrier,
    release: Barrier,
}

fn snap(v: u64) -> Snapshot {
    Snapshot {
        stream: "acct".into(),
        version: v,
        aggregate_type: "A".into(),
        state: format!("{v}").into_bytes(),
    }
}
fn ev() -> EventData {
    EventData::json("D", b"{}".to_vec())
}

#[test]
fn an_older_save_racing_a_newer_one_does_not_replace_it() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate {
        armed: AtomicBool::new(false),
        reached: Barrier::new(2),
        release: Barrier::new(2),
    });
    let (store, _) = Store::open_with_vfs(
        tmp.path(),
        Options::test(),
        Arc::new({
            let gate = gate.clone();
            HookFs::new(move |op| {
                if op == FileOp::Read
                    && on_thread("slow-saver")
                    && gate.armed.swap(false, Ordering::AcqRel)
                {
                    gate.reached.wait();
                    gate.release.wait();
                }
                Ok(())
            })
        }),
    )
    .unwrap();
    let store = Arc::new(store);
    for _ in 0..11 {
        store
            .append("acct", ExpectedVersion::Any, vec![ev()])
            .unwrap();
    }
    gate.armed.store(true, Ordering::Release);
    let s = store.clone();
    let slow = std::thread::Builder::new()
        .name("slow-saver".into())
        .spawn(move || s.save_snapshot(&snap(8)))
        .unwrap();
    // The slow saver has read the head (10) and is reading the event at version 8.
    gate.reached.wait();
    store
        .append("acct", ExpectedVersion::Exact(10), vec![ev(), ev()])
        .unwrap();
    store.save_snapshot(&snap(12)).unwrap();
    assert_eq!(
        store.load_snapshot("acct").unwrap().map(|s| s.version),
        Some(12)
    );
    gate.release.wait();
    slow.join().unwrap().unwrap();
    assert_eq!(
        store.load_snapshot("acct").unwrap().map(|s| s.version),
        Some(12),
        "the older save (version 8) replaced the newer snapshot (version 12)"
    );
}
