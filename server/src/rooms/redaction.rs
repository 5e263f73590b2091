//! Redactions of events received from other servers. A redaction is applied when it is
//! accepted and allowed: its sender is of the same server as the redacted event's sender, or
//! has the room's redact level. Its target is named by `content.redacts` in room versions
//! that put it there (11 and later) and by the top-level `redacts` before. A redaction whose
//! target this node does not hold yet is kept (`pending_redactions`) and applied in the write
//! that stores the target.

use std::{collections::HashMap, sync::Arc};

use ruma::{CanonicalJsonValue, EventId, OwnedEventId, canonical_json::redact};
use serde_json::Value;

use super::{
    Rooms,
    pdu::Pdu,
    power,
    state::RoomState,
    store::{self, redactions},
};
use crate::{Error, Result, storage::Batch};

/// An event redacted by the write being prepared: its ID and redacted PDU text.
pub(crate) type Applied = (OwnedEventId, String);

/// Events written earlier in the batch being prepared, by ID.
pub(crate) type Earlier = HashMap<OwnedEventId, Arc<Pdu>>;

impl Rooms {
    /// Adds to `batch` (after `pdu`'s own row) what storing the remote event `pdu` does to
    /// redactions: the redaction of its target, or keeping it until the target arrives; and
    /// the redaction of `pdu` itself by a redaction that came before it. `earlier` holds the
    /// events written before `pdu` in the same batch, which the database does not show yet.
    pub(crate) async fn remote_redactions(
        &self,
        room: &RoomState,
        pdu: &Pdu,
        accepted: bool,
        earlier: &Earlier,
        batch: &mut Batch,
    ) -> Result<Vec<Applied>> {
        let pool = self.storage.pool();
        let mut applied = Vec::new();
        if accepted && let Some(target) = redaction_target(room, pdu) {
            let held = match earlier.get(&target) {
                Some(pdu) => Some((pdu.clone(), false)),
                None => store::event(pool, target.as_str())
                    .await?
                    .map(|s| (Arc::new(s.pdu), s.redacted_by.is_some())),
            };
            match held {
                Some((stored, redacted)) if stored.room == room.room_id => {
                    if !redacted && may_redact(room, pdu, &stored) {
                        let text = redacted_text(room, &stored)?;
                        store::push_redaction(batch, &target, &text, &pdu.event_id);
                        applied.push((target, text));
                    }
                }
                // An event of another room is not this redaction's to touch.
                Some(_) => {}
                None => redactions::push_pending(batch, &room.room_id, &target, &pdu.event_id),
            }
        }
        if pdu.rejected {
            return Ok(applied);
        }
        let pending = redactions::pending_for(pool, &room.room_id, &pdu.event_id).await?;
        if pending.is_empty() {
            return Ok(applied);
        }
        redactions::push_delete_pending(batch, &pdu.event_id);
        let found = store::events_by_id(pool, &pending).await?;
        let by = pending.iter().find(|id| {
            found.get(*id).is_some_and(|r| {
                r.pdu.room == room.room_id && !r.pdu.rejected && may_redact(room, &r.pdu, pdu)
            })
        });
        if let Some(by) = by {
            let text = redacted_text(room, pdu)?;
            store::push_redaction(batch, &pdu.event_id, &text, by);
            applied.push((pdu.event_id.clone(), text));
        }
        Ok(applied)
    }
}

/// Replaces the redacted events among the current state's in memory (a redacted power levels
/// event changes what auth sees).
pub(crate) fn redact_in_memory(room: &mut RoomState, applied: &[Applied]) {
    for (target, text) in applied {
        if let Some(held) = room.state_events.get(target)
            && let Ok(mut pdu) = Pdu::parse(target.clone(), Some(&room.room_id), text)
        {
            pdu.replaced = held.replaced.clone();
            room.state_events.insert(target.clone(), Arc::new(pdu));
        }
    }
}

/// The event `pdu` redacts, when it is a redaction that names one where its room version
/// looks.
fn redaction_target(room: &RoomState, pdu: &Pdu) -> Option<OwnedEventId> {
    if pdu.kind != ruma::events::TimelineEventType::RoomRedaction {
        return None;
    }
    let named = if room.rules.redaction.content_field_redacts {
        pdu.content_value().get("redacts").cloned()
    } else {
        serde_json::from_str::<Value>(&pdu.json)
            .ok()?
            .get("redacts")
            .cloned()
    };
    named
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|id| EventId::parse(id).ok())
}

/// Whether `redaction` may redact `target`: the same server sent both, or its sender has the
/// room's redact level.
fn may_redact(room: &RoomState, redaction: &Pdu, target: &Pdu) -> bool {
    redaction.sender.server_name() == target.sender.server_name()
        || power::user_level(room, &redaction.sender) >= power::redact_level(room)
}

/// The PDU text of `pdu` redacted under the room's rules.
fn redacted_text(room: &RoomState, pdu: &Pdu) -> Result<String> {
    let redacted = redact(pdu.to_canonical()?, &room.rules.redaction, None)
        .map_err(|e| Error::Internal(format!("redacting {}: {e}", pdu.event_id)))?;
    Ok(serde_json::to_string(&CanonicalJsonValue::Object(
        redacted,
    ))?)
}
