//! Snapshot file decoding must never panic, and anything it accepts must survive an
//! encode/decode round trip unchanged (the event id it names included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrix::snapshot::{decode_snapshot_file_at, encode_snapshot_file_at};

fuzz_target!(|data: &[u8]| {
    if let Ok((snapshot, event_id)) = decode_snapshot_file_at(data) {
        let bytes = encode_snapshot_file_at(&snapshot, event_id)
            .expect("a decoded snapshot must re-encode");
        let again = decode_snapshot_file_at(&bytes).expect("a re-encoded snapshot must decode");
        assert_eq!(again, (snapshot, event_id), "snapshot changed across encode/decode");
    }
});
