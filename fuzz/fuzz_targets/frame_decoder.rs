//! Frame decoding must never panic on arbitrary bytes, and a frame that decodes must re-encode
//! to exactly the bytes it was decoded from (the format has a single canonical encoding). The
//! owned payload decoder and the in-place one (the read path's) must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrix_log::frame::{decode_frame, decode_header, encode_unit_frame_with};
use orchestrix_log::{FramePayload, FrameView};

fuzz_target!(|data: &[u8]| {
    let header = decode_header(data);
    match decode_frame(data) {
        Ok((h, payload)) => {
            assert_eq!(header, Ok(h), "decode_header disagrees with decode_frame");
            assert_eq!(payload.len(), h.payload_len as usize);
            let owned = FramePayload::decode(payload, h.event_count);
            let view = FrameView::decode(payload, h.event_count);
            match (&owned, &view) {
                (Ok(o), Ok(v)) => {
                    assert_eq!(o.batches.len(), v.batches.len());
                    for (ob, vb) in o.batches.iter().zip(&v.batches) {
                        assert_eq!(ob.stream, vb.stream);
                        assert_eq!(ob.first_version, vb.first_version);
                        assert_eq!(ob.events.len(), vb.events.len());
                        for (oe, ve) in ob.events.iter().zip(&vb.events) {
                            assert_eq!(oe.id, ve.id);
                            assert_eq!(oe.time_unix_nanos, ve.time_unix_nanos);
                            assert_eq!(oe.event_type, ve.event_type);
                            assert_eq!(oe.data, ve.data);
                            assert_eq!(oe.metadata.len(), ve.metadata.len());
                        }
                    }
                }
                (Err(_), Err(_)) => {}
                _ => panic!("owned and in-place payload decoders disagree"),
            }
            let mut again = Vec::new();
            encode_unit_frame_with(
                &mut again,
                h.first_position,
                h.durable_position,
                h.event_count,
                h.continues,
                |o| {
                    o.extend_from_slice(payload);
                    Ok(())
                },
            )
            .expect("a decoded frame must re-encode");
            let len = usize::try_from(h.frame_len()).expect("frame length fits usize");
            assert_eq!(
                &again[..],
                &data[..len],
                "re-encoded frame differs from input"
            );
        }
        Err(_) => {}
    }
});
