//! State resolution (v2, and v2.1 for room version 12) through ruma, over events the caller has
//! preloaded, so the algorithm itself never touches storage and can run on a blocking thread.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    EventId, OwnedEventId,
    room_version_rules::{RoomVersionRules, StateResolutionVersion},
    state_res::{self, utils::event_id_set::EventIdSet},
};

use super::{StateMap, pdu::Pdu};
use crate::{Error, Result};

/// Events that one resolution may walk (auth chains and the conflicted subgraph).
pub const MAX_RESOLUTION_EVENTS: usize = 50_000;

/// Resolves `states` into one state map. `events` must hold every event named by the states and
/// their auth chains.
pub fn resolve(
    rules: &RoomVersionRules,
    states: &[StateMap],
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> Result<StateMap> {
    let StateResolutionVersion::V2(v2) = &rules.state_res else {
        return Err(Error::UnsupportedRoomVersion(
            "state resolution v1 is not supported".into(),
        ));
    };
    let auth_chains: Vec<EventIdSet<OwnedEventId>> = states
        .iter()
        .map(|state| {
            let chain = auth_chain(state.values().cloned(), events);
            let mut set = EventIdSet::with_capacity(chain.len());
            for id in chain {
                set.insert(id);
            }
            set
        })
        .collect();
    let fetch_event = |id: &EventId| events.get(id).cloned();
    let subgraph = |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| {
        let ids: Vec<OwnedEventId> = conflicted.values().flatten().cloned().collect();
        let mut set = EventIdSet::new();
        for id in conflicted_subgraph(&ids, events) {
            set.insert(id);
        }
        Some(set)
    };
    // ruma resolves over its own (std) maps.
    let states: Vec<state_res::StateMap<OwnedEventId>> = states
        .iter()
        .map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .collect();
    state_res::resolve(
        &rules.authorization,
        v2,
        states.iter(),
        auth_chains,
        fetch_event,
        subgraph,
    )
    .map(|resolved| resolved.into_iter().collect())
    .map_err(|e| Error::Internal(format!("state resolution failed: {e}")))
}

/// The auth chain of `start` within `events` (loop-based, bounded by `events`).
pub fn auth_chain(
    start: impl IntoIterator<Item = OwnedEventId>,
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> HashSet<OwnedEventId> {
    let mut seen = HashSet::new();
    let mut stack: Vec<OwnedEventId> = start
        .into_iter()
        .filter_map(|id| events.get(&id))
        .flat_map(|e| e.auth_events.iter().cloned())
        .collect();
    while let Some(id) = stack.pop() {
        if seen.len() >= MAX_RESOLUTION_EVENTS {
            break;
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(event) = events.get(&id) {
            stack.extend(event.auth_events.iter().cloned());
        }
    }
    seen
}

/// The conflicted state subgraph: events on an auth path from one conflicted event to another
/// (both ends included).
pub fn conflicted_subgraph(
    conflicted: &[OwnedEventId],
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> HashSet<OwnedEventId> {
    let targets: HashSet<&OwnedEventId> = conflicted.iter().collect();
    // Ancestors (through auth events) of the conflicted events, themselves included.
    let mut ancestors: HashSet<OwnedEventId> = conflicted.iter().cloned().collect();
    ancestors.extend(auth_chain(conflicted.iter().cloned(), events));
    // Children edges inside the ancestor set, to walk downwards from conflicted events.
    let mut children: HashMap<&OwnedEventId, Vec<&OwnedEventId>> = HashMap::new();
    for id in &ancestors {
        if let Some(event) = events.get(id) {
            for parent in &event.auth_events {
                children.entry(parent).or_default().push(id);
            }
        }
    }
    // An ancestor is on a path when a conflicted event reaches it downwards... and it reaches a
    // conflicted event upwards, which every ancestor does by construction.
    let mut reached: HashSet<OwnedEventId> = HashSet::new();
    let mut stack: Vec<&OwnedEventId> = targets.iter().copied().collect();
    while let Some(id) = stack.pop() {
        if reached.len() >= MAX_RESOLUTION_EVENTS || !reached.insert(id.clone()) {
            continue;
        }
        if let Some(kids) = children.get(id) {
            stack.extend(kids.iter().copied());
        }
    }
    reached
}
