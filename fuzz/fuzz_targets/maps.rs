//! A whole map as a monitor sends it: decoded, validated, and its PGs placed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidepool_placement::encoding::decode;
use tidepool_placement::ClusterMap;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(map) = decode::<ClusterMap>(bytes) {
        tidepool_fuzz::validate_and_place(&map);
    }
});
