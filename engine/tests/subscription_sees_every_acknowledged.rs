//! A write fails while an earlier group is being fdatasynced by the syncer. That group was
//! acknowledged once its fdatasync succeeded, while a live subscription that had seen the
//! store latched had already ended with `Poisoned` without delivering it. Now nothing is
//! published (or acknowledged) once the store is latched: the latch and the publication
//! share a lock. Found by a review; fails without the fix.
mod common;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{on_thread, FileOp, HookFs};
use orchestrix::{EventData, ExpectedVersion, Options, ReadFilter, Store, StoreError};

struct Ctl {
    arm_write: AtomicBool,
    arm_sync: AtomicBool,
    fail_writes: AtomicBool,
    w_reached: Barrier,
    w_release: Barrier,
    s_reached: Barrier,
    s_release: Barrier,
}
fn ev() -> EventData {
    EventData::new("E", vec![b'x'; 8])
}

#[test]
fn a_subscription_delivers_every_acknowledged_event_before_poisoned() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = Arc::new(Ctl {
        arm_write: AtomicBool::new(false),
        arm_sync: AtomicBool::new(false),
        fail_writes: AtomicBool::new(false),
        w_reached: Barrier::new(2),
        w_release: Barrier::new(2),
        s_reached: Barrier::new(2),
        s_release: Barrier::new(2),
    });
    let (store, _) = Store::open_with_vfs(
        tmp.path(),
        Options::test(),
        Arc::new({
            let ctl = ctl.clone();
            HookFs::new(move |op| {
                match op {
                    FileOp::Write if on_thread("orchestrix-writer") => {
                        if ctl.arm_write.swap(false, Ordering::AcqRel) {
                            ctl.w_reached.wait();
                            ctl.w_release.wait();
                        } else if ctl.fail_writes.load(Ordering::Acquire) {
                            return Err(io::Error::from_raw_os_error(5));
                        }
                    }
                    FileOp::Sync
                        if on_thread("orchestrix-syncer")
                            && ctl.arm_sync.swap(false, Ordering::AcqRel) =>
                    {
                        ctl.s_reached.wait();
                        ctl.s_release.wait();
                    }
                    _ => {}
                }
                Ok(())
            })
        }),
    )
    .unwrap();
    let store = Arc::new(store);
    store.append("s", ExpectedVersion::Any, vec![ev()]).unwrap();
    let mut sub = store.subscribe_all(0, ReadFilter::all());
    assert_eq!(
        sub.next_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .position,
        0
    );

    // Group 1 (position 1): its write is held up while group 2 queues behind it.
    ctl.arm_write.store(true, Ordering::Release);
    let s1 = store.clone();
    let t1 = std::thread::spawn(move || s1.append("s", ExpectedVersion::Any, vec![ev()]));
    ctl.w_reached.wait();
    let s2 = store.clone();
    let t2 = std::thread::spawn(move || s2.append("t", ExpectedVersion::Any, vec![ev()]));
    std::thread::sleep(Duration::from_millis(200));
    // Group 1 goes to the syncer (group 2 is queued), whose fdatasync is held up; group 2's
    // write fails, which latches the store.
    ctl.arm_sync.store(true, Ordering::Release);
    ctl.fail_writes.store(true, Ordering::Release);
    ctl.w_release.wait();
    ctl.s_reached.wait();
    let r2 = t2.join().unwrap();
    assert!(r2.is_err(), "{r2:?}");
    // The subscription, meanwhile.
    let mut got = Vec::new();
    let end = loop {
        match sub.next_timeout(Duration::from_millis(500)) {
            Ok(Some(e)) => got.push(e.position),
            Ok(None) => break "timeout",
            Err(StoreError::Poisoned) => break "poisoned",
            Err(e) => panic!("{e}"),
        }
    };
    ctl.s_release.wait();
    let r1 = t1.join().unwrap();
    eprintln!(
        "group 1 append: {r1:?}; subscription got {got:?} then {end}; ended: {}",
        sub.is_ended()
    );
    if let Ok(a) = &r1 {
        // Acknowledged: readable now, and a subscription must deliver it before it ends.
        assert_eq!(
            store
                .read_all(0, orchestrix::Direction::Forwards, 10, &ReadFilter::all())
                .unwrap()
                .len(),
            2
        );
        let rest: Vec<_> = sub
            .by_ref()
            .filter_map(|r| r.ok())
            .map(|e| e.position)
            .collect();
        got.extend(rest);
        assert!(
            got.contains(&a.first_position),
            "acknowledged append at position {} never delivered: subscription got {got:?}, then {end}",
            a.first_position
        );
    }
}
