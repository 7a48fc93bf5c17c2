//! The workloads: what each one runs, for how long, and how its result is checked.
//!
//! Timed runs are closed loops bounded by time: every client starts when all are connected
//! and issues its next operation until the run's time is up; the figures count what was
//! acknowledged (or read) between the first operation's start and the last one's end. After
//! every write run the whole store is read back in global order and compared, stream by
//! stream, with what the writers had acknowledged; every stream read is checked for its
//! length and order. A mismatch fails the run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::backend::{AppendError, Backend, BulkPart, Client, Expected, NewEvent, Tally};
use crate::stats::{new_histogram, record, Latency, RunResult};

/// What a workload does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Writers each appending to a stream of their own with the expected version.
    Writers {
        /// Concurrent writers.
        writers: usize,
        /// Events per append.
        batch: usize,
    },
    /// Writers sharing few streams: each keeps its last known version, appends with it, and
    /// on a conflict re-reads the head and retries.
    Contention {
        /// Concurrent writers.
        writers: usize,
        /// Streams they share (writer `w` uses stream `w % streams`).
        streams: usize,
    },
    /// Readers each reading whole random streams of the read store.
    ReadStreams {
        /// Concurrent readers.
        readers: usize,
    },
    /// One reader reading the whole read store in global order.
    ReadAll,
}

impl Kind {
    /// Whether the workload writes (and so starts from an empty store).
    pub fn writes(self) -> bool {
        matches!(self, Kind::Writers { .. } | Kind::Contention { .. })
    }
}

/// A workload of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Its id on the command line and in the JSON (`1`, `2-8`, `2-64`, ...).
    pub id: &'static str,
    /// Its number in the list.
    pub number: u8,
    /// What it is, in a few words.
    pub title: &'static str,
    /// What it does.
    pub kind: Kind,
}

/// Every workload, in the order of the list.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        id: "1",
        number: 1,
        title: "1 writer, 1 event/append, exact version",
        kind: Kind::Writers {
            writers: 1,
            batch: 1,
        },
    },
    Workload {
        id: "2-8",
        number: 2,
        title: "8 writers, 1 event/append, own streams",
        kind: Kind::Writers {
            writers: 8,
            batch: 1,
        },
    },
    Workload {
        id: "2-64",
        number: 2,
        title: "64 writers, 1 event/append, own streams",
        kind: Kind::Writers {
            writers: 64,
            batch: 1,
        },
    },
    Workload {
        id: "3",
        number: 3,
        title: "8 writers, 100 events/append",
        kind: Kind::Writers {
            writers: 8,
            batch: 100,
        },
    },
    Workload {
        id: "4-1",
        number: 4,
        title: "read a 100-event stream, 1 reader",
        kind: Kind::ReadStreams { readers: 1 },
    },
    Workload {
        id: "4-8",
        number: 4,
        title: "read a 100-event stream, 8 readers",
        kind: Kind::ReadStreams { readers: 8 },
    },
    Workload {
        id: "5",
        number: 5,
        title: "read all in global order",
        kind: Kind::ReadAll,
    },
    Workload {
        id: "6",
        number: 6,
        title: "64 writers on 16 streams, retry on conflict",
        kind: Kind::Contention {
            writers: 64,
            streams: 16,
        },
    },
];

/// Workloads that are listed but cannot run yet: (id, title, why).
pub const NOT_YET: &[(&str, &str, &str)] = &[(
    "7",
    "aggregate load with/without snapshot",
    "not yet (needs the toolkit issue)",
)];

/// The workloads named in `spec` (ids, or `2` / `4` for both of their variants), in the
/// order of [`WORKLOADS`]. `7` is accepted and stays listed as not yet runnable.
pub fn select(spec: &[String]) -> anyhow::Result<Vec<Workload>> {
    let mut chosen = vec![false; WORKLOADS.len()];
    for item in spec.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if NOT_YET.iter().any(|n| n.0 == item) {
            continue;
        }
        let mut found = false;
        for (i, w) in WORKLOADS.iter().enumerate() {
            if w.id == item || w.number.to_string() == item {
                chosen[i] = true;
                found = true;
            }
        }
        if !found {
            let ids: Vec<&str> = WORKLOADS.iter().map(|w| w.id).collect();
            bail!(
                "unknown workload {item:?} (known: {}, or 2 and 4 for both variants)",
                ids.join(", ")
            );
        }
    }
    Ok(WORKLOADS
        .iter()
        .zip(chosen)
        .filter(|(_, c)| *c)
        .map(|(w, _)| *w)
        .collect())
}

/// The store the read workloads read: `events` events in `streams` streams of equal length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReadStore {
    /// Events in total.
    pub events: u64,
    /// Streams.
    pub streams: u64,
}

impl ReadStore {
    /// Events per stream.
    pub fn per_stream(&self) -> u64 {
        self.events / self.streams.max(1)
    }

    /// The name of stream `k`.
    pub fn stream(k: u64) -> String {
        format!("read-{k}")
    }
}

/// How a run is sized.
#[derive(Debug, Clone)]
pub struct Params {
    /// How long a timed run issues operations.
    pub duration: Duration,
    /// The data of every event (256 bytes of JSON).
    pub payload: Arc<Vec<u8>>,
    /// The read workloads' store.
    pub read_store: ReadStore,
}

/// Events per stream per bulk append in the load, so that a stream's events are spread
/// through the log as they are in a store that grew over time.
const LOAD_CHUNK: u64 = 10;
/// Streams per bulk append in the load (Orchestrix takes at most 1,024 per append).
const LOAD_STREAMS_PER_BATCH: u64 = 1000;

/// What a backend's loaded read store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Length of every event's data as the backend returns it. It may differ from what was
    /// written when the store normalizes JSON (PostgreSQL's JSONB prints `{"pad": "x"}`).
    pub data_len: usize,
}

/// Loads the read store into an emptied backend, untimed, in large batches; then lets the
/// backend tidy up and checks the store by reading it all back. `progress` gets the number
/// of events loaded so far.
pub async fn load(
    backend: &mut dyn Backend,
    p: &Params,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Loaded> {
    let rs = p.read_store;
    ensure!(
        rs.streams > 0 && rs.events.is_multiple_of(rs.streams),
        "the read store's {} events must split evenly into its {} streams",
        rs.events,
        rs.streams
    );
    backend.reset().await?;
    let per_stream = rs.per_stream();
    let mut loaded = 0;
    let mut first = 0;
    while first < per_stream {
        let n = LOAD_CHUNK.min(per_stream - first);
        let mut group = 0;
        while group < rs.streams {
            let end = (group + LOAD_STREAMS_PER_BATCH).min(rs.streams);
            let parts: Vec<BulkPart> = (group..end)
                .map(|k| BulkPart {
                    stream: ReadStore::stream(k),
                    first_version: first,
                    events: (0..n)
                        .map(|_| NewEvent::bench(p.payload.as_ref().clone()))
                        .collect(),
                })
                .collect();
            backend.bulk_append(parts).await?;
            loaded += n * (end - group);
            progress(loaded);
            group = end;
        }
        first += n;
    }
    backend.after_bulk_load().await?;
    let tally = backend.read_all(Tally::per_stream()).await?;
    let want: HashMap<String, u64> = (0..rs.streams)
        .map(|k| (ReadStore::stream(k), per_stream - 1))
        .collect();
    tally
        .check_against(&want)
        .context("the loaded store does not read back as written")?;
    match tally.data_len_range {
        Some((lo, hi)) if lo == hi && lo >= p.payload.len() => Ok(Loaded { data_len: lo }),
        range => bail!(
            "the loaded events' data reads back with lengths {range:?}, {} bytes were written",
            p.payload.len()
        ),
    }
}

/// Runs one timed run of `w` on `backend`. Write workloads start from an emptied store;
/// read workloads need the read store loaded (`loaded`).
pub async fn run(
    backend: &mut dyn Backend,
    w: &Workload,
    p: &Params,
    loaded: Option<Loaded>,
) -> anyhow::Result<RunResult> {
    let read_data_len = || {
        loaded
            .map(|l| l.data_len)
            .context("the read store is not loaded")
    };
    match w.kind {
        Kind::Writers { writers, batch } => {
            backend.reset().await?;
            let clients = clients(backend, writers).await?;
            let r = drive(clients, p.duration, |i, c, deadline| {
                own_stream_writer(
                    c,
                    format!("w{}-{i}", w.id),
                    batch,
                    deadline,
                    p.payload.clone(),
                )
            })
            .await?;
            verify_writes(backend, &r).await?;
            Ok(r.result)
        }
        Kind::Contention { writers, streams } => {
            backend.reset().await?;
            let clients = clients(backend, writers).await?;
            let r = drive(clients, p.duration, |i, c, deadline| {
                contending_writer(
                    c,
                    format!("w{}-s{}", w.id, i % streams),
                    deadline,
                    p.payload.clone(),
                )
            })
            .await?;
            verify_writes(backend, &r).await?;
            Ok(r.result)
        }
        Kind::ReadStreams { readers } => {
            let clients = clients(backend, readers).await?;
            let rs = p.read_store;
            let data_len = read_data_len()?;
            let share = readers > 1;
            let r = drive(clients, p.duration, |i, c, deadline| {
                stream_reader(c, rs, i as u64, data_len, share, deadline)
            })
            .await?;
            ensure!(
                r.idle_clients == 0,
                "{} of the {readers} readers read nothing: they did not run side by side",
                r.idle_clients
            );
            Ok(r.result)
        }
        Kind::ReadAll => {
            let data_len = read_data_len()? as u64;
            let t = Instant::now();
            let tally = backend.read_all(Tally::totals()).await?;
            let secs = t.elapsed().as_secs_f64();
            ensure!(
                tally.events == p.read_store.events,
                "read {} events of the {} loaded",
                tally.events,
                p.read_store.events
            );
            ensure!(
                tally.bytes == p.read_store.events * data_len,
                "read {} data bytes, {} were loaded",
                tally.bytes,
                p.read_store.events * data_len
            );
            Ok(RunResult {
                events: tally.events,
                ops: 1,
                secs,
                conflicts: 0,
                latency: None,
            })
        }
    }
}

async fn clients(backend: &dyn Backend, n: usize) -> anyhow::Result<Vec<Box<dyn Client>>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(backend.client().await?);
    }
    Ok(v)
}

/// What one client did in a run.
struct ClientOutcome {
    hist: Histogram<u64>,
    events: u64,
    ops: u64,
    conflicts: u64,
    /// For writers: per stream, how many events this client had acknowledged.
    written: Vec<(String, u64)>,
}

/// A run's merged outcome.
struct Driven {
    result: RunResult,
    /// Per stream, the events acknowledged by all writers.
    written: HashMap<String, u64>,
    /// Clients that completed no operation.
    idle_clients: u64,
}

/// Starts one task per client, all at once, and merges their outcomes.
async fn drive<F, Fut>(
    clients: Vec<Box<dyn Client>>,
    duration: Duration,
    task: F,
) -> anyhow::Result<Driven>
where
    F: Fn(usize, Box<dyn Client>, Instant) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ClientOutcome>> + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for (i, c) in clients.into_iter().enumerate() {
        set.spawn(task(i, c, deadline));
    }
    let mut hist = new_histogram()?;
    let (mut events, mut ops, mut conflicts, mut idle_clients) = (0, 0, 0, 0);
    let mut written: HashMap<String, u64> = HashMap::new();
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined.context("a client task panicked").and_then(|r| r) {
            Ok(o) => {
                hist.add(&o.hist)
                    .map_err(|e| anyhow::anyhow!("merging histograms: {e}"))?;
                events += o.events;
                ops += o.ops;
                if o.ops == 0 {
                    idle_clients += 1;
                }
                conflicts += o.conflicts;
                for (s, n) in o.written {
                    *written.entry(s).or_default() += n;
                }
            }
            Err(e) => {
                // Keep the first error; the other clients stop at the deadline.
                first_error.get_or_insert(e);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        return Err(e);
    }
    ensure!(ops > 0, "no operation completed within the run's time");
    Ok(Driven {
        result: RunResult {
            events,
            ops,
            secs,
            conflicts,
            latency: Latency::of(&hist),
        },
        written,
        idle_clients,
    })
}

/// Reads the whole store back and compares it with what the writers had acknowledged.
async fn verify_writes(backend: &dyn Backend, d: &Driven) -> anyhow::Result<()> {
    let tally = backend
        .read_all(Tally::per_stream())
        .await
        .context("reading the store back")?;
    let want: HashMap<String, u64> = d
        .written
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| (s.clone(), n - 1))
        .collect();
    tally
        .check_against(&want)
        .context("the store does not read back what was acknowledged")?;
    ensure!(
        tally.events == d.result.events,
        "read back {} events, {} were acknowledged",
        tally.events,
        d.result.events
    );
    Ok(())
}

fn batch_of(payload: &[u8], n: usize) -> Vec<NewEvent> {
    (0..n).map(|_| NewEvent::bench(payload.to_vec())).collect()
}

/// Appends `batch` events at a time to its own stream with the exact expected version.
async fn own_stream_writer(
    mut c: Box<dyn Client>,
    stream: String,
    batch: usize,
    deadline: Instant,
    payload: Arc<Vec<u8>>,
) -> anyhow::Result<ClientOutcome> {
    let mut hist = new_histogram()?;
    let mut head: Option<u64> = None;
    let (mut events, mut ops) = (0u64, 0u64);
    while Instant::now() < deadline {
        let expected = Expected::from_head(head);
        let batch_events = batch_of(&payload, batch);
        let t = Instant::now();
        match c.append(&stream, expected, batch_events).await {
            Ok(last) => {
                record(&mut hist, t.elapsed());
                let want = expected.first_version() + batch as u64 - 1;
                ensure!(
                    last == want,
                    "append to {stream:?} returned last version {last}, expected {want}"
                );
                head = Some(last);
                events += batch as u64;
                ops += 1;
            }
            Err(AppendError::Conflict) => {
                bail!("append to {stream:?} (its only writer) conflicted at {expected:?}")
            }
            Err(AppendError::Other(e)) => return Err(e),
        }
    }
    Ok(ClientOutcome {
        hist,
        events,
        ops,
        conflicts: 0,
        written: vec![(stream, events)],
    })
}

/// Appends one event at a time to a shared stream with its last known version; on a
/// conflict re-reads the head and retries. Latency is per successful append, retries
/// included.
async fn contending_writer(
    mut c: Box<dyn Client>,
    stream: String,
    deadline: Instant,
    payload: Arc<Vec<u8>>,
) -> anyhow::Result<ClientOutcome> {
    let mut hist = new_histogram()?;
    let mut head = c.head(&stream).await?;
    let (mut events, mut conflicts) = (0u64, 0u64);
    'appends: while Instant::now() < deadline {
        let t = Instant::now();
        loop {
            let expected = Expected::from_head(head);
            match c.append(&stream, expected, batch_of(&payload, 1)).await {
                Ok(last) => {
                    ensure!(
                        last == expected.first_version(),
                        "append to {stream:?} at {expected:?} returned last version {last}"
                    );
                    record(&mut hist, t.elapsed());
                    head = Some(last);
                    events += 1;
                    break;
                }
                Err(AppendError::Conflict) => {
                    conflicts += 1;
                    head = c.head(&stream).await?;
                    if Instant::now() >= deadline {
                        break 'appends;
                    }
                }
                Err(AppendError::Other(e)) => return Err(e),
            }
        }
    }
    Ok(ClientOutcome {
        hist,
        events,
        ops: events,
        conflicts,
        written: vec![(stream, events)],
    })
}

/// A small xorshift generator: random streams without a dependency.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Reads random whole streams of the read store and checks each; with `share` (other
/// readers run beside it), yields to the runtime after each read.
async fn stream_reader(
    mut c: Box<dyn Client>,
    rs: ReadStore,
    seed: u64,
    data_len: usize,
    share: bool,
    deadline: Instant,
) -> anyhow::Result<ClientOutcome> {
    let mut hist = new_histogram()?;
    let mut rng = XorShift::new(seed + 1);
    let per_stream = rs.per_stream();
    let max = usize::try_from(per_stream).context("stream length")?;
    let (mut events, mut ops) = (0u64, 0u64);
    while Instant::now() < deadline {
        let stream = ReadStore::stream(rng.next() % rs.streams);
        let t = Instant::now();
        let read = c.read_stream(&stream, max).await?;
        record(&mut hist, t.elapsed());
        // An embedded store's read completes without awaiting anything: without a yield, the
        // first tasks would hold the runtime's threads to the deadline and the other readers
        // would never run (a review saw 2 of 8 Orchestrix readers work). A lone reader does
        // not yield: there is no one to yield to, and a yield can hand the task to the other
        // runtime thread, with cold caches, between two reads.
        if share {
            tokio::task::yield_now().await;
        }
        ensure!(
            read.len() as u64 == per_stream,
            "read {} events of {stream:?}, it has {per_stream}",
            read.len()
        );
        for (i, e) in read.iter().enumerate() {
            ensure!(
                e.version == i as u64 && e.data_len == data_len,
                "{stream:?}: event {i} has version {} and {} data bytes",
                e.version,
                e.data_len
            );
            if i > 0 {
                ensure!(
                    e.position > read[i - 1].position,
                    "{stream:?}: positions not ascending"
                );
            }
        }
        events += per_stream;
        ops += 1;
    }
    Ok(ClientOutcome {
        hist,
        events,
        ops,
        conflicts: 0,
        written: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_selected_by_id_or_number() {
        let ids = |v: Vec<Workload>| v.iter().map(|w| w.id).collect::<Vec<_>>();
        let s = |x: &str| x.split(',').map(String::from).collect::<Vec<_>>();
        assert_eq!(ids(select(&s("1")).unwrap()), vec!["1"]);
        assert_eq!(
            ids(select(&s("4,2")).unwrap()),
            vec!["2-8", "2-64", "4-1", "4-8"]
        );
        assert_eq!(ids(select(&s("2-64, 7")).unwrap()), vec!["2-64"]);
        assert!(select(&s("9")).is_err());
        assert_eq!(select(&s("1,2,3,4,5,6")).unwrap().len(), WORKLOADS.len());
    }

    #[test]
    fn the_read_store_splits_into_streams() {
        let rs = ReadStore {
            events: 20_000,
            streams: 200,
        };
        assert_eq!(rs.per_stream(), 100);
        assert_eq!(ReadStore::stream(7), "read-7");
    }

    #[test]
    fn xorshift_spreads() {
        let mut r = XorShift::new(1);
        let mut seen = [false; 16];
        for _ in 0..1000 {
            seen[(r.next() % 16) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
