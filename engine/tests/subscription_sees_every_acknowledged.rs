//! A write fails while an earlier group is being fdatasynced by the syncer. That group was
//! acknowledged once its fdatasync succeeded, while a live subscription that had seen the
//! store latched had already ended with `Poisoned` without delivering it. Now nothing is
//! published (or acknowledged) once the store is latched: the latch and the publication
//! share a lock. Found by a review; fails without the fix.
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use orchestrix::{EventData, ExpectedVersion, Options, ReadFilter, Store, StoreError};
use orchestrix_log::fs::{StdFs, VFile, Vfs};

struct Ctl {
    arm_write: AtomicBool,
    arm_sync: AtomicBool,
    fail_writes: AtomicBool,
    w_reached: Barrier,
    w_release: Barrier,
    s_reached: Barrier,
    s_release: Barrier,
}
fn on(name: &str) -> bool {
    std::thread::current().name() == Some(name)
}
struct GFile(Arc<dyn VFile>, Arc<Ctl>);
impl VFile for GFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if on("orchestrix-writer") {
            if self.1.arm_write.swap(false, Ordering::AcqRel) {
                self.1.w_reached.wait();
                self.1.w_release.wait();
            } else if self.1.fail_writes.load(Ordering::Acquire) {
                return Err(io::Error::from_raw_os_error(5));
            }
        }
        self.0.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        if on("orchestrix-syncer") && self.1.arm_sync.swap(false, Ordering::AcqRel) {
            self.1.s_reached.wait();
            self.1.s_release.wait();
        }
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
}
struct GFs(Arc<Ctl>);
impl Vfs for GFs {
    fn open(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(GFile(StdFs.open(p)?, self.0.clone())))
    }
    fn create_new(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(GFile(StdFs.create_new(p)?, self.0.clone())))
    }
    fn create(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(GFile(StdFs.create(p)?, self.0.clone())))
    }
    fn list(&self, d: &Path) -> io::Result<Vec<String>> {
        StdFs.list(d)
    }
    fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
        StdFs.rename(a, b)
    }
    fn remove(&self, p: &Path) -> io::Result<()> {
        StdFs.remove(p)
    }
    fn sync_dir(&self, d: &Path) -> io::Result<()> {
        StdFs.sync_dir(d)
    }
    fn create_dir_all(&self, d: &Path) -> io::Result<()> {
        StdFs.create_dir_all(d)
    }
    fn exists(&self, p: &Path) -> bool {
        StdFs.exists(p)
    }
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
    let (store, _) =
        Store::open_with_vfs(tmp.path(), Options::test(), Arc::new(GFs(ctl.clone()))).unwrap();
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
