//! Orchestrix, embedded, durable (default options: fdatasync every group commit), in a fresh
//! temporary directory. Writers use the async API ([`AsyncStore`]) as tokio tasks, which
//! measured faster than the blocking API on OS threads (see the README); stream reads call the
//! blocking API inline (a page-cache read is cheaper than the hop to the blocking pool).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{ensure, Context};
use async_trait::async_trait;
use orchestrix::{
    AsyncStore, Direction, EventData, ExpectedVersion, ReadFilter, Store, StoreError,
};

use crate::backend::{
    AppendError, Backend, BulkPart, Client, Expected, NewEvent, ReadEvent, Tally,
};
use crate::backends::Setup;

/// The Orchestrix backend.
pub struct Orchestrix {
    base: PathBuf,
    dir: Option<tempfile::TempDir>,
    store: Option<Arc<Store>>,
}

fn expected_of(e: Expected) -> ExpectedVersion {
    match e {
        Expected::NoStream => ExpectedVersion::NoStream,
        Expected::Exact(v) => ExpectedVersion::Exact(v),
    }
}

fn event_data(e: NewEvent) -> EventData {
    let nanos = e
        .time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    EventData::json(e.event_type, e.data)
        .with_id(e.id)
        .with_source("orchestrix-compare")
        .with_time_unix_nanos(nanos)
}

impl Orchestrix {
    /// Opens an empty store in a new directory under the setup's base directory.
    pub async fn open(setup: &Setup) -> anyhow::Result<Self> {
        let mut b = Orchestrix {
            base: setup.base_dir.clone(),
            dir: None,
            store: None,
        };
        b.reset().await?;
        Ok(b)
    }

    fn store(&self) -> anyhow::Result<&Arc<Store>> {
        self.store
            .as_ref()
            .context("the Orchestrix store is closed")
    }

    async fn shut(&mut self) -> anyhow::Result<()> {
        if let Some(store) = self.store.take() {
            AsyncStore::from(store)
                .close()
                .await
                .context("closing the Orchestrix store")?;
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || dir.close())
                .await?
                .with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for Orchestrix {
    fn name(&self) -> &'static str {
        "orchestrix"
    }

    fn acknowledges(&self) -> String {
        "fdatasync per group commit (Durability::Always, the default); async API, writers as tokio tasks; stream reads call the blocking API inline".into()
    }

    async fn reset(&mut self) -> anyhow::Result<()> {
        self.shut().await?;
        let base = self.base.clone();
        let (dir, store) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let dir = tempfile::Builder::new()
                .prefix("orchestrix-compare-ox-")
                .tempdir_in(&base)
                .with_context(|| format!("creating a directory in {}", base.display()))?;
            let store = Store::open(dir.path())
                .with_context(|| format!("opening a store in {}", dir.path().display()))?;
            Ok((dir, store))
        })
        .await??;
        self.dir = Some(dir);
        self.store = Some(Arc::new(store));
        Ok(())
    }

    async fn client(&self) -> anyhow::Result<Box<dyn Client>> {
        Ok(Box::new(OrchestrixClient {
            store: AsyncStore::from(self.store()?.clone()),
        }))
    }

    async fn bulk_append(&self, parts: Vec<BulkPart>) -> anyhow::Result<()> {
        // Every part as its own append, all at once, as in a store that grew append by append:
        // the writer commits them in a few groups (one write and one fdatasync each).
        let store = AsyncStore::from(self.store()?.clone());
        let mut set = tokio::task::JoinSet::new();
        for p in parts {
            let store = store.clone();
            set.spawn(async move {
                let expected = match p.first_version {
                    0 => ExpectedVersion::NoStream,
                    v => ExpectedVersion::Exact(v - 1),
                };
                let events = p.events.into_iter().map(event_data).collect();
                store
                    .append(&p.stream, expected, events)
                    .await
                    .with_context(|| format!("bulk append to {:?}", p.stream))
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        Ok(())
    }

    async fn read_all(&self, mut tally: Tally) -> anyhow::Result<Tally> {
        let store = self.store()?.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Tally> {
            let mut failed = None;
            store.scan_forwards(0, &ReadFilter::all(), &mut |e| match tally.see(
                e.position,
                e.stream(),
                e.version,
                e.data().len(),
            ) {
                Ok(()) => true,
                Err(err) => {
                    failed = Some(err);
                    false
                }
            })?;
            match failed {
                Some(e) => Err(e.into()),
                None => Ok(tally),
            }
        })
        .await?
    }

    async fn close(&mut self) -> anyhow::Result<()> {
        self.shut().await
    }
}

/// A handle on the shared store (all clients use the one writer and its group commit).
struct OrchestrixClient {
    store: AsyncStore,
}

#[async_trait]
impl Client for OrchestrixClient {
    async fn append(
        &mut self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<u64, AppendError> {
        let events = events.into_iter().map(event_data).collect();
        match self
            .store
            .append(stream, expected_of(expected), events)
            .await
        {
            Ok(r) => Ok(r.next_expected_version()),
            Err(StoreError::WrongExpectedVersion { .. }) => Err(AppendError::Conflict),
            Err(e) => Err(AppendError::Other(
                anyhow::Error::new(e).context(format!("append to {stream:?}")),
            )),
        }
    }

    async fn read_stream(&mut self, stream: &str, max: usize) -> anyhow::Result<Vec<ReadEvent>> {
        // An embedded store's stream read is a function call served from the page cache in
        // tens of microseconds: made inline, as an application linking the crate makes it,
        // rather than through the async API's hop to the blocking pool (which costs more than
        // the read itself on this 2-core machine).
        let events = self
            .store
            .store()
            .read_stream(stream, 0, Direction::Forwards, max)
            .with_context(|| format!("reading {stream:?}"))?;
        events
            .iter()
            .map(|e| {
                // The same check as the SQL backends make of each row's stream.
                ensure!(
                    e.stream() == stream,
                    "reading {stream:?} returned an event of {:?}",
                    e.stream()
                );
                Ok(ReadEvent {
                    position: e.position,
                    version: e.version,
                    data_len: e.data().len(),
                })
            })
            .collect()
    }

    async fn head(&mut self, stream: &str) -> anyhow::Result<Option<u64>> {
        // An in-memory lookup: no need for the blocking pool.
        Ok(self.store.store().stream_head(stream)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::testkit::{self, events};
    use std::collections::HashMap;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn append_read_and_conflict_roundtrip() {
        let base = tempfile::tempdir().unwrap();
        let setup = Setup {
            base_dir: base.path().to_path_buf(),
        };
        let mut b = Orchestrix::open(&setup).await.unwrap();
        let mut c = b.client().await.unwrap();
        testkit::append_conflict_and_read(c.as_mut()).await;

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

        drop(c);
        testkit::reset_and_close(&mut b, base.path()).await;
    }
}
