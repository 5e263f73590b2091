//! Authorization of events through ruma's auth rules, over state the caller has loaded.
//!
//! For an event built here, the auth events, the state before it and the current state are all
//! the room's current state (its parents are the forward extremities), so one pass over the
//! current state covers the three state-dependent checks. Remote events go through
//! [`check_remote`], which checks them against their auth events, the state before them and
//! the current state (soft failure).

use std::{collections::HashMap, sync::Arc};

use ruma::{
    OwnedEventId, UserId,
    events::TimelineEventType,
    room_version_rules::AuthorizationRules,
    state_res::{
        auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules,
    },
};

use super::{StateMap, builder::EventTemplate, pdu::Pdu, state::RoomState};
use crate::{Error, Result};

/// The auth events a new event of `template` by `sender` needs, from the current state.
pub(crate) fn auth_events_for(
    room: &RoomState,
    sender: &UserId,
    template: &EventTemplate,
) -> Result<Vec<OwnedEventId>> {
    let content = serde_json::value::to_raw_value(&template.content)
        .map_err(|e| Error::BadJson(e.to_string()))?;
    let types = auth_types_for_event(
        &template.kind,
        sender,
        template.state_key.as_deref(),
        &content,
        &room.rules.authorization,
    )
    .map_err(Error::BadJson)?;
    let mut out: Vec<OwnedEventId> = types
        .into_iter()
        .filter_map(|key| room.state.get(&key).cloned())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The events [`check_remote`] reads for `pdu`: its auth events and, in each of `states`, the
/// entries its kind of event is authorized by (not the whole state: a room of a thousand
/// members would load a thousand member events for every message).
pub(crate) fn events_to_check(
    rules: &AuthorizationRules,
    pdu: &Pdu,
    states: &[&StateMap],
) -> Vec<OwnedEventId> {
    let mut out = pdu.auth_events.clone();
    let types = auth_types_for_event(
        &pdu.kind,
        &pdu.sender,
        pdu.state_key.as_deref(),
        &pdu.content,
        rules,
    )
    .unwrap_or_default();
    // The create event is read by every check, listed or (since v12) implied.
    let create = (ruma::events::StateEventType::RoomCreate, String::new());
    for state in states {
        out.extend(
            types
                .iter()
                .chain(std::iter::once(&create))
                .filter_map(|key| state.get(key).cloned()),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// Checks a locally built event against the room's current state.
pub(crate) fn check_local(room: &RoomState, pdu: &Pdu) -> Result<()> {
    let rules = &room.rules.authorization;
    let fetch_event = |id: &ruma::EventId| room.state_events.get(id).cloned();
    check_state_independent_auth_rules(rules, pdu, fetch_event).map_err(Error::Forbidden)?;
    if pdu.kind == TimelineEventType::RoomCreate {
        return Ok(());
    }
    check_against_state(rules, pdu, &room.state, &room.state_events)
}

/// Checks an event against a state map whose events are in `events`.
pub(crate) fn check_against_state(
    rules: &AuthorizationRules,
    pdu: &Pdu,
    state: &StateMap,
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> Result<()> {
    let fetch_state = |kind: &ruma::events::StateEventType, key: &str| {
        state
            .get(&(kind.clone(), key.to_owned()))
            .and_then(|id| events.get(id))
            .cloned()
    };
    check_state_dependent_auth_rules(rules, pdu, fetch_state).map_err(Error::Forbidden)
}

/// How a remote event fared against the three state-dependent checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteVerdict {
    /// Accepted, and allowed by the current state.
    Accepted,
    /// Rejected against its auth events or the state before it.
    Rejected(String),
    /// Accepted into the DAG but not allowed by the current state: kept out of timelines.
    SoftFailed(String),
}

/// Checks a remote event against its auth events, the state before it and the current state.
pub(crate) fn check_remote(
    rules: &AuthorizationRules,
    pdu: &Pdu,
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
    state_before: &StateMap,
    current: &StateMap,
) -> RemoteVerdict {
    let fetch_event = |id: &ruma::EventId| events.get(id).cloned();
    if let Err(e) = check_state_independent_auth_rules(rules, pdu, fetch_event) {
        return RemoteVerdict::Rejected(e);
    }
    if pdu.kind == TimelineEventType::RoomCreate {
        return RemoteVerdict::Accepted;
    }
    let auth_state = auth_state_of(rules, pdu, events);
    for state in [&auth_state, state_before] {
        if let Err(Error::Forbidden(e)) = check_against_state(rules, pdu, state, events) {
            return RemoteVerdict::Rejected(e);
        }
    }
    match check_against_state(rules, pdu, current, events) {
        Err(Error::Forbidden(e)) => RemoteVerdict::SoftFailed(e),
        _ => RemoteVerdict::Accepted,
    }
}

/// The state an event's auth events make (since v12 with the create event its room ID
/// implies).
fn auth_state_of(
    rules: &AuthorizationRules,
    pdu: &Pdu,
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> StateMap {
    let mut auth_state: StateMap = pdu
        .auth_events
        .iter()
        .filter_map(|id| events.get(id))
        .filter_map(|e| e.state_key_pair().map(|k| (k, e.event_id.clone())))
        .collect();
    // Since v12 the create event is implied by the room ID rather than listed.
    if rules.room_create_event_id_as_room_id
        && let Some(localpart) = pdu.room.as_str().strip_prefix('!')
        && let Ok(create) = OwnedEventId::try_from(format!("${localpart}"))
    {
        auth_state.insert(
            (ruma::events::StateEventType::RoomCreate, String::new()),
            create,
        );
    }
    auth_state
}

/// Checks every one of `events` (a state and its auth chain, as a resident server answered
/// them) against its own auth events, which must be among them. One that fails makes the
/// whole answer a lie: every auth event of a real state was allowed when it was sent, so no
/// order is needed and the first failure ends the check.
pub(crate) fn check_auth_chain(
    rules: &AuthorizationRules,
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> Result<()> {
    for pdu in events.values() {
        if let Some(missing) = pdu.auth_events.iter().find(|id| !events.contains_key(*id)) {
            return Err(Error::Forbidden(format!(
                "{}: auth event {missing} is not in the auth chain",
                pdu.event_id
            )));
        }
        let fetch_event = |id: &ruma::EventId| events.get(id).cloned();
        check_state_independent_auth_rules(rules, pdu.as_ref(), fetch_event)
            .map_err(|e| Error::Forbidden(format!("{}: {e}", pdu.event_id)))?;
        if pdu.kind == TimelineEventType::RoomCreate {
            continue;
        }
        let auth_state = auth_state_of(rules, pdu, events);
        check_against_state(rules, pdu, &auth_state, events)
            .map_err(|e| Error::Forbidden(format!("{}: {e}", pdu.event_id)))?;
    }
    Ok(())
}
