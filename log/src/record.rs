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
struct StreamBatchRef<'a> {
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
        if p.event_count() != event_count as usize || p.batches.iter().any(|b| b.events.is_empty())
        {
            return Err(LogError::Payload(format!(
                "payload holds {} events, header says {event_count}",
                p.event_count()
            )));
        }
        Ok(p)
    }
}

/// Encodes a payload from borrowed batches `(stream, first_version, events)` straight into
/// `out`, without copying the events.
pub fn encode_payload<'a>(
    out: &mut Vec<u8>,
    batches: impl ExactSizeIterator<Item = (&'a str, u64, &'a [EventRecord])>,
) -> Result<()> {
    let refs: Vec<StreamBatchRef<'a>> = batches
        .map(|(stream, first_version, events)| StreamBatchRef {
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
    }
}
