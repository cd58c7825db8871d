//! An incremental as a monitor sends it, applied to a valid map; the result validated and its
//! PGs placed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidepool_placement::encoding::decode;
use tidepool_placement::Incremental;

fuzz_target!(|bytes: &[u8]| {
    let Ok(incremental) = decode::<Incremental>(bytes) else {
        return;
    };
    if let Ok(map) = tidepool_fuzz::base_map().apply(&incremental) {
        tidepool_fuzz::validate_and_place(&map);
    }
});
