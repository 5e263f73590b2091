//! The event (PDU) type: a parsed view of a signed event's canonical JSON, the form handed to
//! ruma's authorization and state resolution, and the conversion to the client format.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId,
    RoomId, UInt, UserId,
    events::{StateEventType, TimelineEventType},
    serde::Raw,
};
use serde::Deserialize;
use serde_json::{Value, value::RawValue};

use crate::{Error, Result};

/// The largest PDU, in bytes of canonical JSON with its signatures (the spec's limit: larger
/// events are refused, this size itself is allowed).
pub const MAX_PDU_BYTES: usize = 65_536;

/// Checks the format of a PDU built elsewhere: at most [`MAX_PDU_BYTES`], then the field rules
/// of the room version (types, lengths, a non-negative integer depth).
pub fn check_format(
    object: &CanonicalJsonObject,
    rules: &ruma::room_version_rules::EventFormatRules,
) -> Result<()> {
    let len = serde_json::to_string(object)?.len();
    if len > MAX_PDU_BYTES {
        return Err(Error::BadJson(format!(
            "PDU of {len} bytes is larger than {MAX_PDU_BYTES} bytes"
        )));
    }
    // ruma's check also measures the event and stops one byte short of the spec's limit; the
    // size is settled above, so it sees the event without its signatures (which it does not
    // otherwise look at) when the event is at the limit.
    let outcome = if len == MAX_PDU_BYTES {
        let mut unsigned = object.clone();
        unsigned.remove("signatures");
        ruma::state_res::check_pdu_format(&unsigned, rules)
    } else {
        ruma::state_res::check_pdu_format(object, rules)
    };
    outcome.map_err(Error::BadJson)
}

/// A persisted or about-to-be-persisted event of a room.
#[derive(Debug, Clone)]
pub struct Pdu {
    /// The event ID (reference hash).
    pub event_id: OwnedEventId,
    /// The room the event belongs to (for a v12 create event, derived from its ID).
    pub room: OwnedRoomId,
    /// The `room_id` field as written in the PDU (absent on v12 create events).
    room_id_field: Option<OwnedRoomId>,
    /// The sender.
    pub sender: OwnedUserId,
    /// The sender's timestamp.
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// The event type.
    pub kind: TimelineEventType,
    /// The content, as sent.
    pub content: Box<RawValue>,
    /// The state key, for state events.
    pub state_key: Option<String>,
    /// The parents in the DAG.
    pub prev_events: Vec<OwnedEventId>,
    /// The events that authorize this one.
    pub auth_events: Vec<OwnedEventId>,
    /// The event redacted by this one, for redactions.
    pub redacts: Option<OwnedEventId>,
    /// The depth in the DAG.
    pub depth: u64,
    /// Whether the event failed the checks on receipt.
    pub rejected: bool,
    /// What a state event replaced in the room's state, as this node stored it (not part of
    /// the PDU's JSON).
    pub replaced: Replaced,
    /// The full PDU as canonical JSON text.
    pub json: Arc<str>,
}

/// The state event a state event replaced: the one the state before it held under the same
/// `(type, state_key)`. Clients read it as `unsigned.prev_content`, `prev_sender` and
/// `replaces_state`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Replaced {
    /// Not known yet: an event stored before this was recorded, an outlier (whose state
    /// before is not held) or one not a state event.
    #[default]
    Unknown,
    /// The key was empty in the state before the event.
    Nothing,
    /// This event held the key.
    Event(OwnedEventId),
}

impl Replaced {
    /// What `pdu` replaces in `state_before` (the state before it); `Unknown` when it is not a
    /// state event.
    pub fn in_state(state_before: &super::StateMap, pdu: &Pdu) -> Self {
        let Some(key) = pdu.state_key_pair() else {
            return Self::Unknown;
        };
        match state_before.get(&key) {
            Some(id) if *id != pdu.event_id => Self::Event(id.clone()),
            _ => Self::Nothing,
        }
    }
}

#[derive(Deserialize)]
struct Fields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    depth: UInt,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses the PDU text of an event whose ID is `event_id`. `room` is needed for a v12
    /// create event, which carries no `room_id`.
    pub fn parse(event_id: OwnedEventId, room: Option<&RoomId>, json: &str) -> Result<Self> {
        let fields: Fields = serde_json::from_str(json)
            .map_err(|e| Error::BadJson(format!("malformed event {event_id}: {e}")))?;
        let room = match (&fields.room_id, room) {
            (Some(id), _) => id.clone(),
            (None, Some(room)) => room.to_owned(),
            (None, None) => {
                // A v12 create event: the room ID is its own reference hash.
                RoomId::parse(format!("!{}", event_id.localpart()))
                    .map_err(|e| Error::BadJson(format!("event {event_id}: {e}")))?
            }
        };
        let redacts = match fields.redacts {
            Some(id) => Some(id),
            None if fields.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsInContent>(fields.content.get())
                    .ok()
                    .and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Self {
            event_id,
            room,
            room_id_field: fields.room_id,
            sender: fields.sender,
            origin_server_ts: fields.origin_server_ts,
            kind: fields.kind,
            content: fields.content,
            state_key: fields.state_key,
            prev_events: fields.prev_events,
            auth_events: fields.auth_events,
            redacts,
            depth: fields.depth.into(),
            rejected: false,
            replaced: Replaced::Unknown,
            json: Arc::from(json),
        })
    }

    /// The PDU as a canonical JSON object.
    pub fn to_canonical(&self) -> Result<CanonicalJsonObject> {
        Ok(serde_json::from_str(&self.json)?)
    }

    /// The `(type, state_key)` key of a state event.
    pub fn state_key_pair(&self) -> Option<(StateEventType, String)> {
        self.state_key
            .as_ref()
            .map(|key| (StateEventType::from(self.kind.to_string()), key.clone()))
    }

    /// The content as a JSON value (an empty object when it does not parse).
    pub fn content_value(&self) -> Value {
        serde_json::from_str(self.content.get())
            .unwrap_or_else(|_| Value::Object(Default::default()))
    }

    /// A string field of the content.
    pub fn content_str(&self, field: &str) -> Option<String> {
        self.content_value()
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The event in the client format; `room_id` is left out for sync timelines.
    pub fn to_client_value(&self, with_room_id: bool, unsigned: Option<Value>) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("content".into(), self.content_value());
        map.insert("event_id".into(), Value::String(self.event_id.to_string()));
        map.insert(
            "origin_server_ts".into(),
            Value::from(u64::from(self.origin_server_ts.get())),
        );
        if with_room_id {
            map.insert("room_id".into(), Value::String(self.room.to_string()));
        }
        map.insert("sender".into(), Value::String(self.sender.to_string()));
        map.insert("type".into(), Value::String(self.kind.to_string()));
        if let Some(key) = &self.state_key {
            map.insert("state_key".into(), Value::String(key.clone()));
        }
        if let Some(redacts) = &self.redacts {
            map.insert("redacts".into(), Value::String(redacts.to_string()));
        }
        if let Some(unsigned) = unsigned {
            map.insert("unsigned".into(), unsigned);
        }
        Value::Object(map)
    }

    /// The event in the client format as a typed raw value.
    pub fn to_client_raw<T>(&self, with_room_id: bool, unsigned: Option<Value>) -> Raw<T> {
        let unsigned = unsigned.map(|u| u.to_string());
        self.to_client_raw_with(with_room_id, unsigned.as_deref())
    }

    /// [`Pdu::to_client_raw`] with `unsigned` given as JSON text. The event's JSON is written
    /// around its stored content rather than built as a tree: a sync of a room with large
    /// state writes thousands of these.
    pub fn to_client_raw_with<T>(&self, with_room_id: bool, unsigned: Option<&str>) -> Raw<T> {
        let content = self.content.get();
        let mut out = String::with_capacity(content.len() + unsigned.map_or(0, str::len) + 256);
        out.push_str("{\"content\":");
        out.push_str(content);
        push_field(&mut out, "event_id", self.event_id.as_str());
        out.push_str(",\"origin_server_ts\":");
        out.push_str(&u64::from(self.origin_server_ts.get()).to_string());
        if with_room_id {
            push_field(&mut out, "room_id", self.room.as_str());
        }
        push_field(&mut out, "sender", self.sender.as_str());
        push_field(&mut out, "type", &self.kind.to_string());
        if let Some(key) = &self.state_key {
            push_field(&mut out, "state_key", key);
        }
        if let Some(redacts) = &self.redacts {
            push_field(&mut out, "redacts", redacts.as_str());
        }
        if let Some(unsigned) = unsigned {
            out.push_str(",\"unsigned\":");
            out.push_str(unsigned);
        }
        out.push('}');
        match RawValue::from_string(out) {
            Ok(raw) => Raw::from_json(raw),
            // Every part is JSON already, so this is only a formal fallback.
            Err(_) => {
                let unsigned = unsigned.and_then(|u| serde_json::from_str(u).ok());
                let value = self.to_client_value(with_room_id, unsigned);
                let raw = serde_json::value::to_raw_value(&value)
                    .unwrap_or_else(|_| RawValue::NULL.to_owned());
                Raw::from_json(raw)
            }
        }
    }

    /// What clients read in `unsigned` of an event that replaced this one in the state, as
    /// JSON text: `prev_content`, `prev_sender` and `replaces_state`.
    pub fn replaced_unsigned(&self) -> String {
        let content = self.content.get();
        let mut out = String::with_capacity(content.len() + 160);
        out.push_str("{\"prev_content\":");
        out.push_str(content);
        push_field(&mut out, "prev_sender", self.sender.as_str());
        push_field(&mut out, "replaces_state", self.event_id.as_str());
        out.push('}');
        out
    }

    /// The stripped form of a state event, for invite and knock state.
    pub fn to_stripped_value(&self) -> Value {
        serde_json::json!({
            "content": self.content_value(),
            "sender": self.sender.as_str(),
            "state_key": self.state_key.clone().unwrap_or_default(),
            "type": self.kind.to_string(),
        })
    }
}

/// Appends `,"name":"value"` to `out`, with `value` escaped as a JSON string.
fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    let plain = value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        // Escaping a string cannot fail; an empty string is only a formal fallback.
        out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into()));
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id_field.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}
