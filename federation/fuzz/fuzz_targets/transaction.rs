//! Fuzzes the transaction parser and, for each PDU it yields, the PDU pipeline: never a panic;
//! a parsed transaction holds at most 50 PDUs and 100 EDUs.
#![no_main]

use grove_federation_fuzz::check_pdu;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(txn) = grove_federation::routes::parse_transaction(data) {
        assert!(txn.pdus.len() <= 50 && txn.edus.len() <= 100);
        for pdu in txn.pdus {
            check_pdu(pdu);
        }
    }
});
