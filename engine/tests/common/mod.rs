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

/// The real file system (or another file layer, [`HookFs::over`]), with `hook` called before
/// each read, write and fdatasync of a file: it may hold the thread up (to order a race) or
/// fail the operation. Its files are not mapped, so that every read of a segment goes through
/// the hook.
pub struct HookFs(Hook, Arc<dyn Vfs>);

impl HookFs {
    pub fn new(hook: impl Fn(FileOp) -> io::Result<()> + Send + Sync + 'static) -> Self {
        Self::over(Arc::new(StdFs), hook)
    }

    /// The hook over `inner` (the power-loss simulator, say).
    pub fn over(
        inner: Arc<dyn Vfs>,
        hook: impl Fn(FileOp) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        HookFs(Arc::new(hook), inner)
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
        Ok(self.wrap(self.1.open(p)?))
    }
    fn create_new(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(self.1.create_new(p)?))
    }
    fn create(&self, p: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(self.wrap(self.1.create(p)?))
    }
    fn list(&self, d: &Path) -> io::Result<Vec<String>> {
        self.1.list(d)
    }
    fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.1.rename(a, b)
    }
    fn remove(&self, p: &Path) -> io::Result<()> {
        self.1.remove(p)
    }
    fn sync_dir(&self, d: &Path) -> io::Result<()> {
        self.1.sync_dir(d)
    }
    fn create_dir_all(&self, d: &Path) -> io::Result<()> {
        self.1.create_dir_all(d)
    }
    fn exists(&self, p: &Path) -> bool {
        self.1.exists(p)
    }
}

/// Runs a system command (`mount`, `losetup`, ...), returning its standard output, or what
/// it said on failure.
pub fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A mounted tmpfs, unmounted (lazily, so a busy mount never blocks) when dropped.
pub struct TmpfsMount {
    pub dir: std::path::PathBuf,
}

impl TmpfsMount {
    pub fn mount(dir: &Path, size_kib: u64) -> Result<TmpfsMount, String> {
        let size = format!("size={size_kib}k");
        run(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                size.as_ref(),
                "tmpfs".as_ref(),
                dir.as_os_str(),
            ],
        )?;
        Ok(TmpfsMount {
            dir: dir.to_path_buf(),
        })
    }

    /// Changes the size (`"32m"`, say): frees space on a full tmpfs.
    pub fn remount(&self, size: &str) {
        let opts = format!("remount,size={size}");
        if let Err(e) = run(
            "mount",
            &["-o".as_ref(), opts.as_ref(), self.dir.as_os_str()],
        ) {
            panic!("{e}");
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if let Err(e) = run("umount", &["-l".as_ref(), self.dir.as_os_str()]) {
            eprintln!("warning: {e}");
        }
    }
}

/// Whether this process may mount a tmpfs; `Err` says why not.
pub fn can_mount() -> Result<(), String> {
    let probe = tempfile::tempdir().map_err(|e| e.to_string())?;
    TmpfsMount::mount(probe.path(), 64).map(drop)
}

/// For a test that needs root (mounts): `true` to go on; otherwise it says why it is
/// skipped, or panics when `CI=true` (CI must run it).
pub fn may_mount(test: &str, needs: &str) -> bool {
    let Err(why) = can_mount() else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot mount a tmpfs ({why}); CI must run this test as root with {needs}");
    }
    eprintln!("SKIPPED {test}: cannot mount a tmpfs ({why}); run as root");
    false
}

/// Whether an error, or any error in its source chain, is the OS error `code` (`ENOSPC` 28,
/// `EIO` 5, ...).
pub fn has_os_error(e: &orchestrix::StoreError, code: i32) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.raw_os_error() == Some(code) {
                return true;
            }
        }
        cur = err.source();
    }
    format!("{e:?}").contains(&format!("code: {code},"))
}

/// The full error text, with its source chain.
pub fn chain(e: &orchestrix::StoreError) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let t = err.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = err.source();
    }
    s
}

/// A tiny deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An acknowledged event, as a test that fails the disk remembers it.
#[derive(Debug, Clone)]
pub struct Acked {
    pub stream: String,
    pub version: u64,
    pub position: u64,
    pub id: uuid::Uuid,
    pub data: Vec<u8>,
}

/// Reads a reopened store whole and checks it against what was acknowledged (`acked`, in
/// position order): gapless positions, every acknowledged event at its position with its
/// stream, version, id and data, and anything after them from an append that failed
/// (`attempted`). Returns every event read.
pub fn check_acknowledged(
    label: &str,
    store: &Store,
    acked: &[Acked],
    attempted: impl Fn(&uuid::Uuid) -> bool,
) -> Vec<orchestrix::RecordedEvent> {
    use orchestrix::{Direction, ReadFilter};
    let all = store
        .read_all(0, Direction::Forwards, usize::MAX, &ReadFilter::all())
        .expect("read_all after reopen");
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64, "{label}: position gap");
    }
    assert!(
        all.len() >= acked.len(),
        "{label}: {} events after reopen, {} were acknowledged",
        all.len(),
        acked.len()
    );
    for a in acked {
        let e = &all[a.position as usize];
        assert_eq!(
            (e.stream(), e.version, e.id, e.data()),
            (a.stream.as_str(), a.version, a.id, &a.data[..]),
            "{label}: acknowledged event at position {} differs",
            a.position
        );
    }
    // Anything beyond the acknowledged prefix must come from a failed append (never invented).
    for e in &all[acked.len()..] {
        assert!(
            attempted(&e.id),
            "{label}: event {} at {} was never appended",
            e.id,
            e.position
        );
    }
    all
}

impl Acked {
    /// The events `sent` (id and data) of an append to `stream` acknowledged at
    /// `first_version` and `first_position`.
    pub fn of(
        stream: &str,
        first_version: u64,
        first_position: u64,
        sent: Vec<(uuid::Uuid, Vec<u8>)>,
    ) -> impl Iterator<Item = Acked> + '_ {
        sent.into_iter()
            .enumerate()
            .map(move |(i, (id, data))| Acked {
                stream: stream.to_string(),
                version: first_version + i as u64,
                position: first_position + i as u64,
                id,
                data,
            })
    }
}

/// An event of 200-2000 bytes of one letter, tagged with its stream and version.
pub fn filled_event(rng: &mut Rng, stream: &str, version: u64) -> EventData {
    let size = 200 + rng.below(1801) as usize;
    let fill = b'a' + rng.below(26) as u8;
    let mut data = vec![fill; size];
    let tag = format!("{stream}@{version};");
    data[..tag.len()].copy_from_slice(tag.as_bytes());
    EventData::new("Filled", data)
}

/// The segment files of the store in `dir`, in log order.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(dir.join("log"))
        .expect("the log directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    segments
}
