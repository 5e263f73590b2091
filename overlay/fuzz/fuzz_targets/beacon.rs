//! Fuzzes the beacon decoder: never a panic; an accepted beacon has the fixed length.
#![no_main]

use grove_overlay::wire::{BEACON_LEN, Beacon};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if Beacon::decode_verified(data).is_ok() {
        assert_eq!(data.len(), BEACON_LEN);
    }
});
