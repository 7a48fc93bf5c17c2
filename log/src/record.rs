//! The payload of a frame: the events of one append, grouped by stream.
//!
//! Positions and versions are not stored per event: the frame header carries the first
//! position, each [`StreamBatch`] its first version, and events follow in order. Events of a
//! frame take consecutive positions in the order the batches appear.

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};

/// One stored event, CloudEvents-shaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unique id (a UUID), also the idempotency key.
    pub id: [u8; 16],
    /// CloudEvents `type`.
    pub event_type: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// CloudEvents `time`, nanoseconds since the Unix epoch.
    pub time_unix_nanos: i64,
    /// CloudEvents `datacontenttype`.
    pub data_content_type: Option<String>,
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

    /// Decodes a payload, checking that it holds exactly `event_count` events.
    pub fn decode(bytes: &[u8], event_count: u32) -> Result<FramePayload> {
        let p: FramePayload =
            postcard::from_bytes(bytes).map_err(|e| LogError::Payload(e.to_string()))?;
        check_counts(
            p.event_count(),
            p.batches.iter().map(|b| b.events.len()),
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

/// A frame payload borrowed from the bytes it was decoded from: the read path's form of
/// [`FramePayload`] (one allocation per stream batch instead of several per event).
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

    /// Decodes a payload, checking that it holds exactly `event_count` events.
    pub fn decode(bytes: &'a [u8], event_count: u32) -> Result<FrameView<'a>> {
        let p: FrameView<'a> =
            postcard::from_bytes(bytes).map_err(|e| LogError::Payload(e.to_string()))?;
        check_counts(
            p.event_count(),
            p.batches.iter().map(|b| b.events.len()),
            event_count,
        )?;
        Ok(p)
    }
}

fn check_counts(
    total: usize,
    mut per_batch: impl Iterator<Item = usize>,
    event_count: u32,
) -> Result<()> {
    if total != event_count as usize || per_batch.any(|n| n == 0) {
        return Err(LogError::Payload(format!(
            "payload holds {total} events, header says {event_count}"
        )));
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
pub fn encode_events(events: &[EventRecord]) -> Result<Vec<u8>> {
    // Room for all of it up front: growing the buffer from empty would copy it several times.
    let size: usize = events.iter().map(size_hint).sum();
    put(Vec::with_capacity(size + 8), events)
}

/// At least the encoded size of `e` (lengths and varints take at most this much more).
fn size_hint(e: &EventRecord) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(1, |s| s.len() + 6);
    let metadata: usize = e.metadata.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
    16 + 10
        + e.event_type.len()
        + e.source.len()
        + 10
        + text(&e.subject)
        + text(&e.data_content_type)
        + text(&e.data_schema)
        + text(&e.correlation_id)
        + text(&e.causation_id)
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
    let mut buf = put(std::mem::take(out), &batches.len())?;
    for (stream, first_version, events) in batches {
        buf = put(buf, stream)?;
        buf = put(buf, &first_version)?;
        buf.extend_from_slice(events);
    }
    *out = buf;
    Ok(())
}

/// Appends `value` to `out` as postcard encodes it.
fn put<T: Serialize + ?Sized>(out: Vec<u8>, value: &T) -> Result<Vec<u8>> {
    postcard::to_extend(value, out).map_err(|e| LogError::Payload(e.to_string()))
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
        let (ea, eb) = (encode_events(&a).unwrap(), encode_events(&b).unwrap());
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
