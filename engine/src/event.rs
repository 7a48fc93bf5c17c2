//! Events as the user appends them and as the store returns them.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use orchestrix_log::{EventRecord, EventSpans, Span};
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

impl ExpectedVersion {
    /// Whether a stream whose last version is `current` (`None`: no such stream) meets this
    /// expectation.
    ///
    /// ```
    /// use orchestrix::ExpectedVersion;
    /// assert!(ExpectedVersion::Exact(4).holds(Some(4)));
    /// assert!(!ExpectedVersion::NoStream.holds(Some(0)));
    /// assert!(ExpectedVersion::StreamExists.holds(Some(0)));
    /// ```
    pub fn holds(self, current: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::StreamExists => current.is_some(),
            ExpectedVersion::Exact(v) => current == Some(v),
        }
    }
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
    /// Unique id, the idempotency key. Defaults to a fresh UUID v7 (time-ordered: the ids a
    /// thread makes are strictly increasing).
    pub id: Uuid,
    /// CloudEvents `type` (a `&'static str` is kept without a copy).
    pub event_type: Cow<'static, str>,
    /// CloudEvents `source` (a `&'static str` is kept without a copy).
    pub source: Cow<'static, str>,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// CloudEvents `time`, nanoseconds since the Unix epoch. Defaults to now.
    pub time_unix_nanos: i64,
    /// CloudEvents `datacontenttype` (a `&'static str` is kept without a copy).
    pub data_content_type: Option<Cow<'static, str>>,
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

thread_local! {
    /// Each thread's v7 context: ids made by one thread are strictly ordered, and threads do
    /// not take turns on one lock for every id as with `Uuid::now_v7`'s shared context.
    static V7_CONTEXT: uuid::timestamp::context::ContextV7 =
        const { uuid::timestamp::context::ContextV7::new() };
}

/// A fresh v7 id and the time it carries (nanoseconds since the Unix epoch), from one read of
/// the clock.
fn new_id_and_time() -> (Uuid, i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let id = V7_CONTEXT.with(|context| {
        Uuid::new_v7(uuid::Timestamp::from_unix(
            context,
            now.as_secs(),
            now.subsec_nanos(),
        ))
    });
    // In i64 arithmetic (`as_nanos` is a u128, and its conversion a 128-bit division).
    let nanos = i64::try_from(now.as_secs())
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|n| n.checked_add(i64::from(now.subsec_nanos())))
        .unwrap_or(i64::MAX);
    (id, nanos)
}

impl EventData {
    /// An event with opaque data and no content type. The type, like the source, is a
    /// `Cow<'static, str>`: a string literal is kept as it is (no copy per event), a `String`
    /// is moved in; text borrowed for less than `'static` is passed as `s.to_owned()`.
    pub fn new(event_type: impl Into<Cow<'static, str>>, data: Vec<u8>) -> Self {
        let (id, time_unix_nanos) = new_id_and_time();
        EventData {
            id,
            event_type: event_type.into(),
            source: "orchestrix".into(),
            subject: None,
            time_unix_nanos,
            data_content_type: None,
            data_schema: None,
            correlation_id: None,
            causation_id: None,
            metadata: Vec::new(),
            data,
        }
    }

    /// An event whose data is JSON (`datacontenttype: application/json`).
    pub fn json(event_type: impl Into<Cow<'static, str>>, data: Vec<u8>) -> Self {
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
    pub fn with_source(mut self, source: impl Into<Cow<'static, str>>) -> Self {
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

/// A frame's payload, shared by the events read from it. The payload is a slice of the
/// segment's map, whose reference count every reader shares: it is taken once per frame
/// here, and each event holds a plain `Arc` on it (cloned and dropped inline, without the
/// map's shared count or a call through `Bytes`' table).
#[derive(Clone)]
pub(crate) struct Frame(Arc<Bytes>);

impl Frame {
    pub(crate) fn new(payload: Bytes) -> Frame {
        Frame(Arc::new(payload))
    }

    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A stored event with its place in the log.
///
/// Reading copies nothing: the event is a view of the frame it was read from (a shared,
/// reference-counted buffer, or the segment's memory map), and the text fields and the data
/// are read from it by the accessor methods. Holding an event keeps its frame alive.
///
/// ```
/// # fn main() -> orchestrix::Result<()> {
/// use orchestrix::{Direction, EventData, ExpectedVersion, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path())?;
/// store.append("order-1", ExpectedVersion::NoStream,
///     vec![EventData::json("OrderPlaced", br#"{"total":3}"#.to_vec())])?;
/// let e = &store.read_stream("order-1", 0, Direction::Forwards, 10)?[0];
/// assert_eq!((e.stream(), e.version, e.event_type()), ("order-1", 0, "OrderPlaced"));
/// assert_eq!(e.data(), br#"{"total":3}"#);
/// assert!(e.is_json());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RecordedEvent {
    /// Global position.
    pub position: u64,
    /// Version in the stream (from 0).
    pub version: u64,
    /// Id.
    pub id: Uuid,
    /// CloudEvents `time`, nanoseconds since the Unix epoch.
    pub time_unix_nanos: i64,
    /// The frame's payload the spans below point into.
    frame: Frame,
    stream: Span,
    event_type: Span,
    source: Span,
    subject: Span,
    data_content_type: Span,
    data_schema: Span,
    correlation_id: Span,
    causation_id: Span,
    data: Span,
    metadata: Vec<(Span, Span)>,
}

impl RecordedEvent {
    /// The event `e` of the stream whose id lies at `stream`, both decoded from `frame` (a
    /// frame's payload): shares the frame, copies none of its bytes.
    #[inline]
    pub(crate) fn from_spans(
        e: &EventSpans,
        frame: Frame,
        stream: Span,
        version: u64,
        position: u64,
    ) -> RecordedEvent {
        RecordedEvent {
            position,
            version,
            id: Uuid::from_bytes(e.id),
            time_unix_nanos: e.time_unix_nanos,
            frame,
            stream,
            event_type: e.event_type,
            source: e.source,
            subject: e.subject,
            data_content_type: e.data_content_type,
            data_schema: e.data_schema,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            data: e.data,
            metadata: e.metadata.clone(),
        }
    }

    /// The handle on the frame this event was read from.
    pub(crate) fn into_frame(self) -> Frame {
        self.frame
    }

    fn bytes(&self, s: Span) -> Option<&[u8]> {
        s.slice(self.frame.bytes())
    }

    fn text(&self, s: Span) -> Option<&str> {
        s.text(self.frame.bytes())
    }

    /// Stream id.
    pub fn stream(&self) -> &str {
        self.text(self.stream).unwrap_or_default()
    }
    /// CloudEvents `type`.
    pub fn event_type(&self) -> &str {
        self.text(self.event_type).unwrap_or_default()
    }
    /// CloudEvents `source`.
    pub fn source(&self) -> &str {
        self.text(self.source).unwrap_or_default()
    }
    /// CloudEvents `subject`.
    pub fn subject(&self) -> Option<&str> {
        self.text(self.subject)
    }
    /// CloudEvents `datacontenttype`.
    pub fn data_content_type(&self) -> Option<&str> {
        self.text(self.data_content_type)
    }
    /// CloudEvents `dataschema`.
    pub fn data_schema(&self) -> Option<&str> {
        self.text(self.data_schema)
    }
    /// Correlation id.
    pub fn correlation_id(&self) -> Option<&str> {
        self.text(self.correlation_id)
    }
    /// Causation id.
    pub fn causation_id(&self) -> Option<&str> {
        self.text(self.causation_id)
    }
    /// Metadata entries, in the order they were added.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.metadata.iter().map(|&(k, v)| {
            (
                self.text(k).unwrap_or_default(),
                self.text(v).unwrap_or_default(),
            )
        })
    }
    /// The payload.
    pub fn data(&self) -> &[u8] {
        self.bytes(self.data).unwrap_or_default()
    }
    /// The payload as a shared buffer (no copy).
    pub fn data_bytes(&self) -> Bytes {
        let start = self.data.start as usize;
        self.frame.0.slice(start..start + self.data.len as usize)
    }
    /// Whether the data is JSON by its content type: a media type (parameters such as
    /// `charset` aside, in any case) of `application/json`, `text/json` or a `+json` suffix.
    pub fn is_json(&self) -> bool {
        self.data_content_type().is_some_and(is_json_media_type)
    }
}

/// Whether `content_type` names JSON: `application/json`, `text/json`, or any type with a
/// `+json` suffix, compared without case and without parameters (`; charset=utf-8`).
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let json = |s: &str| s.eq_ignore_ascii_case("json");
    let suffix_json = subtype
        .rsplit_once('+')
        .is_some_and(|(_, suffix)| json(suffix));
    (kind.eq_ignore_ascii_case("application") || kind.eq_ignore_ascii_case("text")) && json(subtype)
        || suffix_json
}

impl PartialEq for RecordedEvent {
    fn eq(&self, o: &Self) -> bool {
        self.position == o.position
            && self.version == o.version
            && self.id == o.id
            && self.time_unix_nanos == o.time_unix_nanos
            && self.stream() == o.stream()
            && self.event_type() == o.event_type()
            && self.source() == o.source()
            && self.subject() == o.subject()
            && self.data_content_type() == o.data_content_type()
            && self.data_schema() == o.data_schema()
            && self.correlation_id() == o.correlation_id()
            && self.causation_id() == o.causation_id()
            && self.metadata().eq(o.metadata())
            && self.data() == o.data()
    }
}

impl Eq for RecordedEvent {}

impl std::fmt::Debug for RecordedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedEvent")
            .field("position", &self.position)
            .field("stream", &self.stream())
            .field("version", &self.version)
            .field("id", &self.id)
            .field("event_type", &self.event_type())
            .field("source", &self.source())
            .field("subject", &self.subject())
            .field("time_unix_nanos", &self.time_unix_nanos)
            .field("data_content_type", &self.data_content_type())
            .field("data_schema", &self.data_schema())
            .field("correlation_id", &self.correlation_id())
            .field("causation_id", &self.causation_id())
            .field("metadata", &self.metadata().collect::<Vec<_>>())
            .field("data_len", &self.data.len)
            .finish()
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
    /// Whether a stream id (its UTF-8 bytes) passes.
    pub(crate) fn passes_stream(&self, stream: &[u8]) -> bool {
        self.stream_prefix
            .as_deref()
            .is_none_or(|p| stream.starts_with(p.as_bytes()))
    }
    /// Whether an event type (its UTF-8 bytes) passes.
    pub(crate) fn passes_type(&self, t: &[u8]) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|x| x.as_bytes() == t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_by_their_media_type() {
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "text/json",
            "application/cloudevents+json",
            "application/vnd.api+JSON ; q=1",
        ] {
            assert!(is_json_media_type(yes), "{yes}");
        }
        for no in [
            "",
            "json",
            "application/jsonl",
            "application/xml",
            "text/plain; note=application/json",
            "application/json-seq",
            "image/png",
        ] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }

    #[test]
    fn new_ids_are_v7_ordered_per_thread_and_carry_the_event_time() {
        let events: Vec<EventData> = (0..10_000)
            .map(|_| EventData::new("T", Vec::new()))
            .collect();
        for pair in events.windows(2) {
            assert!(
                pair[0].id < pair[1].id,
                "ids of one thread are strictly ordered"
            );
        }
        for e in &events {
            assert_eq!(e.id.get_version_num(), 7);
            let (secs, nanos) = e.id.get_timestamp().expect("v7 has a timestamp").to_unix();
            let id_millis = i64::try_from(secs * 1000 + u64::from(nanos / 1_000_000)).unwrap();
            // The id's millisecond is the event time's, or later if the counter overflowed.
            assert!(id_millis >= e.time_unix_nanos / 1_000_000);
            assert!(id_millis <= e.time_unix_nanos / 1_000_000 + 1000);
        }
        // Threads make distinct ids.
        let other: Vec<Uuid> = std::thread::spawn(|| {
            (0..10_000)
                .map(|_| EventData::new("T", Vec::new()).id)
                .collect()
        })
        .join()
        .unwrap();
        let mut all: std::collections::HashSet<Uuid> = events.iter().map(|e| e.id).collect();
        assert!(other.into_iter().all(|id| all.insert(id)));
    }
}
