//! Reading power levels from a room's current state, for checks the auth rules do not make
//! (who may redact another's event, who may remove an alias).

use ruma::{UserId, events::StateEventType};
use serde_json::Value;

use super::state::RoomState;

/// Power level of creators in rooms whose versions privilege them: above any number.
const CREATOR_POWER: i64 = i64::MAX;

fn power_content(state: &RoomState) -> Option<Value> {
    state
        .get(&StateEventType::RoomPowerLevels, "")
        .map(|e| e.content_value())
}

fn as_level(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Whether `user` created the room (or is an additional creator) in a version that
/// privileges creators.
pub(crate) fn is_creator(state: &RoomState, user: &UserId) -> bool {
    if !state.rules.authorization.explicitly_privilege_room_creators {
        return false;
    }
    let Some(create) = state.get(&StateEventType::RoomCreate, "") else {
        return false;
    };
    if create.sender == user {
        return true;
    }
    create
        .content_value()
        .get("additional_creators")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|u| u.as_str() == Some(user.as_str())))
}

/// The power level of `user`.
pub(crate) fn user_level(state: &RoomState, user: &UserId) -> i64 {
    if is_creator(state, user) {
        return CREATOR_POWER;
    }
    match power_content(state) {
        Some(content) => as_level(content.get("users").and_then(|u| u.get(user.as_str())))
            .or_else(|| as_level(content.get("users_default")))
            .unwrap_or(0),
        // Without power levels, the creator has 100 and everyone else 0.
        None => {
            let creator = state
                .get(&StateEventType::RoomCreate, "")
                .is_some_and(|c| c.sender == user);
            if creator { 100 } else { 0 }
        }
    }
}

/// The level needed to send a state event of `kind`.
pub(crate) fn state_level(state: &RoomState, kind: &StateEventType) -> i64 {
    let Some(content) = power_content(state) else {
        return 0;
    };
    as_level(content.get("events").and_then(|e| e.get(kind.to_string())))
        .or_else(|| as_level(content.get("state_default")))
        .unwrap_or(50)
}

/// The level needed to redact other users' events.
pub(crate) fn redact_level(state: &RoomState) -> i64 {
    power_content(state)
        .and_then(|c| as_level(c.get("redact")))
        .unwrap_or(50)
}
