//! Fuzzes the hello decoder: never a panic; an accepted hello re-encodes to the input.
#![no_main]

use grove_overlay::wire::Hello;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Hello::decode(data) {
        assert_eq!(h.encode(), data);
    }
});
