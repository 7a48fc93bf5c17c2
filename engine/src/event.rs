//! Events as the user appends them and as the store returns them.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use orchestrix_log::{EventRecord, EventView};
use uuid::Uuid;

/// What an append expects of the stream's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist.
    NoStream,
    /// The stream must exist.
    StreamExists,
    /// The stream's last version must be this one.
    Exact(u64),
}

/// Which way to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forwards,
    /// Newest first.
    Backwards,
}

/// An event to append, CloudEvents-shaped.
///
/// ```
/// use orchestrix::EventData;
/// let e = EventData::json("OrderPlaced", br#"{"order":1}"#.to_vec()).with_subject("order-1");
/// assert_eq!(e.event_type, "OrderPlaced");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    /// Unique id, the idempotency key. Defaults to a fresh UUID v7.
    pub id: Uuid,
    /// CloudEvents `type`.
    pub event_type: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// CloudEvents `time`, nanoseconds since the Unix epoch. Defaults to now.
    pub time_unix_nanos: i64,
    /// CloudEvents `datacontenttype`.
    pub data_content_type: Option<String>,
    /// CloudEvents `dataschema`.
    pub data_schema: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Causation id.
    pub causation_id: Option<String>,
    /// Free metadata.
    pub metadata: Vec<(String, String)>,
    /// The payload.
    pub data: Vec<u8>,
}

fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl EventData {
    /// An event with opaque data and no content type.
    pub fn new(event_type: impl Into<String>, data: Vec<u8>) -> Self {
        EventData {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            source: "orchestrix".into(),
            subject: None,
            time_unix_nanos: now_unix_nanos(),
            data_content_type: None,
            data_schema: None,
            correlation_id: None,
            causation_id: None,
            metadata: Vec::new(),
            data,
        }
    }

    /// An event whose data is JSON (`datacontenttype: application/json`).
    pub fn json(event_type: impl Into<String>, data: Vec<u8>) -> Self {
        let mut e = Self::new(event_type, data);
        e.data_content_type = Some("application/json".into());
        e
    }

    /// Sets the id.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }
    /// Sets the source.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }
    /// Sets the subject.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }
    /// Sets the time.
    pub fn with_time_unix_nanos(mut self, t: i64) -> Self {
        self.time_unix_nanos = t;
        self
    }
    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }
    /// Adds a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    pub(crate) fn into_record(self) -> EventRecord {
        EventRecord {
            id: *self.id.as_bytes(),
            event_type: self.event_type,
            source: self.source,
            subject: self.subject,
            time_unix_nanos: self.time_unix_nanos,
            data_content_type: self.data_content_type,
            data_schema: self.data_schema,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            metadata: self.metadata,
            data: self.data,
        }
    }
}

/// A stored event with its place in the log.
///
/// Reading does not copy: `data` shares the buffer the frame was read into, and the text
/// fields are reference-counted, shared between events of one read that carry the same value
/// (a stream id, an event type). Compare them as `&*e.event_type == "OrderPlaced"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global position.
    pub position: u64,
    /// Stream id.
    pub stream: Arc<str>,
    /// Version in the stream (from 0).
    pub version: u64,
    /// Id.
    pub id: Uuid,
    /// CloudEvents `type`.
    pub event_type: Arc<str>,
    /// CloudEvents `source`.
    pub source: Arc<str>,
    /// CloudEvents `subject`.
    pub subject: Option<Arc<str>>,
    /// Nanoseconds since the Unix epoch.
    pub time_unix_nanos: i64,
    /// CloudEvents `datacontenttype`.
    pub data_content_type: Option<Arc<str>>,
    /// CloudEvents `dataschema`.
    pub data_schema: Option<Arc<str>>,
    /// Correlation id.
    pub correlation_id: Option<Arc<str>>,
    /// Causation id.
    pub causation_id: Option<Arc<str>>,
    /// Metadata.
    pub metadata: Vec<(String, String)>,
    /// Payload.
    pub data: Bytes,
}

/// Turns borrowed events of frames into [`RecordedEvent`]s, sharing equal text between the
/// events of one read (most events of a read repeat their stream, type, source and content
/// type, so a read allocates for the first one only).
#[derive(Default)]
pub(crate) struct EventBuilder {
    stream: TextCache,
    event_type: TextCache,
    source: TextCache,
    subject: TextCache,
    content_type: TextCache,
    schema: TextCache,
}

/// The last text seen for one field.
#[derive(Default)]
struct TextCache(Option<Arc<str>>);

impl TextCache {
    fn get(&mut self, s: &str) -> Arc<str> {
        match &self.0 {
            Some(a) if **a == *s => a.clone(),
            _ => {
                let a: Arc<str> = Arc::from(s);
                self.0 = Some(a.clone());
                a
            }
        }
    }
}

impl EventBuilder {
    /// The event `e` of stream `stream`, decoded from `frame` (the payload `e` borrows from).
    pub(crate) fn build(
        &mut self,
        e: &EventView<'_>,
        frame: &Bytes,
        stream: &str,
        version: u64,
        position: u64,
    ) -> RecordedEvent {
        RecordedEvent {
            position,
            stream: self.stream.get(stream),
            version,
            id: Uuid::from_bytes(e.id),
            event_type: self.event_type.get(e.event_type),
            source: self.source.get(e.source),
            subject: e.subject.map(|s| self.subject.get(s)),
            time_unix_nanos: e.time_unix_nanos,
            data_content_type: e.data_content_type.map(|s| self.content_type.get(s)),
            data_schema: e.data_schema.map(|s| self.schema.get(s)),
            correlation_id: e.correlation_id.map(Arc::from),
            causation_id: e.causation_id.map(Arc::from),
            metadata: e
                .metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            data: share(frame, e.data),
        }
    }
}

/// `part` as a slice of `whole` when it lies inside it (no copy), else a copy.
fn share(whole: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize);
    match start {
        Some(s) if s + part.len() <= whole.len() => whole.slice(s..s + part.len()),
        _ => Bytes::copy_from_slice(part),
    }
}

impl RecordedEvent {
    /// Whether the data is JSON by its content type.
    pub fn is_json(&self) -> bool {
        self.data_content_type
            .as_deref()
            .is_some_and(|c| c == "application/json" || c.ends_with("+json"))
    }
}

/// The outcome of a successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// Position of the first event written (or found, for an idempotent repeat).
    pub first_position: u64,
    /// Per stream: (stream, first version, last version) of the events.
    pub streams: Vec<(String, u64, u64)>,
    /// True when the events were already stored and nothing was written.
    pub already_stored: bool,
}

impl AppendResult {
    /// The last version written to the first stream of the append.
    pub fn next_expected_version(&self) -> u64 {
        self.streams.first().map_or(0, |s| s.2)
    }
}

/// Which events a read or a subscription passes on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadFilter {
    /// Only these event types (all if empty).
    pub event_types: Vec<String>,
    /// Only streams whose id starts with this.
    pub stream_prefix: Option<String>,
}

impl ReadFilter {
    /// A filter that passes everything.
    pub fn all() -> Self {
        Self::default()
    }
    /// Only events of these types.
    pub fn types<I: IntoIterator<Item = S>, S: Into<String>>(types: I) -> Self {
        ReadFilter {
            event_types: types.into_iter().map(Into::into).collect(),
            stream_prefix: None,
        }
    }
    /// Only streams with this prefix.
    pub fn stream_prefix(prefix: impl Into<String>) -> Self {
        ReadFilter {
            event_types: Vec::new(),
            stream_prefix: Some(prefix.into()),
        }
    }
    pub(crate) fn passes_stream(&self, stream: &str) -> bool {
        self.stream_prefix
            .as_deref()
            .is_none_or(|p| stream.starts_with(p))
    }
    pub(crate) fn passes_type(&self, t: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|x| x == t)
    }
}
