//! Writes the seed corpora under `fuzz/seeds/<target>/`: valid frames, snapshot files and
//! small segments. Run from `fuzz/`: `cargo run --manifest-path seedgen/Cargo.toml`.

use std::fs;
use std::path::Path;

use orchestrix::snapshot::{encode_snapshot_file_at, Snapshot};
use orchestrix_index::streams::{encode_file, StreamEntry};
use orchestrix_log::frame::encode_frame;
use orchestrix_log::record::encode_payload;
use orchestrix_log::{segment, EventRecord};

fn ev(n: u8, full: bool) -> EventRecord {
    EventRecord {
        id: [n; 16],
        event_type: "OrderPlaced".into(),
        source: "seedgen".into(),
        subject: full.then(|| "order-1".into()),
        time_unix_nanos: 1_700_000_000_000_000_000 + i64::from(n),
        data_content_type: full.then(|| "application/json".into()),
        data_schema: None,
        correlation_id: full.then(|| "corr".into()),
        causation_id: None,
        metadata: if full { vec![("k".into(), "v".into())] } else { vec![] },
        data: format!("{{\"n\":{n}}}").into_bytes(),
    }
}

/// A frame at `first` holding `batches` (stream, first_version, events).
fn frame(first: u64, durable: u64, batches: &[(&str, u64, Vec<EventRecord>)]) -> Vec<u8> {
    let mut payload = Vec::new();
    encode_payload(
        &mut payload,
        batches.iter().map(|(s, v, e)| (*s, *v, e.as_slice())),
    )
    .expect("encode payload");
    let count: usize = batches.iter().map(|b| b.2.len()).sum();
    encode_frame(first, durable, count as u32, &payload).expect("encode frame")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("seeds").join(target);
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let entry = |stream_number, first_version, count| StreamEntry {
        stream_number,
        first_version,
        first_position: stream_number * 100 + first_version,
        offset: 32 + first_version * 80,
        len: 80,
        count,
    };
    write("stream_file_decoder", "empty", &encode_file(0, &[]));
    write(
        "stream_file_decoder",
        "two_streams",
        &encode_file(4096, &[entry(0, 0, 1), entry(0, 1, 3), entry(7, 0, 2)]),
    );
    let f0 = frame(0, 0, &[("order-1", 0, vec![ev(1, true)])]);
    let f1 = frame(1, 1, &[("order-1", 1, vec![ev(2, false), ev(3, true)])]);
    let f3 = frame(
        3,
        1,
        &[("order-2", 0, vec![ev(4, false)]), ("order-1", 3, vec![ev(5, false)])],
    );
    write("frame_decoder", "one_event", &f0);
    write("frame_decoder", "two_events", &f1);
    write("frame_decoder", "two_batches", &f3);

    for (name, state) in [
        ("small", b"{\"total\":99}".to_vec()),
        ("empty_state", Vec::new()),
        ("repetitive", b"abcabcabc".repeat(200)),
        ("named_event", b"{\"total\":3}".to_vec()),
    ] {
        let s = Snapshot {
            stream: "order-42".into(),
            version: 7,
            aggregate_type: "Order".into(),
            state,
        };
        write(
            "snapshot_decoder",
            name,
            // One seed names the event at the snapshot's version.
            &encode_snapshot_file_at(
                &s,
                Some(uuid::Uuid::from_bytes([0x5a; 16])).filter(|_| name == "named_event"),
            )
            .expect("encode snapshot"),
        );
    }

    // segment_recovery: byte 0 = mode (non-zero mod 8: the target prefixes a valid header).
    let frames = [f0.clone(), f1.clone(), f3.clone()].concat();
    write("segment_recovery", "three_frames", &[&[1u8][..], &frames].concat());
    write(
        "segment_recovery",
        "torn_tail",
        &[&[1u8][..], &frames[..frames.len() - 7]].concat(),
    );
    write("segment_recovery", "empty", &[1u8]);
    write(
        "segment_recovery",
        "raw_with_header",
        &[&[0u8][..], &segment::encode_header(0), &f0].concat(),
    );
    write("segment_recovery", "torn_header", &[0u8, 0x89, b'O', b'X']);
}
