//! Fuzzes what a received PDU goes through before authorization, for every supported room
//! version: canonical JSON, the format check, the event ID, parsing, redaction. Never a panic;
//! a PDU the format check takes is never over the size limit.
#![no_main]

use grove_federation_fuzz::check_pdu;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        check_pdu(value);
    }
});
