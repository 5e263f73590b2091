//! The state event a state event replaced, which clients read from `unsigned.prev_content`,
//! `prev_sender` and `replaces_state` (a membership's previous value tells a DM's invitee who
//! invited them, a display name change from a join).
//!
//! The replaced event is the one the state before the event held under the same key: the
//! state after its first parent with known state. An event whose parents this node lacks (a
//! join made through another server) finds its previous membership among its auth events.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{OwnedEventId, events::TimelineEventType};
use serde_json::{Map, Value};

use super::{Rooms, pdu::Pdu, store};
use crate::Result;

/// The states, at most, that one call loads to find what its events replaced. A timeline page
/// needs a few; a room's whole state (an initial sync of a room with 10,000 state events) would
/// otherwise load one state map per event, quadratic in the state's size.
const MAX_GROUPS_LOADED: usize = 64;

impl Rooms {
    /// The state events that `events` replaced, by the replacing event's ID; events that
    /// replaced nothing (or are not state events) are absent, and so are those past the first
    /// [`MAX_GROUPS_LOADED`] states loaded.
    pub(crate) async fn replaced_states(
        &self,
        events: &[&Pdu],
    ) -> Result<HashMap<OwnedEventId, Arc<Pdu>>> {
        let state_events: Vec<&Pdu> = events
            .iter()
            .copied()
            .filter(|e| e.state_key.is_some())
            .collect();
        if state_events.is_empty() {
            return Ok(HashMap::new());
        }
        let pool = self.storage.pool();
        let parent_ids: Vec<OwnedEventId> = state_events
            .iter()
            .flat_map(|e| e.prev_events.iter().cloned())
            .collect();
        let parents = store::events_by_id(pool, &parent_ids).await?;
        // Each event's replaced event, or the auth events to look for it among.
        let mut named: Vec<(OwnedEventId, OwnedEventId)> = Vec::new();
        let mut by_auth: Vec<&Pdu> = Vec::new();
        let mut groups = HashSet::new();
        for event in &state_events {
            let Some(key) = event.state_key_pair() else {
                continue;
            };
            let group = event
                .prev_events
                .iter()
                .find_map(|p| parents.get(p).and_then(|s| s.state_group));
            match group {
                Some(group) => {
                    // Each distinct group is a state map to load: past the bound the rest of
                    // the events go without, so a large state section stays linear.
                    if !groups.contains(&group) {
                        if groups.len() >= MAX_GROUPS_LOADED {
                            continue;
                        }
                        groups.insert(group);
                    }
                    let state = self.state_at_group(group).await?;
                    if let Some(id) = state.get(&key).filter(|id| **id != event.event_id) {
                        named.push((event.event_id.clone(), id.clone()));
                    }
                }
                None if event.kind == TimelineEventType::RoomMember => by_auth.push(event),
                None => {}
            }
        }
        let wanted: Vec<OwnedEventId> = named
            .iter()
            .map(|(_, id)| id.clone())
            .chain(by_auth.iter().flat_map(|e| e.auth_events.iter().cloned()))
            .collect();
        let loaded = self.pdus(&wanted).await?;
        let mut out = HashMap::new();
        for (event, replaced) in named {
            if let Some(pdu) = loaded.get(&replaced) {
                out.insert(event, pdu.clone());
            }
        }
        for event in by_auth {
            let previous = event.auth_events.iter().find_map(|id| {
                loaded.get(id).filter(|a| {
                    a.kind == TimelineEventType::RoomMember && a.state_key == event.state_key
                })
            });
            if let Some(pdu) = previous {
                out.insert(event.event_id.clone(), pdu.clone());
            }
        }
        Ok(out)
    }

    /// `unsigned` for a state event served without per-viewer fields: what it replaced.
    pub(crate) async fn state_unsigned(
        &self,
        events: &[&Pdu],
    ) -> Result<HashMap<OwnedEventId, Value>> {
        Ok(self
            .replaced_states(events)
            .await?
            .into_iter()
            .map(|(id, replaced)| {
                let mut unsigned = Map::new();
                add_replaced(&mut unsigned, &replaced);
                (id, Value::Object(unsigned))
            })
            .collect())
    }
}

/// Adds what a state event replaced to its `unsigned`.
pub(crate) fn add_replaced(unsigned: &mut Map<String, Value>, replaced: &Pdu) {
    unsigned.insert("prev_content".into(), replaced.content_value());
    unsigned.insert("prev_sender".into(), replaced.sender.as_str().into());
    unsigned.insert("replaces_state".into(), replaced.event_id.as_str().into());
}
