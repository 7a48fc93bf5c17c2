//! A save of an older snapshot racing a newer one: the older must not replace the newer. The
//! save judged the stored snapshot against the stream's head as of its own start, which a
//! newer snapshot saved meanwhile was past, so the older one replaced it (found by a review;
//! fails without the fix).
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use orchestrix::snapshot::Snapshot;
use orchestrix::{EventData, ExpectedVersion, Options, Store};
use orchestrix_log::fs::{StdFs, VFile, Vfs};

struct Gate {
    armed: AtomicBool,
    reached: Barrier,
    release: Barrier,
}
fn gated() -> bool {
    std::thread::current().name() == Some("slow-saver")
}
struct GFile(Arc<dyn VFile>, Arc<Gate>);
impl VFile for GFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if gated() && self.1.armed.swap(false, Ordering::AcqRel) {
            self.1.reached.wait();
            self.1.release.wait();
        }
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
}
struct GFs(Arc<Gate>);
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
    let (store, _) =
        Store::open_with_vfs(tmp.path(), Options::test(), Arc::new(GFs(gate.clone()))).unwrap();
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
