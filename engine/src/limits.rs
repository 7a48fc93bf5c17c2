//! Named limits and the checks of user input against them.

use orchestrix_log::EventRecord;

use crate::error::{Result, StoreError};

/// Default maximum size of one event (data plus metadata and attributes).
pub const EVENT_SIZE_MAX_DEFAULT: u64 = 16 * 1024 * 1024;
/// Maximum number of events in one append.
pub const BATCH_EVENT_COUNT_MAX: usize = 65_536;
/// Maximum total size of one append.
pub const BATCH_SIZE_MAX: u64 = 64 * 1024 * 1024;
/// Maximum length of a stream id in bytes.
pub const STREAM_ID_LEN_MAX: usize = 1024;
/// Maximum size of an event's metadata: keys and values together, each pair counting
/// [`METADATA_PAIR_OVERHEAD`] bytes more (so that empty pairs are not free).
pub const METADATA_SIZE_MAX: u64 = 64 * 1024;
/// What a metadata pair takes beyond its key and value: a length prefix for each.
pub const METADATA_PAIR_OVERHEAD: u64 = 2;
/// Maximum number of streams in one multi-stream append.
pub const STREAMS_PER_APPEND_MAX: usize = 1024;

const _: () = assert!(BATCH_SIZE_MAX < orchestrix_log::frame::FRAME_PAYLOAD_SIZE_MAX as u64);
const _: () = assert!(EVENT_SIZE_MAX_DEFAULT <= BATCH_SIZE_MAX);
const _: () = assert!(BATCH_EVENT_COUNT_MAX as u32 <= orchestrix_log::frame::FRAME_EVENT_COUNT_MAX);

/// Checks a stream id: non-empty UTF-8 (guaranteed by `&str`), at most
/// [`STREAM_ID_LEN_MAX`] bytes, no control characters.
pub fn check_stream_id(stream: &str) -> Result<()> {
    if stream.is_empty() {
        return Err(StoreError::InvalidStreamId {
            reason: "stream id is empty",
        });
    }
    if stream.len() > STREAM_ID_LEN_MAX {
        return Err(StoreError::TooLarge {
            what: "stream id",
            unit: "bytes",
            size: stream.len() as u64,
            max: STREAM_ID_LEN_MAX as u64,
        });
    }
    if stream.chars().any(char::is_control) {
        return Err(StoreError::InvalidStreamId {
            reason: "stream id contains a NUL or another control character",
        });
    }
    Ok(())
}

/// Checks an event type: non-empty.
pub fn check_event_type(event_type: &str) -> Result<()> {
    if event_type.is_empty() {
        return Err(StoreError::InvalidInput("event type is empty".into()));
    }
    Ok(())
}

fn opt_len(s: Option<&str>) -> u64 {
    s.map_or(0, |s| s.len() as u64)
}

/// Size of an event as counted against the event limit.
pub fn event_size(e: &EventRecord) -> u64 {
    16 + e.event_type.len() as u64
        + e.source.len() as u64
        + opt_len(e.subject.as_deref())
        + opt_len(e.data_content_type.as_deref())
        + opt_len(e.data_schema.as_deref())
        + opt_len(e.correlation_id.as_deref())
        + opt_len(e.causation_id.as_deref())
        + metadata_size(e)
        + e.data.len() as u64
}

fn metadata_size(e: &EventRecord) -> u64 {
    e.metadata
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64 + METADATA_PAIR_OVERHEAD)
        .sum()
}

/// Checks one event against the limits; returns its size.
pub fn check_event(e: &EventRecord, event_size_max: u64) -> Result<u64> {
    check_event_type(&e.event_type)?;
    let m = metadata_size(e);
    if m > METADATA_SIZE_MAX {
        return Err(StoreError::TooLarge {
            what: "event metadata",
            unit: "bytes",
            size: m,
            max: METADATA_SIZE_MAX,
        });
    }
    let size = event_size(e);
    if size > event_size_max {
        return Err(StoreError::TooLarge {
            what: "event",
            unit: "bytes",
            size,
            max: event_size_max,
        });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_with_metadata(pairs: Vec<(String, String)>) -> EventRecord {
        let mut e = crate::EventData::new("E", Vec::new());
        e.metadata = pairs;
        e.into_record()
    }

    #[test]
    fn empty_metadata_pairs_count_towards_the_limits() {
        let max = (METADATA_SIZE_MAX / METADATA_PAIR_OVERHEAD) as usize;
        let at_limit = event_with_metadata(vec![(String::new(), String::new()); max]);
        assert!(check_event(&at_limit, EVENT_SIZE_MAX_DEFAULT).is_ok());
        let past = event_with_metadata(vec![(String::new(), String::new()); max + 1]);
        assert!(matches!(
            check_event(&past, EVENT_SIZE_MAX_DEFAULT),
            Err(StoreError::TooLarge {
                what: "event metadata",
                unit: "bytes",
                ..
            })
        ));
        // And towards the event's size.
        let some = event_with_metadata(vec![(String::new(), String::new()); 600]);
        assert!(matches!(
            check_event(&some, 1024),
            Err(StoreError::TooLarge { what: "event", .. })
        ));
        let kv = event_with_metadata(vec![("k".into(), "vv".into())]);
        assert_eq!(metadata_size(&kv), 3 + METADATA_PAIR_OVERHEAD);
    }

    #[test]
    fn stream_ids() {
        assert!(check_stream_id("order-1").is_ok());
        assert!(check_stream_id("ünïcødé/stream").is_ok());
        assert!(check_stream_id("").is_err());
        assert!(check_stream_id("a\0b").is_err());
        assert!(check_stream_id("a\nb").is_err());
        assert!(check_stream_id(&"x".repeat(STREAM_ID_LEN_MAX)).is_ok());
        assert!(matches!(
            check_stream_id(&"x".repeat(STREAM_ID_LEN_MAX + 1)),
            Err(StoreError::TooLarge {
                size: 1025,
                max: 1024,
                ..
            })
        ));
    }
}
