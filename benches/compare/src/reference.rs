//! The machine's own limits, measured in the data directory in the same run as the stores:
//! the latency of a 4 KiB append + fdatasync (what one durable commit costs at least) and the
//! sequential write bandwidth of the disk.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::stats::{new_histogram, record, Latency};

/// The reference figures.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    /// 4 KiB append + fdatasync latency.
    pub fdatasync_4k: Latency,
    /// Bytes written sequentially (1 MiB blocks, then one fdatasync).
    pub seq_write_bytes: u64,
    /// Their bandwidth in MB/s (10^6 bytes), including the final fdatasync.
    pub seq_write_mb_per_sec: f64,
}

/// Measures both figures with scratch files in `dir` (removed afterwards).
pub fn measure(dir: &Path, fsync_samples: u32, seq_write_mib: u32) -> anyhow::Result<Reference> {
    let fdatasync_4k = fdatasync_latency(dir, fsync_samples)?;
    let (seq_write_bytes, seq_write_mb_per_sec) = sequential_write(dir, seq_write_mib)?;
    Ok(Reference {
        fdatasync_4k,
        seq_write_bytes,
        seq_write_mb_per_sec,
    })
}

/// Removes the file when dropped.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scratch(dir: &Path, what: &str) -> Scratch {
    Scratch(dir.join(format!(
        ".orchestrix-compare-{what}-{}.tmp",
        std::process::id()
    )))
}

/// On a thread scheduled as Orchestrix's syncer is, so that on a loaded machine the figure
/// is the disk's and not the wait for a CPU after it (which the syncer is spared).
fn fdatasync_latency(dir: &Path, samples: u32) -> anyhow::Result<Latency> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // A hint: without it the figure is only less comparable on a loaded machine.
            let _ = orchestrix::sched::request_syncer_slice();
            fdatasync_latency_here(dir, samples)
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the fdatasync reference thread panicked")))
    })
}

fn fdatasync_latency_here(dir: &Path, samples: u32) -> anyhow::Result<Latency> {
    let path = scratch(dir, "fsync");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path.0)
        .with_context(|| format!("creating {}", path.0.display()))?;
    let block = [0xA5u8; 4096];
    let mut h = new_histogram()?;
    for _ in 0..samples {
        let t = Instant::now();
        f.write_all(&block)
            .and_then(|()| f.sync_data())
            .with_context(|| format!("append + fdatasync on {}", path.0.display()))?;
        record(&mut h, t.elapsed());
    }
    Latency::of(&h).context("no fdatasync samples taken")
}

fn sequential_write(dir: &Path, mib: u32) -> anyhow::Result<(u64, f64)> {
    let path = scratch(dir, "seqwrite");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path.0)
        .with_context(|| format!("creating {}", path.0.display()))?;
    let block = vec![0x5Au8; 1 << 20];
    let t = Instant::now();
    for _ in 0..mib {
        f.write_all(&block)
            .with_context(|| format!("writing {}", path.0.display()))?;
    }
    f.sync_data()
        .with_context(|| format!("fdatasync of {}", path.0.display()))?;
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    let bytes = u64::from(mib) << 20;
    Ok((bytes, bytes as f64 / secs / 1e6))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reference_runs_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let r = super::measure(dir.path(), 3, 2).unwrap();
        assert_eq!(r.fdatasync_4k.count, 3);
        assert_eq!(r.seq_write_bytes, 2 << 20);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
