//! Fuzzes the routing frame decoder: it must never panic, and a frame it accepts must
//! re-encode to exactly the input (every byte accounted for).
#![no_main]

use grove_overlay::wire::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(frame.encode(), data);
        assert_eq!(frame.encoded_len(), data.len());
    }
});
