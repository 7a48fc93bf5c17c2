//! A snapshot save in progress when the store closes: `close` returned while the save went on
//! and wrote its file afterwards, though a closed store writes nothing more (a save only
//! checked at its start that the store was open). Found by a review; fails without the fix.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{on_thread, FileOp, HookFs};
use orchestrix::snapshot::Snapshot;
use orchestrix::{EventData, ExpectedVersion, Options, Store};

#[test]
fn close_does_not_return_while_a_snapshot_save_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let reached = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let (store, _) = Store::open_with_vfs(
        tmp.path(),
        Options::test(),
        Arc::new({
            let (armed, reached, release) = (armed.clone(), reached.clone(), release.clone());
            HookFs::new(move |op| {
                // The saver's first log read (the event at the snapshot's version).
                if op == FileOp::Read && on_thread("saver") && armed.swap(false, Ordering::AcqRel) {
                    reached.wait();
                    release.wait();
                }
                Ok(())
            })
        }),
    )
    .unwrap();
    let store = Arc::new(store);
    store
        .append(
            "acct",
            ExpectedVersion::Any,
            vec![EventData::json("D", b"{}".to_vec())],
        )
        .unwrap();
    armed.store(true, Ordering::Release);
    let saver = {
        let store = store.clone();
        std::thread::Builder::new()
            .name("saver".into())
            .spawn(move || {
                store.save_snapshot(&Snapshot {
                    stream: "acct".into(),
                    version: 0,
                    aggregate_type: "A".into(),
                    state: b"state".to_vec(),
                })
            })
            .unwrap()
    };
    reached.wait();
    let closer = {
        let store = store.clone();
        std::thread::spawn(move || store.close())
    };
    std::thread::sleep(Duration::from_millis(300));
    let closed_during_save = closer.is_finished();
    release.wait();
    let saved = saver.join().unwrap();
    closer.join().unwrap().unwrap();
    let written = store.load_snapshot("acct").unwrap().is_some();
    assert!(
        !(closed_during_save && saved.is_ok() && written),
        "close returned while a save was in progress, and the save then wrote its snapshot"
    );
}
