//! `Store::verify` on a live store while appends go on: it must not report a healthy store
//! as damaged. The log's committed end moves (when a group is published to the log) before
//! the stream heads and the position readers read up to are published; a verify whose scan
//! reaches a frame in between looks the frame's stream up through the readers' bound, does
//! not find it, and reports "index disagrees with the log".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrix::{Durability, EventData, ExpectedVersion, Options, Store};

#[test]
fn verify_on_a_live_store_reports_no_damage() {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut verifies = 0u64;
    while Instant::now() < deadline {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            durability: Durability::Never,
            ..Options::test()
        };
        let store = Arc::new(Store::open_with(dir.path(), options).unwrap());
        let done = Arc::new(AtomicBool::new(false));
        let appender = {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..3_000u64 {
                    store
                        .append(
                            &format!("s-{}", i % 7),
                            ExpectedVersion::Any,
                            vec![EventData::new("E", vec![1u8; 8])],
                        )
                        .unwrap();
                }
                done.store(true, Ordering::Release);
            })
        };
        while !done.load(Ordering::Acquire) {
            if let Err(e) = store.verify() {
                done.store(true, Ordering::Release);
                appender.join().unwrap();
                panic!("verify of a healthy store failed after {verifies} runs: {e}");
            }
            verifies += 1;
        }
        appender.join().unwrap();
        store.verify().unwrap();
    }
    eprintln!("{verifies} verifies, none failed");
}
