//! The state event a state event replaced, which clients read from `unsigned.prev_content`,
//! `prev_sender` and `replaces_state` (a membership's previous value tells a DM's invitee who
//! invited them, a display name change from a join).
//!
//! The replaced event is the one the state before the event held under the same key. It is
//! recorded with the event when the event is stored ([`Pdu::replaced`], the column
//! `events.replaces_state`), where the state before is at hand, so serving it costs one load
//! of the replaced events and no state map. Rows stored before the column existed, and
//! outliers, are worked out on first read and recorded then: from the state after the
//! event's first parent with known state, or, for a membership whose parents this node lacks
//! (a join made through another server), from its auth events.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{OwnedEventId, OwnedRoomId, events::TimelineEventType};
use serde_json::{Map, Value};

use super::{
    Rooms,
    pdu::{Pdu, Replaced},
    store,
};
use crate::{Result, storage::Batch};

/// The states, at most, that one call loads to work out what events not yet recorded
/// replaced. Only rows from before the record existed need this; the rest of them are worked
/// out by later calls, each recording what it found.
const MAX_GROUPS_LOADED: usize = 64;

impl Rooms {
    /// The state events that `events` replaced, by the replacing event's ID; events that
    /// replaced nothing (or are not state events) are absent.
    pub(crate) async fn replaced_states(
        &self,
        events: &[&Pdu],
    ) -> Result<HashMap<OwnedEventId, Arc<Pdu>>> {
        let mut named: Vec<(OwnedEventId, OwnedEventId)> = Vec::new();
        let mut unknown: Vec<&Pdu> = Vec::new();
        for event in events.iter().copied().filter(|e| e.state_key.is_some()) {
            match &event.replaced {
                Replaced::Event(id) => named.push((event.event_id.clone(), id.clone())),
                Replaced::Nothing => {}
                Replaced::Unknown => unknown.push(event),
            }
        }
        if !unknown.is_empty() {
            for (event, replaced) in self.work_out_replaced(&unknown).await? {
                if let Replaced::Event(id) = replaced {
                    named.push((event, id));
                }
            }
        }
        if named.is_empty() {
            return Ok(HashMap::new());
        }
        let wanted: Vec<OwnedEventId> = named.iter().map(|(_, id)| id.clone()).collect();
        let loaded = self.pdus(&wanted).await?;
        Ok(named
            .into_iter()
            .filter_map(|(event, replaced)| loaded.get(&replaced).map(|p| (event, p.clone())))
            .collect())
    }

    /// Works out what `events` (state events with nothing recorded) replaced and records it,
    /// in the database and in the room heads in memory; events past the first
    /// [`MAX_GROUPS_LOADED`] states loaded are left for a later call.
    async fn work_out_replaced(&self, events: &[&Pdu]) -> Result<Vec<(OwnedEventId, Replaced)>> {
        let pool = self.storage.pool();
        let parent_ids: Vec<OwnedEventId> = events
            .iter()
            .flat_map(|e| e.prev_events.iter().cloned())
            .collect();
        let parents = store::events_by_id(pool, &parent_ids).await?;
        let mut decided: Vec<(OwnedEventId, Replaced)> = Vec::new();
        let mut by_auth: Vec<&Pdu> = Vec::new();
        let mut groups = HashSet::new();
        for event in events.iter().copied() {
            let Some(key) = event.state_key_pair() else {
                continue;
            };
            let group = event
                .prev_events
                .iter()
                .find_map(|p| parents.get(p).and_then(|s| s.state_group));
            match group {
                Some(group) => {
                    if !groups.contains(&group) {
                        if groups.len() >= MAX_GROUPS_LOADED {
                            continue;
                        }
                        groups.insert(group);
                    }
                    let state = self.state_at_group(group).await?;
                    let replaced = match state.get(&key) {
                        Some(id) if *id != event.event_id => Replaced::Event(id.clone()),
                        _ => Replaced::Nothing,
                    };
                    decided.push((event.event_id.clone(), replaced));
                }
                None if event.kind == TimelineEventType::RoomMember => by_auth.push(event),
                None => decided.push((event.event_id.clone(), Replaced::Nothing)),
            }
        }
        let auth_ids: Vec<OwnedEventId> = by_auth
            .iter()
            .flat_map(|e| e.auth_events.iter().cloned())
            .collect();
        let auth = self.pdus(&auth_ids).await?;
        for event in by_auth {
            let previous = event.auth_events.iter().find_map(|id| {
                auth.get(id).filter(|a| {
                    a.kind == TimelineEventType::RoomMember && a.state_key == event.state_key
                })
            });
            let replaced = match previous {
                Some(pdu) => Replaced::Event(pdu.event_id.clone()),
                None => Replaced::Nothing,
            };
            decided.push((event.event_id.clone(), replaced));
        }
        if decided.is_empty() {
            return Ok(decided);
        }
        let mut batch = Batch::default();
        for (event, replaced) in &decided {
            store::push_replaced(&mut batch, event, replaced);
        }
        self.storage
            .write_batched()
            .await?
            .commit_batch(batch)
            .await?;
        let rooms: HashSet<&OwnedRoomId> = events.iter().map(|e| &e.room).collect();
        let by_id: HashMap<&OwnedEventId, &Replaced> =
            decided.iter().map(|(e, r)| (e, r)).collect();
        for room in rooms {
            self.record_replaced_in_head(room, &by_id).await;
        }
        Ok(decided)
    }

    /// Puts what was worked out into the room head's copies of its state events, which would
    /// otherwise stay unrecorded until the room is loaded again.
    async fn record_replaced_in_head(
        &self,
        room: &OwnedRoomId,
        decided: &HashMap<&OwnedEventId, &Replaced>,
    ) {
        let handle = self.handle(room);
        let mut guard = handle.lock().await;
        let Some(head) = guard.state.as_mut() else {
            return;
        };
        for (id, replaced) in decided {
            if let Some(held) = head.state_events.get_mut(*id)
                && held.replaced == Replaced::Unknown
            {
                Arc::make_mut(held).replaced = (*replaced).clone();
            }
        }
    }

    /// `unsigned` for state events served without per-viewer fields, as JSON text: what each
    /// replaced.
    pub(crate) async fn state_unsigned(
        &self,
        events: &[&Pdu],
    ) -> Result<HashMap<OwnedEventId, String>> {
        Ok(self
            .replaced_states(events)
            .await?
            .into_iter()
            .map(|(id, replaced)| (id, replaced.replaced_unsigned()))
            .collect())
    }
}

/// Adds what a state event replaced to its `unsigned`.
pub(crate) fn add_replaced(unsigned: &mut Map<String, Value>, replaced: &Pdu) {
    unsigned.insert("prev_content".into(), replaced.content_value());
    unsigned.insert("prev_sender".into(), replaced.sender.as_str().into());
    unsigned.insert("replaces_state".into(), replaced.event_id.as_str().into());
}
