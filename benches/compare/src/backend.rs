//! What every compared store implements, and the tally that checks what it reads back.
//!
//! A [`Backend`] owns one store (a directory, a database schema) and hands out a [`Client`]
//! per concurrent writer or reader (a connection, a handle). The harness drives the clients as
//! tokio tasks; a backend whose client API blocks (SQLite) runs each call on the blocking pool.

use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;
use uuid::Uuid;

/// What an append expects of the stream's current (last) version. The harness always appends
/// with a check, as an event-sourced application does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be this one (versions start at 0).
    Exact(u64),
}

impl Expected {
    /// The expectation that follows a known head (`None`: the stream does not exist).
    pub fn from_head(head: Option<u64>) -> Self {
        head.map_or(Expected::NoStream, Expected::Exact)
    }

    /// The version the first appended event gets.
    pub fn first_version(self) -> u64 {
        match self {
            Expected::NoStream => 0,
            Expected::Exact(v) => v + 1,
        }
    }
}

/// An event as the harness builds it: a fresh UUID v7, a type, JSON data and a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Event id (the idempotency key in Orchestrix, `event_id` in the SQL tables).
    pub id: Uuid,
    /// Event type.
    pub event_type: &'static str,
    /// JSON data.
    pub data: Vec<u8>,
    /// When it happened.
    pub time: SystemTime,
}

impl NewEvent {
    /// An event of type `BenchEvent` with this data, a fresh id and the current time.
    pub fn bench(data: Vec<u8>) -> Self {
        NewEvent {
            id: Uuid::now_v7(),
            event_type: "BenchEvent",
            data,
            time: SystemTime::now(),
        }
    }

    /// The data as text (the harness only builds JSON, so this never fails for its events).
    pub fn data_str(&self) -> anyhow::Result<&str> {
        std::str::from_utf8(&self.data)
            .map_err(|e| anyhow::anyhow!("event {} has non-UTF-8 data: {e}", self.id))
    }

    /// The time as RFC 3339 with microseconds, UTC (what the SQL backends store).
    pub fn time_rfc3339(&self) -> String {
        humantime::format_rfc3339_micros(self.time).to_string()
    }
}

/// One event of a stream read: the fields the harness checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadEvent {
    /// The event's place in the store's global order.
    pub position: u64,
    /// Its version in its stream.
    pub version: u64,
    /// Length of its data in bytes.
    pub data_len: usize,
}

/// Why an append failed.
#[derive(Debug)]
pub enum AppendError {
    /// The stream was not at the expected version (optimistic concurrency conflict).
    Conflict,
    /// Anything else: the run fails.
    Other(anyhow::Error),
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Conflict => f.write_str("wrong expected version"),
            AppendError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for AppendError {}

impl From<anyhow::Error> for AppendError {
    fn from(e: anyhow::Error) -> Self {
        AppendError::Other(e)
    }
}

/// The events of one stream in a bulk load: `events` get versions `first_version..`.
#[derive(Debug, Clone)]
pub struct BulkPart {
    /// Stream id.
    pub stream: String,
    /// Version of the first event (the stream's head is `first_version - 1`).
    pub first_version: u64,
    /// The events.
    pub events: Vec<NewEvent>,
}

/// A store under comparison.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Short name used on the command line and in the table (`orchestrix`, `postgres`, ...).
    fn name(&self) -> &'static str;

    /// One line: what the store does before it acknowledges an append (its durability).
    fn acknowledges(&self) -> String;

    /// What the table says on the row of workload `workload` (its id) when the store cannot
    /// run it as the harness specifies it; `None` (the default) when it runs as specified.
    fn caveat(&self, workload: &str) -> Option<String> {
        let _ = workload;
        None
    }

    /// Replaces the store with an empty one (a fresh directory, an emptied table).
    async fn reset(&mut self) -> anyhow::Result<()>;

    /// A client for one concurrent writer or reader (its own connection where there are any).
    async fn client(&self) -> anyhow::Result<Box<dyn Client>>;

    /// Appends many streams' events the fastest way the store has (untimed loading).
    async fn bulk_append(&self, parts: Vec<BulkPart>) -> anyhow::Result<()>;

    /// What the store does after a bulk load, untimed (statistics, vacuum); nothing by default.
    async fn after_bulk_load(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Reads every event in global order from the start, the fastest way the store has,
    /// feeding each to `tally`, and returns it.
    async fn read_all(&self, tally: Tally) -> anyhow::Result<Tally>;

    /// Shuts the store down and removes what it made (directories, server, schema).
    async fn close(&mut self) -> anyhow::Result<()>;
}

/// One writer's or reader's handle on a store.
#[async_trait]
pub trait Client: Send {
    /// Appends `events` to `stream` if it is at `expected`; returns the new last version.
    async fn append(
        &mut self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<u64, AppendError>;

    /// Reads up to `max` events of `stream` from version 0, oldest first.
    async fn read_stream(&mut self, stream: &str, max: usize) -> anyhow::Result<Vec<ReadEvent>>;

    /// The stream's last version, or `None` if it does not exist.
    async fn head(&mut self, stream: &str) -> anyhow::Result<Option<u64>>;
}

/// Events of one stream seen by a [`Tally`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamTally {
    /// How many.
    pub count: u64,
    /// The last version seen.
    pub last_version: u64,
}

/// Counts what a read of the whole store returns and checks its order: positions strictly
/// ascending, and (when per-stream counting is on) each stream's versions `0, 1, 2, ...`
/// with neither gap nor repeat.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Events seen.
    pub events: u64,
    /// Data bytes seen.
    pub bytes: u64,
    /// Shortest and longest data seen.
    pub data_len_range: Option<(usize, usize)>,
    last_position: Option<u64>,
    per_stream: Option<HashMap<String, StreamTally>>,
}

/// The events of a read were not in the order a store must return them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderError(pub String);

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OrderError {}

impl Tally {
    /// A tally that also counts per stream (for verifying a store after writes).
    pub fn per_stream() -> Self {
        Tally {
            per_stream: Some(HashMap::new()),
            ..Tally::default()
        }
    }

    /// A tally of counts and global order only (cheap: for the timed read-all).
    pub fn totals() -> Self {
        Tally::default()
    }

    /// Takes in one event.
    pub fn see(
        &mut self,
        position: u64,
        stream: &str,
        version: u64,
        data_len: usize,
    ) -> Result<(), OrderError> {
        if let Some(last) = self.last_position {
            if position <= last {
                return Err(OrderError(format!(
                    "global order broken: position {position} after {last}"
                )));
            }
        }
        self.last_position = Some(position);
        self.events += 1;
        self.bytes += data_len as u64;
        self.data_len_range = Some(match self.data_len_range {
            None => (data_len, data_len),
            Some((lo, hi)) => (lo.min(data_len), hi.max(data_len)),
        });
        if let Some(map) = &mut self.per_stream {
            let expected = match map.get_mut(stream) {
                Some(s) => {
                    let want = s.last_version + 1;
                    s.count += 1;
                    s.last_version = version;
                    want
                }
                None => {
                    map.insert(
                        stream.to_string(),
                        StreamTally {
                            count: 1,
                            last_version: version,
                        },
                    );
                    0
                }
            };
            if version != expected {
                return Err(OrderError(format!(
                    "stream {stream:?}: version {version} where {expected} was due (position {position})"
                )));
            }
        }
        Ok(())
    }

    /// Per-stream counts, if this tally keeps them.
    pub fn streams(&self) -> Option<&HashMap<String, StreamTally>> {
        self.per_stream.as_ref()
    }

    /// Checks the tally against what the writers had acknowledged: the same number of
    /// events, the same streams, each with the acknowledged last version.
    pub fn check_against(&self, acknowledged: &HashMap<String, u64>) -> Result<(), OrderError> {
        let Some(seen) = &self.per_stream else {
            return Err(OrderError("the tally did not count per stream".into()));
        };
        let want_events: u64 = acknowledged.values().map(|last| last + 1).sum();
        if self.events != want_events {
            return Err(OrderError(format!(
                "read back {} events, the writers had {} acknowledged",
                self.events, want_events
            )));
        }
        for (stream, last) in acknowledged {
            match seen.get(stream) {
                Some(s) if s.last_version == *last && s.count == last + 1 => {}
                Some(s) => {
                    return Err(OrderError(format!(
                        "stream {stream:?}: read back {} events up to version {}, acknowledged up to version {last}",
                        s.count, s.last_version
                    )))
                }
                None => {
                    return Err(OrderError(format!(
                        "stream {stream:?} (acknowledged up to version {last}) was not read back"
                    )))
                }
            }
        }
        if let Some(extra) = seen.keys().find(|s| !acknowledged.contains_key(*s)) {
            return Err(OrderError(format!(
                "stream {extra:?} was read back but never written"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions_give_the_first_new_version() {
        assert_eq!(Expected::from_head(None), Expected::NoStream);
        assert_eq!(Expected::from_head(Some(4)), Expected::Exact(4));
        assert_eq!(Expected::NoStream.first_version(), 0);
        assert_eq!(Expected::Exact(4).first_version(), 5);
    }

    #[test]
    fn a_tally_checks_order_and_counts() {
        let mut t = Tally::per_stream();
        t.see(0, "a", 0, 10).unwrap();
        t.see(1, "b", 0, 10).unwrap();
        t.see(5, "a", 1, 10).unwrap();
        assert_eq!(t.events, 3);
        assert_eq!(t.bytes, 30);
        assert_eq!(t.data_len_range, Some((10, 10)));
        let ok: HashMap<String, u64> = [("a".to_string(), 1), ("b".to_string(), 0)].into();
        t.check_against(&ok).unwrap();

        let more: HashMap<String, u64> = [("a".to_string(), 2), ("b".to_string(), 0)].into();
        assert!(t.check_against(&more).is_err());
        let missing: HashMap<String, u64> = [("a".to_string(), 1)].into();
        assert!(t.check_against(&missing).is_err());

        assert!(t.see(5, "b", 1, 1).is_err(), "a repeated position");
        let mut gap = Tally::per_stream();
        gap.see(0, "a", 0, 1).unwrap();
        assert!(gap.see(1, "a", 2, 1).is_err(), "a version gap");
        let mut late = Tally::per_stream();
        assert!(
            late.see(0, "a", 1, 1).is_err(),
            "a stream not starting at 0"
        );
    }

    #[test]
    fn a_totals_tally_does_not_count_streams() {
        let mut t = Tally::totals();
        t.see(3, "a", 7, 1).unwrap();
        assert!(t.streams().is_none());
        assert!(t.check_against(&HashMap::new()).is_err());
    }
}
