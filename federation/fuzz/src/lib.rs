//! The checks a received PDU goes through before authorization, shared by the fuzz targets.

use grove_server::rooms::{
    Pdu, SUPPORTED_VERSIONS, builder,
    pdu::{MAX_PDU_BYTES, check_format},
};
use ruma::{CanonicalJsonValue, RoomId};

/// Runs `value` through the PDU checks of every supported room version.
pub fn check_pdu(value: serde_json::Value) {
    let Ok(CanonicalJsonValue::Object(object)) = CanonicalJsonValue::try_from(value) else {
        return;
    };
    let room = RoomId::parse("!fuzz:example.org").ok();
    for version in SUPPORTED_VERSIONS {
        let Ok(rules) = builder::rules_for(&version) else {
            continue;
        };
        if check_format(&object, &rules.event_format).is_err() {
            continue;
        }
        let text = serde_json::to_string(&object).unwrap_or_default();
        assert!(text.len() <= MAX_PDU_BYTES);
        let Ok(id) = builder::event_id_of(&object, &rules) else {
            continue;
        };
        let _ = Pdu::parse(id, room.as_deref(), &text);
        if let Ok(redacted) = ruma::canonical_json::redact(object.clone(), &rules.redaction, None) {
            let _ = builder::event_id_of(&redacted, &rules);
        }
    }
}
