//! The async API: the same store, for tokio applications. Appends wait on the writer without
//! blocking a runtime thread; reads run on the blocking pool.

use std::sync::Arc;

use crate::error::{Result, StoreError};
use crate::event::{
    AppendResult, Direction, EventData, ExpectedVersion, ReadFilter, RecordedEvent,
};
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::subscription::SubscriptionStream;
use crate::writer::{Reply, Request, Waiter};

/// An async handle to a [`Store`]; cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use orchestrix::{AsyncStore, EventData, ExpectedVersion, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = AsyncStore::new(Store::open(dir.path()).unwrap());
/// let r = store
///     .append("s", ExpectedVersion::NoStream, vec![EventData::json("E", b"{}".to_vec())])
///     .await
///     .unwrap();
/// assert_eq!(r.first_position, 0);
/// # }
/// ```
#[derive(Clone)]
pub struct AsyncStore {
    store: Arc<Store>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::InvalidInput(format!("blocking task failed: {e}")))?
}

impl From<Arc<Store>> for AsyncStore {
    fn from(store: Arc<Store>) -> Self {
        AsyncStore { store }
    }
}

impl AsyncStore {
    /// Wraps a store.
    pub fn new(store: Store) -> Self {
        AsyncStore {
            store: Arc::new(store),
        }
    }

    /// The underlying store (for the blocking API).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Makes every append acknowledged so far durable (see [`Store::sync`]), waiting without
    /// blocking the runtime.
    pub async fn sync(&self) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store
            .sender()?
            .send(Request::Sync(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends to one stream.
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        self.append_multi(vec![(stream.to_string(), expected, events)])
            .await
    }

    /// Appends to several streams atomically.
    pub async fn append_multi(
        &self,
        parts: Vec<(String, ExpectedVersion, Vec<EventData>)>,
    ) -> Result<AppendResult> {
        let (parts, (reply, rx)) = self.store.prepare_append(parts)?;
        self.store
            .sender()?
            .send(Request::Append {
                parts,
                reply: Reply {
                    tx: reply,
                    waiter: Waiter::Task,
                },
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?.result
    }

    /// Reads a stream.
    pub async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let s = self.store.clone();
        let stream = stream.to_string();
        blocking(move || s.read_stream(&stream, from_version, direction, max_count)).await
    }

    /// Reads in global order.
    pub async fn read_all(
        &self,
        from_position: u64,
        direction: Direction,
        max_count: usize,
        filter: ReadFilter,
    ) -> Result<Vec<RecordedEvent>> {
        let s = self.store.clone();
        blocking(move || s.read_all(from_position, direction, max_count, &filter)).await
    }

    /// A `Stream` of every event passing `filter` from `from_position` on, catch-up then live.
    pub fn subscribe_all(
        &self,
        from_position: u64,
        filter: ReadFilter,
    ) -> Result<SubscriptionStream> {
        SubscriptionStream::spawn(self.store.subscribe_all(from_position, filter))
    }

    /// A `Stream` of one stream's events (passing `filter`) from `from_version` on.
    pub fn subscribe_stream(
        &self,
        stream: &str,
        from_version: u64,
        filter: ReadFilter,
    ) -> Result<SubscriptionStream> {
        SubscriptionStream::spawn(self.store.subscribe_stream(stream, from_version, filter)?)
    }

    /// The last version of a stream.
    pub async fn stream_head(&self, stream: &str) -> Result<Option<u64>> {
        let s = self.store.clone();
        let stream = stream.to_string();
        blocking(move || s.stream_head(&stream)).await
    }

    /// Saves a snapshot.
    pub async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let s = self.store.clone();
        blocking(move || s.save_snapshot(&snapshot)).await
    }

    /// Flushes, syncs and stops the store's threads on the blocking pool. Call it before the
    /// last handle is dropped inside a runtime: dropping an open store joins its threads,
    /// which would block that runtime thread while the writer drains.
    pub async fn close(&self) -> Result<()> {
        let s = self.store.clone();
        blocking(move || s.close()).await
    }

    /// Facts about the store (see [`Store::info`]), gathered on the blocking pool.
    pub async fn info(&self) -> Result<crate::store::StoreInfo> {
        let s = self.store.clone();
        blocking(move || s.info()).await
    }

    /// Checks every frame and the index against the log (see [`Store::verify`]) on the
    /// blocking pool; returns the number of events verified.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use orchestrix::{AsyncStore, EventData, ExpectedVersion, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = AsyncStore::new(Store::open(dir.path()).unwrap());
    /// let e = vec![EventData::json("E", b"{}".to_vec())];
    /// store.append("s", ExpectedVersion::NoStream, e).await.unwrap();
    /// assert_eq!(store.verify().await.unwrap(), 1);
    /// let info = store.info().await.unwrap();
    /// assert_eq!((info.events, info.streams), (1, 1));
    /// # }
    /// ```
    pub async fn verify(&self) -> Result<u64> {
        let s = self.store.clone();
        blocking(move || s.verify()).await
    }

    /// Loads the latest snapshot of a stream.
    pub async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        let s = self.store.clone();
        let stream = stream.to_string();
        blocking(move || s.load_snapshot(&stream)).await
    }
}
