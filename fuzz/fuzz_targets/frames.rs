//! A frame as it arrives on a stream: the fixed header, then the body as each message type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidepool_proto::frame::{decode_frame, FrameHeader};
use tidepool_proto::mon::{MonRequest, MonResponse};
use tidepool_proto::osd::{OsdRequest, OsdResponse};
use tidepool_proto::FRAME_HEADER_BYTES;

fuzz_target!(|bytes: &[u8]| {
    let Some((header, rest)) = bytes.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return;
    };
    let Ok(header) = FrameHeader::parse(header, 64 << 20) else {
        return;
    };
    let body_len = (header.body_bytes as usize).min(rest.len());
    let (body, data) = rest.split_at(body_len);
    let data = vec![bytes::Bytes::copy_from_slice(data)];
    let _ = decode_frame::<OsdRequest>(body, data.clone());
    let _ = decode_frame::<OsdResponse>(body, data);
    let _ = decode_frame::<MonRequest>(body, Vec::new());
    let _ = decode_frame::<MonResponse>(body, Vec::new());
});
