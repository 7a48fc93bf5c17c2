//! `Store::close` "flushes, syncs and stops the background threads": under relaxed
//! durability (`Interval`, `Never`) it is the fdatasync that makes the appends acknowledged
//! since the last tick durable. When that fdatasync fails, close must say so: a caller that
//! gets `Ok` from close takes its appends for durable, and a power loss then takes them.
//! (A review found the writer's final fdatasync result ignored and close always `Ok`.)

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::deposit;

use orchestrix::{Durability, Options, Store};
use orchestrix_log::testing::SimFs;

/// The events a power loss right after the close keeps (counted by a reopen of the crashed
/// disk image, with the index rebuilt from the log).
fn kept_after_power_loss(store: Store, dir: &Path, opts: Options, sim: &SimFs) -> u64 {
    let crashed = sim.crash(1);
    drop(store);
    std::fs::remove_file(dir.join("index.redb")).unwrap();
    let (reopened, _) = Store::open_with_vfs(dir, opts, Arc::new(crashed)).unwrap();
    reopened.committed_position()
}

#[test]
fn a_failed_fdatasync_at_close_is_reported() {
    for durability in [
        Durability::Interval(Duration::from_secs(3600)),
        Durability::Never,
    ] {
        let opts = Options {
            durability,
            ..Options::test()
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let sim = Arc::new(SimFs::new());
        let (store, _) = Store::open_with_vfs(&dir, opts.clone(), sim.clone()).unwrap();
        for n in 0..3 {
            deposit(&store, n);
        }
        // The next fdatasync (close's) fails: the appends' pages never reach the disk.
        sim.fail_sync(0);
        let closed = store.close();
        let kept = kept_after_power_loss(store, &dir, opts, &sim);
        assert!(
            closed.is_err(),
            "{durability:?}: close returned Ok although its fdatasync failed; after a power \
             loss {kept} of the 3 acknowledged appends are left"
        );
    }
}

/// The same when the fdatasync that failed was a tick's, before the close: the appends
/// acknowledged since the last good one are not durable, the store is latched and skips the
/// closing fdatasync, and close must not answer `Ok` as if it had made them durable.
#[test]
fn close_after_a_failed_tick_fdatasync_is_an_error() {
    let opts = Options {
        durability: Durability::Interval(Duration::from_millis(20)),
        ..Options::test()
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let sim = Arc::new(SimFs::new());
    let (store, _) = Store::open_with_vfs(&dir, opts.clone(), sim.clone()).unwrap();
    sim.fail_sync(0);
    for n in 0..3 {
        deposit(&store, n);
    }
    // A tick finds the appends unsynced and its fdatasync fails.
    std::thread::sleep(Duration::from_millis(300));
    let closed = store.close();
    let kept = kept_after_power_loss(store, &dir, opts, &sim);
    assert!(
        closed.is_err(),
        "close returned Ok although the appends' fdatasync failed; after a power loss {kept} \
         of the 3 acknowledged appends are left"
    );
}
