//! Reads through memory-mapped segments return exactly what reads with `pread` return, and
//! what was appended: every field, while the active segment grows under its map, across
//! rolls, and for frames larger than a segment (which outgrow the map's usual length).

use orchestrix::{
    Direction, EventData, ExpectedVersion, Options, ReadFilter, RecordedEvent, Store,
};

const STREAMS: usize = 5;

/// A deterministic event with every optional field set on some events, and data from a few
/// bytes to well over the 4 KiB segment size.
fn event(n: usize) -> EventData {
    let size = match n % 7 {
        0 => 9_000,
        1 => 1,
        _ => 40 + n * 13 % 700,
    };
    let data: Vec<u8> = (0..size).map(|i| (i * 31 + n) as u8).collect();
    let mut e = EventData::new(format!("Type{}", n % 3), data).with_time_unix_nanos(n as i64);
    if n.is_multiple_of(2) {
        e = e
            .with_subject(format!("subject-{n}"))
            .with_correlation_id(format!("corr-{n}"))
            .with_metadata("k", format!("v{n}"))
            .with_metadata("empty", "");
    }
    if n.is_multiple_of(3) {
        e = e.with_causation_id("cause").with_source(format!("src-{n}"));
        e.data_content_type = Some("application/octet-stream".into());
        e.data_schema = Some(format!("schema-{n}"));
    }
    e
}

fn same_as_appended(got: &RecordedEvent, want: &EventData) {
    assert_eq!(got.id, want.id);
    assert_eq!(got.event_type(), want.event_type);
    assert_eq!(got.source(), want.source);
    assert_eq!(got.subject(), want.subject.as_deref());
    assert_eq!(got.time_unix_nanos, want.time_unix_nanos);
    assert_eq!(got.data_content_type(), want.data_content_type.as_deref());
    assert_eq!(got.data_schema(), want.data_schema.as_deref());
    assert_eq!(got.correlation_id(), want.correlation_id.as_deref());
    assert_eq!(got.causation_id(), want.causation_id.as_deref());
    let meta: Vec<(&str, &str)> = want
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(got.metadata().collect::<Vec<_>>(), meta);
    assert_eq!(got.data(), &want.data[..]);
    assert_eq!(&got.data_bytes()[..], &want.data[..]);
}

/// Everything the store holds, read every way.
fn read_everything(s: &Store) -> Vec<Vec<RecordedEvent>> {
    let mut out = vec![s
        .read_all(0, Direction::Forwards, usize::MAX, &ReadFilter::all())
        .unwrap()];
    let mut back = s
        .read_all(
            u64::MAX,
            Direction::Backwards,
            usize::MAX,
            &ReadFilter::all(),
        )
        .unwrap();
    back.reverse();
    out.push(back);
    for k in 0..STREAMS {
        let stream = format!("s-{k}");
        out.push(
            s.read_stream(&stream, 0, Direction::Forwards, 10_000)
                .unwrap(),
        );
        let mut back = s
            .read_stream(&stream, u64::MAX, Direction::Backwards, 10_000)
            .unwrap();
        back.reverse();
        out.push(back);
    }
    out
}

#[test]
fn mapped_reads_match_pread_reads_and_the_appended_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut appended: Vec<EventData> = Vec::new();
    let mut versions = [None::<u64>; STREAMS];
    {
        let s = Store::open_with(dir.path(), Options::test()).unwrap();
        assert!(Options::test().map_segments, "maps are the default");
        let mut sub = s.subscribe_all(0, ReadFilter::all());
        for n in 0..300 {
            let k = n % STREAMS;
            let count = 1 + n % 3;
            let events: Vec<EventData> = (0..count).map(|i| event(n * 10 + i)).collect();
            let expected = match versions[k] {
                None => ExpectedVersion::NoStream,
                Some(v) => ExpectedVersion::Exact(v),
            };
            let r = s
                .append(&format!("s-{k}"), expected, events.clone())
                .unwrap();
            versions[k] = Some(r.next_expected_version());
            appended.extend(events);
            // Read the newest events right away: the active segment is mapped while small
            // and read again as it grows.
            let last = s
                .read_stream(&format!("s-{k}"), u64::MAX, Direction::Backwards, 1)
                .unwrap();
            same_as_appended(&last[0], appended.last().unwrap());
            if n.is_multiple_of(10) {
                while let Some(e) = sub.next_timeout(std::time::Duration::ZERO).unwrap() {
                    same_as_appended(&e, &appended[e.position as usize]);
                }
            }
        }
        let all = read_everything(&s);
        for read in &all[..2] {
            assert_eq!(read.len(), appended.len());
            for (e, want) in read.iter().zip(&appended) {
                same_as_appended(e, want);
            }
        }
        s.close().unwrap();
    }
    let mapped = {
        let s = Store::open_with(dir.path(), Options::test()).unwrap();
        read_everything(&s)
    };
    let pread = {
        let opts = Options {
            map_segments: false,
            ..Options::test()
        };
        let s = Store::open_with(dir.path(), opts).unwrap();
        read_everything(&s)
    };
    assert_eq!(mapped, pread);
    assert_eq!(mapped[0].len(), appended.len());
    for (e, want) in mapped[0].iter().zip(&appended) {
        same_as_appended(e, want);
    }
    // Per stream, the events in order, each one the one appended at its position.
    for k in 0..STREAMS {
        for read in &mapped[2 + 2 * k..4 + 2 * k] {
            assert!(read.iter().all(|e| e.stream() == format!("s-{k}")));
            assert!(read.iter().enumerate().all(|(i, e)| e.version == i as u64));
            for e in read {
                same_as_appended(e, &appended[e.position as usize]);
            }
        }
    }
}

/// Events outlive the store they were read from: they hold their frame (or map) themselves.
#[test]
fn events_outlive_their_store() {
    let dir = tempfile::tempdir().unwrap();
    let events = {
        let s = Store::open_with(dir.path(), Options::test()).unwrap();
        for n in 0..50 {
            s.append("s", ExpectedVersion::Any, vec![event(n)]).unwrap();
        }
        let events = s.read_stream("s", 0, Direction::Forwards, 100).unwrap();
        s.close().unwrap();
        events
    };
    drop(dir);
    assert_eq!(events.len(), 50);
    for (n, e) in events.iter().enumerate() {
        same_as_appended(e, &event(n).with_id(e.id));
    }
}
