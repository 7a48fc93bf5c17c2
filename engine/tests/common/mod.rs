//! Helpers shared by the engine's integration tests (each test file is its own crate and
//! takes this module in with `mod common;`, using what it needs of it).
#![allow(dead_code)]

use std::io;
use std::path::Path;
use std::sync::Arc;

use orchestrix::{EventData, ExpectedVersion, Store};
use orchestrix_log::fs::{StdFs, VFile, Vfs};

/// Appends one `Deposited` event of `amount` to the stream `acct`.
pub fn deposit(store: &Store, amount: i64) {
    store
        .append(
            "acct",
            ExpectedVersion::Any,
            vec![EventData::json(
                "Deposited",
                format!("{{\"amount\":{amount}}}").into_bytes(),
            )],
        )
        .unwrap();
}

/// A file operation about to run, as a [`HookFs`] hook sees it (on the calling thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    Read,
    Write,
    Sync,
}

type Hook = Arc<dyn Fn(FileOp) -> io::Result<()> + Send + Sync>;

/// The real file system, with `hook` called before each read, write and fdatasync of a
/// file: it may hold the thread up (to order a race) or fail the operation. Its files are not
/// mapped, so that every read of a segment goes through the hook.
pub struct HookFs(Hook);

impl HookFs {
    pub fn new(hook: impl Fn(FileOp) -> io::Result<()> + Send + Sync + 'static) -> Self {
        HookFs(Arc::new(hook))
    }

    fn wrap(&self, f: Arc<dyn VFile>) -> Arc<dyn VFile> {
        Arc::new(HookFile(f, self.0.clone()))
    }
}

/// Whether the calling thread has this name (the store names its threads).
pub fn on_thread(name: &str) -> bool {
    std::thread::current().name() == Some(name)
}

struct HookFile(Arc<dyn VFile>, Hook);

impl VFile for HookFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (self.1)(FileOp::Read)?;
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (self.1)(FileOp::Write)?;
        self.0.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        (self.1)(FileOp::Sync)?;
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
}

impl Vfs for HookFs {
    fn open(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(StdFs.open(p)?))
    }
    fn create_new(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(StdFs.create_new(p)?))
    }
    fn create(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(StdFs.create(p)?))
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
