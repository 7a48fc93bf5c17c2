//! SierraDB (the embeddable core crate `sierradb` 0.3.1), in-process, in a fresh temporary
//! directory. Built only with the cargo feature `sierradb`.
//!
//! The store is opened with 4 buckets (`total_buckets(4)`, buckets `0..4`, one writer thread
//! each), 64 MiB segments (the default of 256 MiB is preallocated per bucket), and
//! `min_sync_bytes(0)`: each bucket's writer thread then calls fdatasync after every
//! transaction, and an append is acknowledged only once that sync covers it. (With the
//! defaults it syncs on a 5 ms interval or 4 KiB / 50 events pending and still waits for the
//! sync before acknowledging; a lone append then costs about 30 ms.) Compression and the
//! 256 MiB block cache keep their defaults. `Database` is a cheap `Clone` handle, so every
//! client holds one and calls the async API from its tokio task.
//!
//! A stream lives in one of 1,024 partitions: its partition key is
//! `Uuid::new_v5(NAMESPACE_PARTITION_KEY, name)` and its partition the key's hash modulo 1,024
//! (the convention of SierraDB's server). Event ids must carry that hash, so SierraDB gets ids
//! made by `uuid_v7_with_partition_hash` in place of the harness's UUID v7. An append is one
//! transaction: its first event carries the expected version, the others follow it; a wrong
//! version is `WriteError::WrongExpectedVersion`.
//!
//! SierraDB has no global order. Reading everything means reading the 1,024 partitions one
//! after the other, each in its own order (`partition_sequence`). The harness's positions are
//! `partition << 48 | partition_sequence`, which ascend through such a scan; workload 5's row
//! says that it is a scan of partitions, not a read in global order.

use std::path::PathBuf;

use anyhow::{bail, Context};
use async_trait::async_trait;
use sierradb::database::{
    Database, DatabaseBuilder, ExpectedVersion, NewEvent as SierraEvent, Transaction,
};
use sierradb::error::WriteError;
use sierradb::id::{uuid_to_partition_hash, uuid_v7_with_partition_hash, NAMESPACE_PARTITION_KEY};
use sierradb::{IterDirection, StreamId, STREAM_ID_SIZE};
use smallvec::SmallVec;
use uuid::Uuid;

use crate::backend::{
    AppendError, Backend, BulkPart, Client, Expected, NewEvent, ReadEvent, Tally,
};
use crate::backends::Setup;

/// Partitions streams are hashed into (SierraDB's convention).
pub const PARTITIONS: u16 = 1024;
/// Buckets (each with its own segment files and writer thread).
pub const BUCKETS: u16 = 4;
/// Size of a segment file (preallocated per bucket).
pub const SEGMENT_BYTES: usize = 64 << 20;
/// Events asked for per batch when iterating a stream or a partition.
const READ_BATCH: usize = 1000;

/// What the caveat of workload 5 says on its row.
pub const READ_ALL_CAVEAT: &str =
    "read all = scan of 1024 partitions, per-partition order; no global order";

/// A stream's name, partition key and partition.
#[derive(Debug, Clone)]
struct StreamRef {
    id: StreamId,
    key: Uuid,
    partition: u16,
}

fn stream_ref(name: &str) -> anyhow::Result<StreamRef> {
    if name.len() > STREAM_ID_SIZE {
        bail!("stream id {name:?} is longer than SierraDB's {STREAM_ID_SIZE} bytes");
    }
    let key = Uuid::new_v5(&NAMESPACE_PARTITION_KEY, name.as_bytes());
    Ok(StreamRef {
        id: StreamId::new(name).map_err(|e| anyhow::anyhow!("stream id {name:?}: {e}"))?,
        key,
        partition: uuid_to_partition_hash(key) % PARTITIONS,
    })
}

/// The harness's position of an event: partitions in order, each in its own order.
fn position(partition: u16, sequence: u64) -> u64 {
    (u64::from(partition) << 48) | sequence
}

fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One transaction appending `events` to `s`, whose next version is `next` (0: empty).
fn transaction(s: &StreamRef, next: u64, events: Vec<NewEvent>) -> anyhow::Result<Transaction> {
    let hash = uuid_to_partition_hash(s.key);
    let events: SmallVec<[SierraEvent; 4]> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| SierraEvent {
            event_id: uuid_v7_with_partition_hash(hash),
            stream_id: s.id.clone(),
            stream_version: if i == 0 {
                ExpectedVersion::from_next_version(next)
            } else {
                ExpectedVersion::Any
            },
            event_name: e.event_type.to_string(),
            timestamp: nanos(e.time),
            metadata: Vec::new(),
            payload: e.data,
        })
        .collect();
    Transaction::new(s.key, s.partition, events)
        .map_err(|e| anyhow::anyhow!("a transaction for {}: {e}", s.id))
}

/// Appends one transaction; returns the stream's new last version.
async fn append(
    db: &Database,
    stream: &str,
    expected: Expected,
    events: Vec<NewEvent>,
) -> Result<u64, AppendError> {
    let s = stream_ref(stream)?;
    let tx = transaction(&s, expected.first_version(), events)?;
    match db.append_events(tx).await {
        Ok(r) => r.stream_versions.get(&s.id).copied().ok_or_else(|| {
            AppendError::Other(anyhow::anyhow!(
                "append to {stream:?}: no version for the stream in the result"
            ))
        }),
        Err(WriteError::WrongExpectedVersion { .. }) => Err(AppendError::Conflict),
        Err(e) => Err(AppendError::Other(
            anyhow::Error::new(e).context(format!("append to {stream:?}")),
        )),
    }
}

/// The SierraDB backend.
pub struct SierraDb {
    base: PathBuf,
    dir: Option<tempfile::TempDir>,
    db: Option<Database>,
}

impl SierraDb {
    /// Opens an empty store in a new directory under the setup's base directory.
    pub async fn open(setup: &Setup) -> anyhow::Result<Self> {
        let mut b = SierraDb {
            base: setup.base_dir.clone(),
            dir: None,
            db: None,
        };
        b.reset().await?;
        Ok(b)
    }

    fn db(&self) -> anyhow::Result<&Database> {
        self.db.as_ref().context("the SierraDB store is closed")
    }

    async fn shut(&mut self) -> anyhow::Result<()> {
        if let Some(db) = self.db.take() {
            // Syncs and stops the writer threads.
            db.shutdown().await;
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                truncate_files(dir.path())?;
                Ok(dir.close()?)
            })
            .await?
            .with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }
}

/// Empties every file under `dir`. SierraDB 0.3.1 never stops the reader threads of a closed
/// database (its `ReaderThreadPool` and the block caches it owns hold each other), and each of
/// them keeps its segment files open. Removed but still open, they would hold their disk space
/// (four preallocated segments per store) until the process ends; emptied first, they do not.
fn truncate_files(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            truncate_files(&entry.path())?;
        } else if kind.is_file() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(entry.path())?
                .set_len(0)?;
        }
    }
    Ok(())
}

#[async_trait]
impl Backend for SierraDb {
    fn name(&self) -> &'static str {
        "sierradb"
    }

    fn acknowledges(&self) -> String {
        format!(
            "fdatasync per transaction before the ack (min_sync_bytes=0; {BUCKETS} buckets, one \
             writer thread each, no coalescing); embedded sierradb 0.3.1, async API, writers as \
             tokio tasks; {} MiB segments, compression and 256 MiB cache as default",
            SEGMENT_BYTES >> 20
        )
    }

    fn caveat(&self, workload: &str) -> Option<String> {
        (workload == "5").then(|| READ_ALL_CAVEAT.to_string())
    }

    async fn reset(&mut self) -> anyhow::Result<()> {
        self.shut().await?;
        let base = self.base.clone();
        let (dir, db) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let dir = tempfile::Builder::new()
                .prefix("orchestrix-compare-sierra-")
                .tempdir_in(&base)
                .with_context(|| format!("creating a directory in {}", base.display()))?;
            let db = DatabaseBuilder::new()
                .total_buckets(BUCKETS)
                .bucket_ids_from_range(0..BUCKETS)
                .segment_size_bytes(SEGMENT_BYTES)
                .min_sync_bytes(0)
                .open(dir.path())
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("opening SierraDB in {}", dir.path().display()))?;
            Ok((dir, db))
        })
        .await??;
        self.dir = Some(dir);
        self.db = Some(db);
        Ok(())
    }

    async fn client(&self) -> anyhow::Result<Box<dyn Client>> {
        Ok(Box::new(SierraClient {
            db: self.db()?.clone(),
        }))
    }

    async fn bulk_append(&self, parts: Vec<BulkPart>) -> anyhow::Result<()> {
        // Every part as its own transaction, all at once: each bucket's writer thread takes
        // them one by one (each with its fdatasync), the four buckets in parallel.
        let mut set = tokio::task::JoinSet::new();
        for p in parts {
            let db = self.db()?.clone();
            set.spawn(async move {
                let expected = match p.first_version {
                    0 => Expected::NoStream,
                    v => Expected::Exact(v - 1),
                };
                append(&db, &p.stream, expected, p.events)
                    .await
                    .map_err(|e| anyhow::anyhow!("bulk append to {:?}: {e}", p.stream))
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        Ok(())
    }

    async fn read_all(&self, mut tally: Tally) -> anyhow::Result<Tally> {
        let db = self.db()?;
        for p in 0..PARTITIONS {
            let mut iter = db
                .read_partition(p, 0, IterDirection::Forward)
                .await
                .with_context(|| format!("reading partition {p}"))?;
            while let Some(batch) = iter
                .next_batch(READ_BATCH)
                .await
                .with_context(|| format!("reading partition {p}"))?
            {
                for commit in batch {
                    for e in commit {
                        if e.partition_id != p {
                            bail!(
                                "a read of partition {p} returned an event of partition {}",
                                e.partition_id
                            );
                        }
                        tally.see(
                            position(p, e.partition_sequence),
                            &e.stream_id,
                            e.stream_version,
                            e.payload.len(),
                        )?;
                    }
                }
            }
        }
        Ok(tally)
    }

    async fn close(&mut self) -> anyhow::Result<()> {
        self.shut().await
    }
}

/// A handle on the shared database.
struct SierraClient {
    db: Database,
}

#[async_trait]
impl Client for SierraClient {
    async fn append(
        &mut self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<u64, AppendError> {
        append(&self.db, stream, expected, events).await
    }

    async fn read_stream(&mut self, stream: &str, max: usize) -> anyhow::Result<Vec<ReadEvent>> {
        let s = stream_ref(stream)?;
        let mut iter = self
            .db
            .read_stream(s.partition, s.id.clone(), 0, IterDirection::Forward)
            .await
            .with_context(|| format!("reading {stream:?}"))?;
        let mut out = Vec::new();
        'read: while out.len() < max {
            let Some(batch) = iter
                .next_batch((max - out.len()).min(READ_BATCH))
                .await
                .with_context(|| format!("reading {stream:?}"))?
            else {
                break;
            };
            for commit in batch {
                for e in commit {
                    if e.stream_id != s.id {
                        bail!("a read of {stream:?} returned an event of {}", e.stream_id);
                    }
                    out.push(ReadEvent {
                        position: position(e.partition_id, e.partition_sequence),
                        version: e.stream_version,
                        data_len: e.payload.len(),
                    });
                    if out.len() == max {
                        break 'read;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn head(&mut self, stream: &str) -> anyhow::Result<Option<u64>> {
        let s = stream_ref(stream)?;
        Ok(self
            .db
            .get_stream_version(s.partition, &s.id)
            .await
            .with_context(|| format!("reading the head of {stream:?}"))?
            .map(|v| v.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::testkit::{self, events};
    use std::collections::HashMap;

    #[test]
    fn positions_ascend_through_a_scan_of_partitions() {
        assert!(position(0, u64::from(u32::MAX)) < position(1, 0));
        assert!(position(1, 5) < position(1, 6));
        assert!(stream_ref(&"x".repeat(65)).is_err());
        let a = stream_ref("read-7").unwrap();
        assert_eq!(a.partition, stream_ref("read-7").unwrap().partition);
        assert!(a.partition < PARTITIONS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn append_read_and_conflict_roundtrip() {
        let base = tempfile::tempdir().unwrap();
        let setup = Setup {
            base_dir: base.path().to_path_buf(),
        };
        let mut b = SierraDb::open(&setup).await.unwrap();
        let mut c = b.client().await.unwrap();
        testkit::append_conflict_and_read(c.as_mut()).await;
        assert_eq!(c.read_stream("s", 2).await.unwrap().len(), 2);

        b.bulk_append(vec![
            BulkPart {
                stream: "t".into(),
                first_version: 0,
                events: events(5),
            },
            BulkPart {
                stream: "s".into(),
                first_version: 4,
                events: events(2),
            },
        ])
        .await
        .unwrap();
        let tally = b.read_all(Tally::per_stream()).await.unwrap();
        let want: HashMap<String, u64> = [("s".to_string(), 5), ("t".to_string(), 4)].into();
        tally.check_against(&want).unwrap();
        assert_eq!(b.caveat("5").as_deref(), Some(READ_ALL_CAVEAT));
        assert_eq!(b.caveat("1"), None);

        drop(c);
        testkit::reset_and_close(&mut b, base.path()).await;
    }
}
