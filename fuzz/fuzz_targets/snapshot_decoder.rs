//! Snapshot file decoding must never panic, and anything it accepts must survive an
//! encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrix::snapshot::{decode_snapshot_file, encode_snapshot_file};

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = decode_snapshot_file(data) {
        let bytes = encode_snapshot_file(&snapshot).expect("a decoded snapshot must re-encode");
        let again = decode_snapshot_file(&bytes).expect("a re-encoded snapshot must decode");
        assert_eq!(again, snapshot, "snapshot changed across encode/decode");
    }
});
