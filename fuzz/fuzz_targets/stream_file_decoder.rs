//! Stream index file decoding (`orchestrix_index::streams::decode_file`) must never panic, and
//! anything it accepts must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrix_index::streams::{decode_file, encode_file};

fuzz_target!(|data: &[u8]| {
    if let Ok((segment, entries)) = decode_file(data) {
        assert_eq!(
            encode_file(segment, &entries),
            data,
            "an accepted file must re-encode byte for byte"
        );
    }
});
