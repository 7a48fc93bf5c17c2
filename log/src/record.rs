//! The payload of a frame: the events of one append, grouped by stream.
//!
//! Positions and versions are not stored per event: the frame header carries the first
//! position, each [`StreamBatch`] its first version, and events follow in order. Events of a
//! frame take consecutive positions in the order the batches appear.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};

/// One stored event, CloudEvents-shaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unique id (a UUID), also the idempotency key.
    pub id: [u8; 16],
    /// CloudEvents `type` (a `&'static str` is kept without a copy).
    pub event_type: Cow<'static, str>,
    /// CloudEvents `source` (a `&'static str` is kept without a copy).
    pub source: Cow<'static, str>,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// CloudEvents `time`, nanoseconds since the Unix epoch.
    pub time_unix_nanos: i64,
    /// CloudEvents `datacontenttype` (a `&'static str` is kept without a copy).
    pub data_content_type: Option<Cow<'static, str>>,
    /// CloudEvents `dataschema`.
    pub data_schema: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Causation id.
    pub causation_id: Option<String>,
    /// Free metadata, in insertion order.
    pub metadata: Vec<(String, String)>,
    /// The event's data, opaque bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// The events one append writes to one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamBatch {
    /// Stream id.
    pub stream: String,
    /// Version of the first event of the batch in its stream.
    pub first_version: u64,
    /// The events, in version order.
    pub events: Vec<EventRecord>,
}

/// A frame payload: one batch per stream touched by the append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FramePayload {
    /// The batches, in position order.
    pub batches: Vec<StreamBatch>,
}

#[derive(Serialize)]
struct StreamBatchOut<'a> {
    stream: &'a str,
    first_version: u64,
    events: &'a [EventRecord],
}

impl FramePayload {
    /// Number of events in all batches.
    pub fn event_count(&self) -> usize {
        self.batches.iter().map(|b| b.events.len()).sum()
    }

    /// Decodes a payload, checking that it holds exactly `event_count` events and nothing
    /// after them.
    pub fn decode(bytes: &[u8], event_count: u32) -> Result<FramePayload> {
        let (p, rest): (FramePayload, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| LogError::Payload(e.to_string()))?;
        if !rest.is_empty() {
            return Err(LogError::Payload(format!(
                "{} bytes after the last event",
                rest.len()
            )));
        }
        check_counts(
            p.event_count(),
            p.batches.iter().map(|b| (b.first_version, b.events.len())),
            event_count,
        )?;
        Ok(p)
    }
}

/// A stored event borrowed from a frame's payload: decoding one copies nothing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventView<'a> {
    /// Unique id (a UUID), also the idempotency key.
    pub id: [u8; 16],
    /// CloudEvents `type`.
    pub event_type: &'a str,
    /// CloudEvents `source`.
    pub source: &'a str,
    /// CloudEvents `subject`.
    #[serde(borrow)]
    pub subject: Option<&'a str>,
    /// CloudEvents `time`, nanoseconds since the Unix epoch.
    pub time_unix_nanos: i64,
    /// CloudEvents `datacontenttype`.
    #[serde(borrow)]
    pub data_content_type: Option<&'a str>,
    /// CloudEvents `dataschema`.
    #[serde(borrow)]
    pub data_schema: Option<&'a str>,
    /// Correlation id.
    #[serde(borrow)]
    pub correlation_id: Option<&'a str>,
    /// Causation id.
    #[serde(borrow)]
    pub causation_id: Option<&'a str>,
    /// Free metadata, in insertion order.
    #[serde(borrow)]
    pub metadata: Vec<(&'a str, &'a str)>,
    /// The event's data.
    pub data: &'a [u8],
}

/// The events of one stream in a frame, borrowed from the payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StreamBatchView<'a> {
    /// Stream id.
    pub stream: &'a str,
    /// Version of the first event of the batch in its stream.
    pub first_version: u64,
    /// The events, in version order.
    #[serde(borrow)]
    pub events: Vec<EventView<'a>>,
}

/// A frame payload borrowed from the bytes it was decoded from, as strings and slices: for
/// tools and tests that want the fields by name. The store's read paths use [`FrameSpans`]
/// (no lists per frame); the serde derive is the reference the hand-written decoder is tested
/// against.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FrameView<'a> {
    /// The batches, in position order.
    #[serde(borrow)]
    pub batches: Vec<StreamBatchView<'a>>,
}

impl<'a> FrameView<'a> {
    /// Number of events in all batches.
    pub fn event_count(&self) -> usize {
        self.batches.iter().map(|b| b.events.len()).sum()
    }

    /// Decodes a payload in place, checking that it holds exactly `event_count` events and
    /// nothing after them: [`FrameSpans::decode`], then the fields sliced out. It accepts
    /// exactly what [`FramePayload::decode`] accepts (the `frame_decoder` fuzz target and a
    /// property test check both).
    pub fn decode(bytes: &'a [u8], event_count: u32) -> Result<FrameView<'a>> {
        let mut spans = FrameSpans::default();
        spans.decode(bytes, event_count)?;
        let text = |s: Span| s.text(bytes).unwrap_or_default();
        let opt = |s: Span| s.slice(bytes).map(|b| utf8(b).unwrap_or_default());
        let batches = spans
            .batches
            .iter()
            .map(|b| StreamBatchView {
                stream: text(b.stream),
                first_version: b.first_version,
                events: spans
                    .events_of(b)
                    .iter()
                    .map(|e| EventView {
                        id: e.id,
                        event_type: text(e.event_type),
                        source: text(e.source),
                        subject: opt(e.subject),
                        time_unix_nanos: e.time_unix_nanos,
                        data_content_type: opt(e.data_content_type),
                        data_schema: opt(e.data_schema),
                        correlation_id: opt(e.correlation_id),
                        causation_id: opt(e.causation_id),
                        metadata: e
                            .metadata
                            .iter()
                            .map(|&(k, v)| (text(k), text(v)))
                            .collect(),
                        data: e.data.slice(bytes).unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect();
        Ok(FrameView { batches })
    }
}

/// Where a field lies in a frame's payload: `len` bytes from `start`, or, with `len ==`
/// [`Span::ABSENT`], an optional field that is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first byte in the payload.
    pub start: u32,
    /// Length in bytes, or [`Span::ABSENT`].
    pub len: u32,
}

impl Span {
    /// The `len` of a field that is not set.
    pub const ABSENT: u32 = u32::MAX;
    /// A field that is not set.
    pub const NONE: Span = Span {
        start: 0,
        len: Span::ABSENT,
    };

    /// The field's bytes in `payload`; `None` when it is not set (or lies outside `payload`).
    #[inline]
    pub fn slice(self, payload: &[u8]) -> Option<&[u8]> {
        if self.len == Span::ABSENT {
            return None;
        }
        let start = self.start as usize;
        payload.get(start..start.checked_add(self.len as usize)?)
    }

    /// The field as text: [`Span::slice`], checked to be UTF-8 (the decoder checked it
    /// already; the bytes are checked again wherever they are read, as they may be a map of a
    /// file that something else changed).
    #[inline]
    pub fn text(self, payload: &[u8]) -> Option<&str> {
        self.slice(payload).and_then(utf8)
    }
}

/// One event of a frame as the places of its fields in the payload (text fields checked to
/// be UTF-8 when decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpans {
    /// Unique id (a UUID).
    pub id: [u8; 16],
    /// CloudEvents `type`.
    pub event_type: Span,
    /// CloudEvents `source`.
    pub source: Span,
    /// CloudEvents `subject` (optional).
    pub subject: Span,
    /// CloudEvents `time`, nanoseconds since the Unix epoch.
    pub time_unix_nanos: i64,
    /// CloudEvents `datacontenttype` (optional).
    pub data_content_type: Span,
    /// CloudEvents `dataschema` (optional).
    pub data_schema: Span,
    /// Correlation id (optional).
    pub correlation_id: Span,
    /// Causation id (optional).
    pub causation_id: Span,
    /// Free metadata, keys and values, in insertion order.
    pub metadata: Vec<(Span, Span)>,
    /// The event's data.
    pub data: Span,
}

impl EventSpans {
    /// An event with no fields set, filled in place by the decoder.
    const EMPTY: EventSpans = EventSpans {
        id: [0; 16],
        event_type: Span::NONE,
        source: Span::NONE,
        subject: Span::NONE,
        time_unix_nanos: 0,
        data_content_type: Span::NONE,
        data_schema: Span::NONE,
        correlation_id: Span::NONE,
        causation_id: Span::NONE,
        metadata: Vec::new(),
        data: Span::NONE,
    };
}

/// One stream batch of a frame: its stream id's place, its first version, and which of the
/// frame's events it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSpans {
    /// Stream id.
    pub stream: Span,
    /// Version of the first event of the batch in its stream.
    pub first_version: u64,
    /// The batch's events: indexes into [`FrameSpans::events`].
    pub events: std::ops::Range<usize>,
}

/// A frame's payload decoded into the places of its fields: the read path's form. Nothing is
/// copied out of the payload, and one `FrameSpans` decodes frame after frame into the same
/// two lists (no allocation per frame once they have grown).
///
/// ```
/// use orchestrix_log::record::{encode_payload, FrameSpans};
/// use orchestrix_log::EventRecord;
///
/// let event = EventRecord {
///     id: [7; 16],
///     event_type: "Placed".into(),
///     source: "shop".into(),
///     subject: None,
///     time_unix_nanos: 0,
///     data_content_type: Some("application/json".into()),
///     data_schema: None,
///     correlation_id: None,
///     causation_id: None,
///     metadata: Vec::new(),
///     data: b"{}".to_vec(),
/// };
/// let mut payload = Vec::new();
/// encode_payload(&mut payload, [("order-1", 0, std::slice::from_ref(&event))].into_iter())?;
/// let mut spans = FrameSpans::default();
/// spans.decode(&payload, 1)?;
/// let batch = &spans.batches[0];
/// assert_eq!(batch.stream.slice(&payload), Some(&b"order-1"[..]));
/// let e = &spans.events_of(batch)[0];
/// assert_eq!(e.event_type.slice(&payload), Some(&b"Placed"[..]));
/// assert_eq!(e.data.slice(&payload), Some(&b"{}"[..]));
/// # Ok::<(), orchestrix_log::LogError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameSpans {
    /// The batches, in position order.
    pub batches: Vec<BatchSpans>,
    /// The events of all batches, in position order.
    pub events: Vec<EventSpans>,
}

impl FrameSpans {
    /// Decodes `bytes` (a frame's payload) in place of what this held, checking that it holds
    /// exactly `event_count` events and nothing after them, and that every text field is
    /// UTF-8. Hand-written for the read path; it accepts exactly what
    /// [`FramePayload::decode`] accepts (the `frame_decoder` fuzz target and a property test
    /// check both, through [`FrameView::decode`], which is built on it).
    pub fn decode(&mut self, bytes: &[u8], event_count: u32) -> Result<()> {
        self.batches.clear();
        self.events.clear();
        if bytes.len() >= Span::ABSENT as usize {
            return Err(LogError::Payload("payload too large for a frame".into()));
        }
        Reader {
            buf: bytes,
            total: bytes.len(),
        }
        .frame(self)
        .map_err(|why| LogError::Payload(why.into()))?;
        check_counts(
            self.events.len(),
            self.batches
                .iter()
                .map(|b| (b.first_version, b.events.len())),
            event_count,
        )
    }

    /// The events of `batch` (one of [`FrameSpans::batches`]).
    pub fn events_of(&self, batch: &BatchSpans) -> &[EventSpans] {
        self.events.get(batch.events.clone()).unwrap_or_default()
    }
}

/// Smallest encoding of an event: the id, one byte per other field.
pub(crate) const EVENT_BYTES_MIN: usize = 16 + 10;
/// Smallest encoding of a stream batch: an empty stream id, a version and an event count.
const BATCH_BYTES_MIN: usize = 3;

/// A cursor over postcard-encoded bytes, decoding the payload's types the way postcard does:
/// LEB128 varints (up to 10 bytes, the last holding at most 1 bit), zigzag for `i64`, a varint
/// length before strings, byte strings and sequences, a 0/1 tag before options, arrays raw.
struct Reader<'a> {
    buf: &'a [u8],
    /// Length of the whole payload (`buf` is what is left of it).
    total: usize,
}

type Step<T> = std::result::Result<T, &'static str>;

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Step<u8> {
        let (&b, rest) = self.buf.split_first().ok_or("payload ends early")?;
        self.buf = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        if n > self.buf.len() {
            return Err("payload ends early");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Most varints here (lengths, flags, small versions) are one byte, and most others two
    /// (data lengths up to 16 KiB): those cases are inlined where a varint is read, the
    /// others (event times) are not.
    #[inline]
    fn varint(&mut self) -> Step<u64> {
        match *self.buf {
            [b, ref rest @ ..] if b < 0x80 => {
                self.buf = rest;
                Ok(u64::from(b))
            }
            [b, c, ref rest @ ..] if c < 0x80 => {
                self.buf = rest;
                Ok(u64::from(b & 0x7f) | u64::from(c) << 7)
            }
            _ => self.long_varint(),
        }
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Step<u64> {
        // With ten bytes left (a varint's most), no read can run out: a fixed-size chunk
        // lets the loop run without a bounds check or an early-end check per byte.
        if let Some(chunk) = self.buf.first_chunk::<10>() {
            let mut out = 0u64;
            for (i, &b) in chunk.iter().enumerate() {
                out |= u64::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    if i == 9 && b > 1 {
                        return Err("varint out of range");
                    }
                    self.buf = self.buf.get(i + 1..).unwrap_or_default();
                    return Ok(out);
                }
            }
            return Err("varint out of range");
        }
        let mut out = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == 9 && b > 1 {
                    return Err("varint out of range");
                }
                return Ok(out);
            }
        }
        Err("varint out of range")
    }

    fn len(&mut self) -> Step<usize> {
        usize::try_from(self.varint()?).map_err(|_| "length out of range")
    }

    /// A text field: its place, once its bytes are checked to be UTF-8.
    fn text(&mut self) -> Step<Span> {
        let n = self.len()?;
        // Below `total` (< u32::MAX, checked by the caller): the casts cannot truncate.
        let start = (self.total - self.buf.len()) as u32;
        utf8(self.take(n)?).ok_or("string is not UTF-8")?;
        Ok(Span {
            start,
            len: n as u32,
        })
    }

    fn opt_text(&mut self) -> Step<Span> {
        match self.byte()? {
            0 => Ok(Span::NONE),
            1 => self.text(),
            _ => Err("bad option tag"),
        }
    }

    /// Decodes one event into `e`, field by field in place (no event built aside and moved
    /// into the list).
    fn event(&mut self, e: &mut EventSpans) -> Step<()> {
        e.id = *self
            .take(16)?
            .first_chunk::<16>()
            .ok_or("payload ends early")?;
        e.event_type = self.text()?;
        e.source = self.text()?;
        e.subject = self.opt_text()?;
        let z = self.varint()?;
        e.time_unix_nanos = (z >> 1) as i64 ^ -((z & 1) as i64);
        e.data_content_type = self.opt_text()?;
        e.data_schema = self.opt_text()?;
        e.correlation_id = self.opt_text()?;
        e.causation_id = self.opt_text()?;
        let n = self.len()?;
        if n > 0 {
            e.metadata.reserve(n.min(self.buf.len() / 2));
            for _ in 0..n {
                e.metadata.push((self.text()?, self.text()?));
            }
        }
        let n = self.len()?;
        e.data = Span {
            start: (self.total - self.buf.len()) as u32,
            len: n as u32,
        };
        self.take(n)?;
        Ok(())
    }

    fn frame(mut self, out: &mut FrameSpans) -> Step<()> {
        let n = self.len()?;
        out.batches.reserve(n.min(self.buf.len() / BATCH_BYTES_MIN));
        for _ in 0..n {
            let stream = self.text()?;
            let first_version = self.varint()?;
            let m = self.len()?;
            out.events.reserve(m.min(self.buf.len() / EVENT_BYTES_MIN));
            let first = out.events.len();
            for _ in 0..m {
                out.events.push(EventSpans::EMPTY);
                // The slot just pushed (`last_mut` cannot miss it).
                let e = out.events.last_mut().ok_or("no event slot")?;
                self.event(e)?;
            }
            out.batches.push(BatchSpans {
                stream,
                first_version,
                events: first..out.events.len(),
            });
        }
        if !self.buf.is_empty() {
            return Err("bytes after the last event");
        }
        Ok(())
    }
}

/// `bytes` as text if they are UTF-8. Most text fields (types, sources, content types,
/// stream ids) are short ASCII strings, which `ascii` settles in a few instructions;
/// `std::str::from_utf8` walks short inputs byte by byte.
#[inline]
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    if ascii(bytes) {
        // SAFETY: ASCII bytes are valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// Whether `b` is ASCII. Up to 16 bytes it tests two overlapping words (the first and the
/// last 8, 4 or 1 bytes: together they cover the slice) instead of `is_ascii`'s alignment
/// steps and byte loop for short inputs; longer slices go to `is_ascii`.
#[inline]
fn ascii(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if let (Some(head), Some(tail)) = (b.first_chunk::<8>(), b.last_chunk::<8>()) {
        if b.len() > 16 {
            return b.is_ascii();
        }
        return (u64::from_le_bytes(*head) | u64::from_le_bytes(*tail)) & HIGH == 0;
    }
    if let (Some(head), Some(tail)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
        return (u32::from_le_bytes(*head) | u32::from_le_bytes(*tail)) & HIGH as u32 == 0;
    }
    b.iter().fold(0u8, |x, &c| x | c) < 0x80
}

/// Checks a decoded payload's counts against its header, and that each batch (its first
/// version and event count) is not empty and ends below `u64::MAX`: its versions, and the
/// version after them, are numbers a stream can have.
fn check_counts(
    total: usize,
    per_batch: impl Iterator<Item = (u64, usize)>,
    event_count: u32,
) -> Result<()> {
    if total != event_count as usize {
        return Err(LogError::Payload(format!(
            "payload holds {total} events, header says {event_count}"
        )));
    }
    for (first_version, n) in per_batch {
        if n == 0 {
            return Err(LogError::Payload("a stream batch without events".into()));
        }
        if first_version.checked_add(n as u64).is_none() {
            return Err(LogError::Payload(format!(
                "a stream batch of {n} events from version {first_version} runs past the last version"
            )));
        }
    }
    Ok(())
}

/// Encodes a payload from borrowed batches `(stream, first_version, events)` straight into
/// `out`, without copying the events.
pub fn encode_payload<'a>(
    out: &mut Vec<u8>,
    batches: impl ExactSizeIterator<Item = (&'a str, u64, &'a [EventRecord])>,
) -> Result<()> {
    let refs: Vec<StreamBatchOut<'a>> = batches
        .map(|(stream, first_version, events)| StreamBatchOut {
            stream,
            first_version,
            events,
        })
        .collect();
    let taken = std::mem::take(out);
    match postcard::to_extend(&(refs,), taken) {
        Ok(v) => {
            *out = v;
            Ok(())
        }
        Err(e) => Err(LogError::Payload(e.to_string())),
    }
}

/// Encodes events as a stream batch's `events` field (their count, then each event), so that
/// appenders can encode on their own threads; [`encode_payload_encoded`] assembles a payload
/// from such parts.
///
/// The bytes are postcard's for `&[EventRecord]` (a test holds them equal), written field by
/// field here: serde's generic serializer costs several times more per field, and this runs
/// for every event appended.
pub fn encode_events(events: &[EventRecord]) -> Vec<u8> {
    // Room for all of it up front: growing the buffer from empty would copy it several times.
    let size: usize = events.iter().map(size_hint).sum();
    let mut out = Vec::with_capacity(size + 8);
    put_varint(&mut out, events.len() as u64);
    for e in events {
        out.extend_from_slice(&e.id);
        put_text(&mut out, &e.event_type);
        put_text(&mut out, &e.source);
        put_opt_text(&mut out, e.subject.as_deref());
        // i64 as postcard writes it: zigzag, then a varint.
        let t = e.time_unix_nanos;
        put_varint(&mut out, ((t << 1) ^ (t >> 63)) as u64);
        put_opt_text(&mut out, e.data_content_type.as_deref());
        put_opt_text(&mut out, e.data_schema.as_deref());
        put_opt_text(&mut out, e.correlation_id.as_deref());
        put_opt_text(&mut out, e.causation_id.as_deref());
        put_varint(&mut out, e.metadata.len() as u64);
        for (k, v) in &e.metadata {
            put_text(&mut out, k);
            put_text(&mut out, v);
        }
        put_varint(&mut out, e.data.len() as u64);
        out.extend_from_slice(&e.data);
    }
    out
}

/// A LEB128 varint, as postcard writes lengths and unsigned integers.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A string: its length, then its bytes.
fn put_text(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// An option: a 0 tag, or a 1 tag and the string.
fn put_opt_text(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_text(out, s);
        }
    }
}

/// At least the encoded size of `e` (lengths and varints take at most this much more).
fn size_hint(e: &EventRecord) -> usize {
    let text = |s: Option<&str>| s.map_or(1, |s| s.len() + 6);
    let metadata: usize = e.metadata.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
    16 + 10
        + e.event_type.len()
        + e.source.len()
        + 10
        + text(e.subject.as_deref())
        + text(e.data_content_type.as_deref())
        + text(e.data_schema.as_deref())
        + text(e.correlation_id.as_deref())
        + text(e.causation_id.as_deref())
        + metadata
        + 5
        + e.data.len()
        + 5
}

/// Encodes a payload from batches `(stream, first_version, events)` whose events were encoded
/// by [`encode_events`]. The bytes are the same as [`encode_payload`]'s for the same batches.
pub fn encode_payload_encoded<'a>(
    out: &mut Vec<u8>,
    batches: impl ExactSizeIterator<Item = (&'a str, u64, &'a [u8])>,
) -> Result<()> {
    put_varint(out, batches.len() as u64);
    for (stream, first_version, events) in batches {
        put_text(out, stream);
        put_varint(out, first_version);
        out.extend_from_slice(events);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u8) -> EventRecord {
        EventRecord {
            id: [n; 16],
            event_type: "Created".into(),
            source: "test".into(),
            subject: Some("s".into()),
            time_unix_nanos: 1_700_000_000_000_000_000,
            data_content_type: Some("application/json".into()),
            data_schema: None,
            correlation_id: None,
            causation_id: Some("c".into()),
            metadata: vec![("k".into(), "v".into())],
            data: br#"{"a":1}"#.to_vec(),
        }
    }

    /// The hand-written event encoder writes exactly postcard's bytes: empty and long
    /// (multi-byte length) fields, every option set and unset, negative and extreme times,
    /// metadata, and no events at all.
    #[test]
    fn event_encoding_is_postcards() {
        let long = "x".repeat(300);
        let mut events = vec![ev(1)];
        let mut e = ev(2);
        e.event_type = long.clone().into();
        e.source = "".into();
        e.subject = None;
        e.time_unix_nanos = -1;
        e.data_content_type = None;
        e.data_schema = Some(long.clone());
        e.correlation_id = Some("\u{1f600}".into());
        e.causation_id = None;
        e.metadata = vec![(long.clone(), String::new()), ("a".into(), "b".into())];
        e.data = vec![7; 20_000];
        events.push(e);
        for t in [i64::MIN, i64::MAX, 0, 63, -64, 64, 1 << 40] {
            let mut e = ev(3);
            e.time_unix_nanos = t;
            e.metadata.clear();
            e.data.clear();
            events.push(e);
        }
        for n in 0..=events.len() {
            let want = postcard::to_allocvec(&events[..n]).unwrap();
            assert_eq!(encode_events(&events[..n]), want, "{n} events");
        }
    }

    #[test]
    fn borrowed_encoding_decodes_as_owned() {
        let a = [ev(1), ev(2)];
        let b = [ev(3)];
        let mut out = vec![9u8];
        encode_payload(
            &mut out,
            [("a", 0u64, &a[..]), ("b", 5u64, &b[..])].into_iter(),
        )
        .unwrap();
        assert_eq!(out[0], 9);
        let p = FramePayload::decode(&out[1..], 3).unwrap();
        assert_eq!(p.batches.len(), 2);
        assert_eq!(p.batches[0].stream, "a");
        assert_eq!(p.batches[1].first_version, 5);
        assert_eq!(p.batches[0].events[1], ev(2));
        assert!(FramePayload::decode(&out[1..], 2).is_err());

        let v = FrameView::decode(&out[1..], 3).unwrap();
        assert_eq!(v.batches[1].stream, "b");
        let e = &v.batches[0].events[1];
        let owned = ev(2);
        assert_eq!(e.id, owned.id);
        assert_eq!(e.event_type, owned.event_type);
        assert_eq!(e.subject, owned.subject.as_deref());
        assert_eq!(e.causation_id, owned.causation_id.as_deref());
        assert_eq!(e.metadata, vec![("k", "v")]);
        assert_eq!(e.data, owned.data.as_slice());
        assert!(FrameView::decode(&out[1..], 4).is_err());
    }

    /// A span gives its bytes only when set and inside the payload, whatever its numbers.
    #[test]
    fn spans_slice_only_inside_the_payload() {
        let p = b"0123456789";
        let span = |start, len| Span { start, len };
        assert_eq!(span(2, 3).slice(p), Some(&b"234"[..]));
        assert_eq!(span(10, 0).slice(p), Some(&b""[..]));
        assert_eq!(span(0, 10).slice(p), Some(&p[..]));
        assert_eq!(Span::NONE.slice(p), None);
        assert_eq!(span(5, Span::ABSENT).slice(p), None);
        assert_eq!(span(8, 3).slice(p), None);
        assert_eq!(span(11, 0).slice(p), None);
        assert_eq!(span(u32::MAX, u32::MAX - 1).slice(p), None);
    }

    /// One `FrameSpans` decoding frame after frame (as reads and scans use it) gives what a
    /// fresh one gives, also after a payload it refused, and its spans read back the fields.
    #[test]
    fn reused_spans_decode_like_fresh_ones() {
        let payload = |batches: &[(&str, u64, &[EventRecord])]| {
            let mut out = Vec::new();
            encode_payload(&mut out, batches.iter().copied()).unwrap();
            out
        };
        let big = payload(&[("a", 0, &[ev(1), ev(2), ev(3)]), ("bb", 9, &[ev(4)])]);
        let small = payload(&[("c", 5, &[ev(5)])]);
        let mut reused = FrameSpans::default();
        for (bytes, n) in [(&big, 4), (&small, 1), (&big, 4), (&big, 5), (&small, 1)] {
            let mut fresh = FrameSpans::default();
            let want = fresh.decode(bytes, n).map(|()| fresh);
            let got = reused.decode(bytes, n).map(|()| reused.clone());
            assert_eq!(got.is_ok(), want.is_ok());
            if let (Ok(got), Ok(want)) = (got, want) {
                assert_eq!(got, want);
            }
        }
        reused.decode(&big, 4).unwrap();
        let b = &reused.batches[1];
        assert_eq!(b.stream.slice(&big), Some(&b"bb"[..]));
        assert_eq!(b.first_version, 9);
        let e = &reused.events_of(b)[0];
        let owned = ev(4);
        assert_eq!(e.id, owned.id);
        assert_eq!(e.event_type.slice(&big), Some(owned.event_type.as_bytes()));
        assert_eq!(e.subject.slice(&big), Some(&b"s"[..]));
        assert_eq!(e.data_schema.slice(&big), None);
        assert_eq!(e.time_unix_nanos, owned.time_unix_nanos);
        assert_eq!(
            e.metadata
                .iter()
                .map(|&(k, v)| (k.slice(&big), v.slice(&big)))
                .collect::<Vec<_>>(),
            vec![(Some(&b"k"[..]), Some(&b"v"[..]))]
        );
        assert_eq!(e.data.slice(&big), Some(owned.data.as_slice()));
        assert_eq!(reused.events_of(&reused.batches[0]).len(), 3);
    }

    /// The hand-written in-place decoder agrees with postcard's on valid payloads, on every
    /// truncation and on single-byte changes: same verdict, same contents.
    #[test]
    fn in_place_decoder_agrees_with_postcard() {
        let mut full = ev(7);
        full.subject = None;
        full.time_unix_nanos = -5;
        full.metadata = vec![("a".into(), "".into()), ("é".into(), "x".into())];
        // Fields long enough for two-byte length prefixes.
        let mut long = ev(5);
        long.subject = Some("ü".repeat(100));
        long.correlation_id = Some("x".repeat(300));
        let a = [ev(1), full, ev(3)];
        let b = [ev(4), long];
        let mut out = Vec::new();
        encode_payload(
            &mut out,
            [("a", 0u64, &a[..]), ("bb", 1 << 40, &b[..])].into_iter(),
        )
        .unwrap();
        let same = |bytes: &[u8], n: u32| {
            let serde: std::result::Result<FrameView<'_>, _> = postcard::take_from_bytes(bytes)
                .and_then(|(v, rest): (FrameView<'_>, &[u8])| {
                    if rest.is_empty() {
                        Ok(v)
                    } else {
                        Err(postcard::Error::DeserializeUnexpectedEnd)
                    }
                });
            let serde = serde.ok().filter(|v| {
                v.event_count() == n as usize
                    && v.batches.iter().all(|b| {
                        !b.events.is_empty()
                            && b.first_version.checked_add(b.events.len() as u64).is_some()
                    })
            });
            let ours = FrameView::decode(bytes, n).ok();
            assert_eq!(ours, serde, "{bytes:?}");
        };
        same(&out, 5);
        assert!(FrameView::decode(&out, 5).is_ok());
        for cut in 0..out.len() {
            same(&out[..cut], 5);
        }
        let mut longer = out.clone();
        longer.push(0);
        same(&longer, 5);
        for i in 0..out.len() {
            for x in [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff] {
                let mut m = out.clone();
                m[i] = x;
                same(&m, 5);
            }
        }
    }

    /// A batch whose versions would run to `u64::MAX` (or past it) is refused by both
    /// decoders: a stream's versions, and the one after them, must be numbers.
    #[test]
    fn batches_end_below_the_last_version() {
        let events = [ev(1), ev(2)];
        for (first, ok) in [
            (u64::MAX - 2, true),
            (u64::MAX - 1, false),
            (u64::MAX, false),
            (0, true),
        ] {
            let mut out = Vec::new();
            encode_payload(&mut out, std::iter::once(("s", first, &events[..]))).unwrap();
            assert_eq!(
                FramePayload::decode(&out, 2).is_ok(),
                ok,
                "postcard, from {first}"
            );
            assert_eq!(
                FrameView::decode(&out, 2).is_ok(),
                ok,
                "in place, from {first}"
            );
            let mut spans = FrameSpans::default();
            assert_eq!(spans.decode(&out, 2).is_ok(), ok, "spans, from {first}");
        }
    }

    /// The text check accepts exactly what `std::str::from_utf8` accepts, on the ASCII fast
    /// path and off it.
    #[test]
    fn utf8_agrees_with_std() {
        let cases: [&[u8]; 9] = [
            b"",
            b"BenchEvent",
            b"application/json",
            "caf\u{e9} \u{1f600}".as_bytes(),
            b"\xff",
            b"abcdefgh\x80",
            b"\xc3",
            b"ok until the last byte\xe2\x82",
            &[b'a'; 100],
        ];
        for c in cases {
            assert_eq!(utf8(c), std::str::from_utf8(c).ok(), "{c:?}");
        }
        // Every single byte, at every offset of ASCII runs of every length up to 33 (the
        // short paths of 0-3, 4-7 and 8-16 bytes, and word boundaries beyond).
        for len in 1..34 {
            for b in 0..=255u8 {
                for at in 0..len {
                    let mut v = vec![b'x'; len];
                    v[at] = b;
                    assert_eq!(
                        utf8(&v),
                        std::str::from_utf8(&v).ok(),
                        "byte {b} at {at}/{len}"
                    );
                }
            }
        }
        // A two-byte character at every place of a short run.
        for len in 2..20 {
            for at in 0..len - 1 {
                let mut v = vec![b'y'; len];
                v[at..at + 2].copy_from_slice("\u{e9}".as_bytes());
                assert_eq!(
                    utf8(&v),
                    std::str::from_utf8(&v).ok(),
                    "two bytes at {at}/{len}"
                );
            }
        }
    }

    /// Varints of every length decode as postcard encodes them, with and without ten bytes
    /// following (the word path and the byte-at-a-time path), and out-of-range ones fail.
    #[test]
    fn varints_of_every_length_decode() {
        let mut values = vec![0u64, 1, 127, 128, 255, 300, u64::MAX, u64::MAX - 1, 1 << 63];
        for k in 1..64 {
            values.extend([(1u64 << k) - 1, 1u64 << k, (1u64 << k) + 1]);
        }
        for &v in &values {
            let mut enc = postcard::to_allocvec(&v).unwrap();
            for tail in [0usize, 10] {
                let mut buf = enc.clone();
                buf.extend(std::iter::repeat_n(0x55, tail));
                let mut r = Reader {
                    buf: &buf,
                    total: buf.len(),
                };
                assert_eq!(r.varint(), Ok(v), "{v} with {tail} bytes after");
                assert_eq!(r.buf.len(), tail);
            }
            // Cut short: fails whichever path reads it.
            enc.pop();
            if !enc.is_empty() {
                assert!(Reader {
                    buf: &enc,
                    total: enc.len()
                }
                .varint()
                .is_err());
            }
        }
        // Eleven continuation bytes, or a tenth byte above 1: out of range on both paths.
        for bad in [vec![0xffu8; 11], [vec![0xff; 9], vec![0x02]].concat()] {
            for tail in [0usize, 10] {
                let mut buf = bad.clone();
                buf.extend(std::iter::repeat_n(0x00, tail));
                assert_eq!(
                    Reader {
                        buf: &buf,
                        total: buf.len()
                    }
                    .varint(),
                    Err("varint out of range")
                );
            }
        }
    }

    #[test]
    fn pre_encoded_events_give_the_same_bytes() {
        let a = [ev(1), ev(2)];
        let b: Vec<EventRecord> = (3..200).map(ev).collect();
        let mut direct = Vec::new();
        encode_payload(
            &mut direct,
            [("a", 0u64, &a[..]), ("stream-b", 300u64, &b[..])].into_iter(),
        )
        .unwrap();
        let (ea, eb) = (encode_events(&a), encode_events(&b));
        let mut assembled = vec![7u8];
        encode_payload_encoded(
            &mut assembled,
            [("a", 0u64, &ea[..]), ("stream-b", 300u64, &eb[..])].into_iter(),
        )
        .unwrap();
        assert_eq!(assembled[0], 7);
        assert_eq!(&assembled[1..], &direct[..]);
        let p = FramePayload::decode(&assembled[1..], 199).unwrap();
        assert_eq!(p.batches[1].events, b);
    }
}
