//! The file layer: every byte the log (and the snapshot store) writes goes through [`Vfs`].
//!
//! Production code uses [`StdFs`]. Tests swap in fault-injecting implementations
//! (see `crate::testing`) that fail the N-th operation or simulate a power loss, which is
//! how the fault matrix of RELIABILITY.md is exercised without real broken disks.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

/// One open file. Offsets are absolute; there is no cursor, so a file can be shared
/// between a writer and many readers.
#[allow(clippy::len_without_is_empty)]
pub trait VFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and the metadata needed to read it back) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;

    /// A read-only shared memory map of the file's first `len` bytes (`len` may reach past
    /// the end of the file: the caller promises to touch only bytes the file holds, since a
    /// page past its end raises SIGBUS). `Ok(None)` where this file cannot be mapped (the
    /// fault-injecting test files): callers then read with [`VFile::read_at`].
    fn map(&self, len: u64) -> io::Result<Option<Bytes>> {
        let _ = len;
        Ok(None)
    }

    /// Asks the kernel to start writing `len` bytes at `offset` to the disk now, without
    /// waiting and without making them durable: a hint that spreads the work of a later
    /// `sync_data`. Where the platform or the file has no such thing it does nothing.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `offset`, failing with `UnexpectedEof` otherwise.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// A directory-level file system: open, create, list, rename, remove, and sync a directory.
pub trait Vfs: Send + Sync {
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VFile>>;
    /// Creates a new file (failing if it exists) for reading and writing.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>>;
    /// Creates or truncates a file for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>>;
    /// Lists the file names (not paths) in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Whether a path exists.
    fn exists(&self, path: &Path) -> bool;
    /// Names the boot of the machine: files in the kernel's cache that were never synced are
    /// still there within one boot and gone after the next. Linux's
    /// `/proc/sys/kernel/random/boot_id`; empty where it cannot be read.
    fn boot_id(&self) -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

struct StdFile(File);

impl VFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
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
        Ok(self.0.metadata()?.len())
    }
    fn map(&self, len: u64) -> io::Result<Option<Bytes>> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if len == 0 {
            return Ok(None);
        }
        // SAFETY: the map is read-only and shared. What it shows can change under it only
        // where the file is written; the log's readers slice it only below the committed end,
        // whose bytes the writer never rewrites, and never past the file's end (the log
        // truncates a segment only during recovery, before it is mapped, and at a roll, to
        // its written end, which no reader passes).
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&self.0)? };
        Ok(Some(Bytes::from_owner(map)))
    }
    #[cfg(target_os = "linux")]
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        // SAFETY: the descriptor belongs to `self.0`, open for as long as `self` is; the call
        // passes no memory, only numbers, and SYNC_FILE_RANGE_WRITE neither waits nor
        // changes what the file holds.
        let r = unsafe {
            libc::sync_file_range(self.0.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Vfs for StdFs {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Joins a directory and a file name; a small helper so call sites read as intent.
pub fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Creates `dir` and its missing ancestors through `vfs`, then fsyncs the parent of each
/// directory it created, so that their entries survive a power loss (a new directory is an
/// entry of its parent, durable only once the parent is synced). Returns whether `dir` was
/// created; an existing directory is left as it is.
///
/// ```
/// use orchestrix_log::fs::{create_dir_durably, StdFs, Vfs};
/// let tmp = tempfile::tempdir()?;
/// let dir = tmp.path().join("a/b/log");
/// assert!(create_dir_durably(&StdFs, &dir)?);
/// assert!(StdFs.exists(&dir));
/// assert!(!create_dir_durably(&StdFs, &dir)?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn create_dir_durably(vfs: &dyn Vfs, dir: &Path) -> io::Result<bool> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !vfs.exists(a))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    vfs.create_dir_all(dir)?;
    // Outermost first: each parent's entry is durable before its child's is synced in it.
    for created in missing.iter().rev() {
        let parent = created
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        vfs.sync_dir(parent)?;
    }
    Ok(true)
}
