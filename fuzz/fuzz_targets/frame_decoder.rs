//! Frame decoding must never panic on arbitrary bytes, and a frame that decodes must re-encode
//! to exactly the bytes it was decoded from (the format has a single canonical encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrix_log::frame::{decode_frame, decode_header, encode_frame};
use orchestrix_log::FramePayload;

fuzz_target!(|data: &[u8]| {
    let header = decode_header(data);
    match decode_frame(data) {
        Ok((h, payload)) => {
            assert_eq!(header, Ok(h), "decode_header disagrees with decode_frame");
            assert_eq!(payload.len(), h.payload_len as usize);
            let _ = FramePayload::decode(payload, h.event_count);
            let again = encode_frame(h.first_position, h.durable_position, h.event_count, payload)
                .expect("a decoded frame must re-encode");
            let len = usize::try_from(h.frame_len()).expect("frame length fits usize");
            assert_eq!(&again[..], &data[..len], "re-encoded frame differs from input");
        }
        Err(_) => {}
    }
});
