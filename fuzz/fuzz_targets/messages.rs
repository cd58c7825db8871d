//! Message bodies without a frame: what each daemon decodes from a peer, the monitors' own
//! consensus messages and state snapshots included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidepool_proto::frame::decode_body;
use tidepool_proto::mon::{MonRequest, MonResponse, Request};
use tidepool_proto::osd::{OsdRequest, OsdResponse};

fuzz_target!(|body: &[u8]| {
    let _ = decode_body::<OsdRequest>(body);
    let _ = decode_body::<OsdResponse>(body);
    let _ = decode_body::<MonRequest>(body);
    let _ = decode_body::<MonResponse>(body);
    let _ = rmp_serde::from_slice::<tidepool_monitor::paxos::Message>(body);
    let _ = rmp_serde::from_slice::<tidepool_monitor::service::MapState>(body);
    let _ = rmp_serde::from_slice::<Request>(body);
});
