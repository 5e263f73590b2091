//! Building new events: the PDU fields of the room version, the content hash, the node's
//! signature and the reference hash that becomes the event ID (and, for a v12 create event, the
//! room ID).

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, RoomId, RoomVersionId, ServerName, UserId,
    events::TimelineEventType,
    room_version_rules::{RoomIdFormatVersion, RoomVersionRules},
    signatures::{Ed25519KeyPair, JsonError, hash_and_sign_event, reference_hash},
};
use serde_json::{Value, json};

use super::pdu::Pdu;
use crate::{Error, Result};

/// The room versions this node can create and join.
pub const SUPPORTED_VERSIONS: [RoomVersionId; 3] =
    [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

/// The rules of a supported room version, or `M_UNSUPPORTED_ROOM_VERSION`.
pub fn rules_for(version: &RoomVersionId) -> Result<RoomVersionRules> {
    if !SUPPORTED_VERSIONS.contains(version) {
        return Err(Error::UnsupportedRoomVersion(version.to_string()));
    }
    version
        .rules()
        .ok_or_else(|| Error::UnsupportedRoomVersion(version.to_string()))
}

/// The greatest depth an event may carry: canonical JSON integers end at 2^53 - 1, so a
/// deeper event could not be hashed or signed.
pub const MAX_DEPTH: u64 = 9_007_199_254_740_991;

/// The depth of a new event whose deepest parent is at `parents`: one more, capped at
/// [`MAX_DEPTH`] (a remote server may have sent a parent at the cap already).
pub fn depth_after(parents: u64) -> u64 {
    parents.saturating_add(1).min(MAX_DEPTH)
}

/// What the sender wants to say; the builder adds the DAG and signature fields.
#[derive(Debug, Clone)]
pub struct EventTemplate {
    /// The event type.
    pub kind: TimelineEventType,
    /// The state key, for state events.
    pub state_key: Option<String>,
    /// The content (a JSON object).
    pub content: Value,
    /// For redactions: the redacted event.
    pub redacts: Option<OwnedEventId>,
}

impl EventTemplate {
    /// A state event.
    pub fn state(
        kind: impl Into<TimelineEventType>,
        key: impl Into<String>,
        content: Value,
    ) -> Self {
        Self {
            kind: kind.into(),
            state_key: Some(key.into()),
            content,
            redacts: None,
        }
    }

    /// A message-like event.
    pub fn message(kind: impl Into<TimelineEventType>, content: Value) -> Self {
        Self {
            kind: kind.into(),
            state_key: None,
            content,
            redacts: None,
        }
    }
}

/// Where a new event sits: its room (None for a v12 create event), parents, auth events, depth.
pub struct Placement<'a> {
    /// The room, absent only for the create event of a room whose ID derives from it.
    pub room: Option<&'a RoomId>,
    /// The parents.
    pub prev_events: &'a [OwnedEventId],
    /// The auth events.
    pub auth_events: &'a [OwnedEventId],
    /// The depth.
    pub depth: u64,
}

/// The signer of new events: the node's server name and key.
pub struct Signer<'a> {
    /// The server name the signature is filed under.
    pub server_name: &'a ServerName,
    /// The node key.
    pub key_pair: &'a Ed25519KeyPair,
}

/// Builds, hashes and signs an event, returning the parsed PDU.
pub fn build_event(
    rules: &RoomVersionRules,
    signer: &Signer<'_>,
    sender: &UserId,
    template: &EventTemplate,
    placement: &Placement<'_>,
    now: MilliSecondsSinceUnixEpoch,
) -> Result<Pdu> {
    if !template.content.is_object() {
        return Err(Error::BadJson("event content must be a JSON object".into()));
    }
    let mut object = json!({
        "type": template.kind.to_string(),
        "sender": sender.as_str(),
        "origin_server_ts": u64::from(now.get()),
        "content": template.content,
        "prev_events": placement.prev_events,
        "auth_events": placement.auth_events,
        "depth": placement.depth,
        "hashes": {},
        "signatures": {},
    });
    if let Some(map) = object.as_object_mut() {
        if let Some(room) = placement.room {
            map.insert("room_id".into(), Value::String(room.to_string()));
        }
        if let Some(key) = &template.state_key {
            map.insert("state_key".into(), Value::String(key.clone()));
        }
        if let Some(redacts) = &template.redacts {
            // Room versions before 11 carry `redacts` at the top level; later ones in content.
            if rules.redaction.content_field_redacts {
                if let Some(content) = map.get_mut("content").and_then(Value::as_object_mut) {
                    content.insert("redacts".into(), Value::String(redacts.to_string()));
                }
            } else {
                map.insert("redacts".into(), Value::String(redacts.to_string()));
            }
        }
    }
    let mut canonical: CanonicalJsonObject = match CanonicalJsonValue::try_from(object) {
        Ok(CanonicalJsonValue::Object(map)) => map,
        Ok(_) => return Err(Error::BadJson("event is not an object".into())),
        Err(e) => return Err(Error::BadJson(format!("event is not canonical JSON: {e}"))),
    };
    hash_and_sign_event(
        signer.server_name.as_str(),
        signer.key_pair,
        &mut canonical,
        &rules.redaction,
    )
    .map_err(|e| match e {
        JsonError::PduTooLarge => Error::TooLarge("events are limited to 65535 bytes".into()),
        e => Error::BadJson(format!("event cannot be signed: {e}")),
    })?;
    let event_id = event_id_of(&canonical, rules)?;
    let text = serde_json::to_string(&canonical)?;
    Pdu::parse(event_id, placement.room, &text)
}

/// The event ID of a PDU: `$` + its reference hash.
pub fn event_id_of(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId> {
    let hash = reference_hash(object, rules)
        .map_err(|e| Error::BadJson(format!("cannot hash event: {e}")))?;
    EventId::parse(format!("${hash}")).map_err(|e| Error::Internal(format!("event id: {e}")))
}

/// The ID a room gets from its create event: `!` + the create event's reference hash in room
/// versions whose rooms derive their ID from it, otherwise a random ID on `server_name`.
pub fn room_id_for(
    rules: &RoomVersionRules,
    create_event_id: Option<&EventId>,
    server_name: &ServerName,
) -> Result<OwnedRoomId> {
    match (&rules.room_id_format, create_event_id) {
        (RoomIdFormatVersion::V2, Some(id)) => RoomId::parse(format!("!{}", id.localpart()))
            .map_err(|e| Error::Internal(format!("room id: {e}"))),
        (RoomIdFormatVersion::V2, None) => Err(Error::Internal(
            "room id of this version needs the create event".into(),
        )),
        _ => Ok(RoomId::new_v1(server_name)),
    }
}
