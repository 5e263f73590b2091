//! Adding an event that was built elsewhere (a remote server's PDU, or one built here over
//! chosen parents): format and hash checks, the state before it from its parents (resolved
//! when they disagree), the three auth checks, and the new current state over the new forward
//! extremities (resolved when they disagree). State resolution runs on a blocking thread over
//! events loaded beforehand.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, UserId,
    events::TimelineEventType,
};

use super::{
    EventTemplate, Rooms, StateMap,
    auth::{self, RemoteVerdict},
    builder::{self, Placement, Signer},
    pdu::{Pdu, Replaced},
    resolve,
    store::{self, EventRow, Head, NewGroup},
};
use crate::{Error, Result, StreamPosition, storage::Batch};

/// A state group holding the whole of `state`.
fn snapshot(id: i64, state: &StateMap) -> NewGroup {
    NewGroup {
        id,
        prev: None,
        chain_len: 0,
        entries: state.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// Auth-chain events loaded for one resolution, at most.
const MAX_AUTH_CHAIN: usize = resolve::MAX_RESOLUTION_EVENTS;

impl Rooms {
    /// Builds and signs an event as `sender` over the given parents without adding it (what a
    /// remote server's make_join asks for, and how tests make forks).
    pub async fn build_over(
        &self,
        room: &RoomId,
        sender: &UserId,
        template: &EventTemplate,
        prev_events: &[OwnedEventId],
    ) -> Result<CanonicalJsonObject> {
        let guard = self.lock(room).await?;
        let Some(state) = guard.state.as_ref() else {
            return Err(Error::Internal("room head not loaded".into()));
        };
        let parents = self.pdus(prev_events).await?;
        let depth = parents.values().map(|p| p.depth).max().unwrap_or(0);
        let before = self.state_after(&state.rules, room, prev_events).await?;
        let auth_room = super::state::RoomState {
            room_id: state.room_id.clone(),
            version: state.version.clone(),
            rules: state.rules.clone(),
            group: state.group,
            chain_len: state.chain_len,
            state: Arc::new(before.clone()),
            state_events: HashMap::new(),
            extremities: Vec::new(),
            depth,
            graph: super::dag::RoomGraph::new(),
            published: false,
        };
        let auth_events = auth::auth_events_for(&auth_room, sender, template)?;
        let pdu = builder::build_event(
            &state.rules,
            &Signer {
                server_name: &self.config.server_name,
                key_pair: self.key.key_pair(),
            },
            sender,
            template,
            &Placement {
                room: Some(room),
                prev_events,
                auth_events: &auth_events,
                depth: builder::depth_after(depth),
            },
            MilliSecondsSinceUnixEpoch::now(),
        )?;
        pdu.to_canonical()
    }

    /// The state after the given events (resolved when they disagree).
    pub(crate) async fn state_after(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        room: &RoomId,
        events: &[OwnedEventId],
    ) -> Result<StateMap> {
        Ok(self.state_after_with_group(rules, room, events).await?.0)
    }

    /// [`Rooms::state_after`], with the stored group it is and that group's delta chain length
    /// when there is one event.
    async fn state_after_with_group(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        room: &RoomId,
        events: &[OwnedEventId],
    ) -> Result<(StateMap, Option<(i64, i64)>)> {
        let stored = store::events_by_id(self.storage.pool(), events).await?;
        let mut states = Vec::new();
        let mut groups = Vec::new();
        for id in events {
            let Some(event) = stored.get(id) else {
                return Err(Error::NotFound(format!("missing parent {id}")));
            };
            if event.pdu.room != room {
                return Err(Error::BadJson(format!("parent {id} is in another room")));
            }
            let Some(group) = event.state_group else {
                return Err(Error::NotFound(format!("no state known at {id}")));
            };
            let (state, chain) = self.inner.groups.load(self.storage.pool(), group).await?;
            states.push((*state).clone());
            groups.push((group, chain));
        }
        let single = match groups.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        Ok((self.resolve_states(rules, states, &[]).await?, single))
    }

    /// Resolves state maps on a blocking thread, after loading their events and auth chains;
    /// `extra` are events not stored yet (the one being added).
    pub async fn resolve_states(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        mut states: Vec<StateMap>,
        extra: &[Arc<Pdu>],
    ) -> Result<StateMap> {
        states.dedup();
        if states.len() <= 1 {
            return Ok(states.pop().unwrap_or_default());
        }
        let mut ids: Vec<OwnedEventId> = states
            .iter()
            .flat_map(|s| s.values().cloned())
            .chain(extra.iter().flat_map(|e| e.auth_events.iter().cloned()))
            .filter(|id| !extra.iter().any(|e| e.event_id == *id))
            .collect();
        ids.sort();
        ids.dedup();
        let loaded = store::auth_chain_events(self.storage.pool(), &ids, MAX_AUTH_CHAIN).await?;
        let mut events: HashMap<OwnedEventId, Arc<Pdu>> = loaded
            .into_iter()
            .map(|(id, p)| (id, Arc::new(p)))
            .collect();
        for event in extra {
            events.insert(event.event_id.clone(), event.clone());
        }
        let rules = rules.clone();
        tokio::task::spawn_blocking(move || resolve::resolve(&rules, &states, &events))
            .await
            .map_err(|e| Error::Internal(format!("state resolution task: {e}")))?
    }

    /// Adds an event built elsewhere. Returns how it fared; rejected events are stored as
    /// rejected (outside timelines), soft-failed ones are stored but do not become extremities.
    pub async fn add_pdu(
        &self,
        room: &RoomId,
        object: CanonicalJsonObject,
    ) -> Result<RemoteVerdict> {
        self.add_pdu_at(room, object, None).await
    }

    /// Adds an event whose parents this node lacks, with the state before it as another
    /// server reported it (a gap in the DAG: the parents stay unknown).
    pub async fn add_pdu_after_gap(
        &self,
        room: &RoomId,
        object: CanonicalJsonObject,
        state_before: StateMap,
    ) -> Result<RemoteVerdict> {
        self.add_pdu_at(room, object, Some(state_before)).await
    }

    async fn add_pdu_at(
        &self,
        room: &RoomId,
        object: CanonicalJsonObject,
        state_before: Option<StateMap>,
    ) -> Result<RemoteVerdict> {
        let mut guard = self.lock(room).await?;
        let Some(state) = guard.state.as_mut() else {
            return Err(Error::Internal("room head not loaded".into()));
        };
        let rules = state.rules.clone();
        let event_id = builder::event_id_of(&object, &rules)?;
        if store::event(self.storage.pool(), event_id.as_str())
            .await?
            .is_some()
        {
            return Ok(RemoteVerdict::Accepted);
        }
        // A content hash that does not match means the event must be redacted before use;
        // events arriving here are taken whole only when the hash matches.
        let mut pdu = super::federated::parse_checked(room, &object, &rules)?;
        // `base`: the stored group the state before is, when it is one parent's.
        let (before, base) = match state_before {
            Some(given) => (given, None),
            None => {
                self.state_after_with_group(&rules, room, &pdu.prev_events)
                    .await?
            }
        };
        let ids = auth::events_to_check(&rules.authorization, &pdu, &[&before, &state.state]);
        let events = self.pdus(&ids).await?;
        let verdict =
            auth::check_remote(&rules.authorization, &pdu, &events, &before, &state.state);
        pdu.rejected = matches!(verdict, RemoteVerdict::Rejected(_));
        pdu.replaced = Replaced::in_state(&before, &pdu);
        let pdu = Arc::new(pdu);

        // The state after the event, and the new head.
        let mut after = before.clone();
        if !pdu.rejected
            && let Some(key) = pdu.state_key_pair()
        {
            after.insert(key, pdu.event_id.clone());
        }
        let accepted = verdict == RemoteVerdict::Accepted;
        let mut extremities = state.extremities.clone();
        if accepted {
            extremities.retain(|e| !pdu.prev_events.contains(e));
            extremities.push(pdu.event_id.clone());
            super::keep_newest_extremities(&mut extremities);
        }
        let current = if !accepted {
            (*state.state).clone()
        } else if extremities.len() <= super::MAX_PREV_EVENTS {
            // As many forks as one event may merge: the head is what such a merge would see.
            let mut head_states = Vec::with_capacity(extremities.len());
            for ext in &extremities {
                if *ext == pdu.event_id {
                    head_states.push(after.clone());
                } else {
                    head_states.push(
                        self.state_after(&rules, room, std::slice::from_ref(ext))
                            .await?,
                    );
                }
            }
            self.resolve_states(&rules, head_states, std::slice::from_ref(&pdu))
                .await?
        } else {
            // More forks than that: resolving them all again for every event would make each
            // sibling a peer sends cost as much as all the ones before it. The current state
            // already stands for the other forks, so only the new one is merged into it.
            let head_states = vec![(*state.state).clone(), after.clone()];
            self.resolve_states(&rules, head_states, std::slice::from_ref(&pdu))
                .await?
        };

        // The event's state group: its parent's when it changes nothing, a delta over it when
        // it sets one entry, a snapshot when the parent's is not known or the chain is long
        // ([`store::needs_snapshot`]).
        let set = (!pdu.rejected).then(|| pdu.state_key_pair()).flatten();
        let (group_id, event_chain, new_group) = match (base, set) {
            (Some((group, chain)), None) => (group, chain, None),
            (Some((group, chain)), Some(key)) if !store::needs_snapshot(chain, after.len()) => {
                let id = self.next_group_id();
                let delta = NewGroup {
                    id,
                    prev: Some(group),
                    chain_len: chain + 1,
                    entries: vec![(key, pdu.event_id.clone())],
                };
                (id, chain + 1, Some(delta))
            }
            _ => {
                let id = self.next_group_id();
                (id, 0, Some(snapshot(id, &after)))
            }
        };
        // The room's head: unchanged, the event's own group, or a snapshot of the resolution.
        let (head_group, head_chain, head_new) = if current == *state.state {
            (state.group, state.chain_len, None)
        } else if current == after {
            (group_id, event_chain, None)
        } else {
            let id = self.next_group_id();
            (id, 0, Some(snapshot(id, &current)))
        };

        let mut txn = self.storage.write().await?;
        let position: StreamPosition = txn.next_position();
        let membership = (accepted && pdu.kind == TimelineEventType::RoomMember)
            .then(|| {
                let user = pdu
                    .state_key
                    .as_deref()
                    .and_then(|k| UserId::parse(k).ok())?;
                Some((user, pdu.content_str("membership")?))
            })
            .flatten();
        let mut batch = Batch::default();
        let new_event_group = new_group.is_some();
        store::push_event(
            &mut batch,
            &EventRow {
                pdu: &pdu,
                position,
                state_group: group_id,
                new_group,
                membership,
                txn: None,
                soft_failed: matches!(verdict, RemoteVerdict::SoftFailed(_)),
            },
        );
        let redacted = self
            .remote_redactions(state, &pdu, accepted, &Default::default(), &mut batch)
            .await?;
        if let Some(group) = &head_new {
            store::push_group(&mut batch, room, group);
        }
        store::push_room_head(
            &mut batch,
            room,
            &Head {
                group: head_group,
                state: &current,
                extremities: &extremities,
            },
        )?;
        txn.commit_batch(batch).await?;

        let current = Arc::new(current);
        if new_event_group {
            self.inner
                .groups
                .insert(group_id, Arc::new(after), event_chain);
        }
        if head_new.is_some() {
            self.inner.groups.insert(head_group, current.clone(), 0);
        }
        // Rejected and soft-failed events stay out of the head; only accepted ones extend it.
        if accepted {
            state.graph.add(&pdu.event_id, &pdu.prev_events);
            state.depth = state.depth.max(pdu.depth);
        }
        state.extremities = extremities;
        state.group = head_group;
        state.chain_len = head_chain;
        if !Arc::ptr_eq(&state.state, &current) && *state.state != *current {
            // Only the current state's events are kept in memory.
            let ids: std::collections::HashSet<&OwnedEventId> = current.values().collect();
            state.state_events.retain(|id, _| ids.contains(id));
            let missing: Vec<OwnedEventId> = current
                .values()
                .filter(|id| !state.state_events.contains_key(*id))
                .filter(|id| **id != pdu.event_id)
                .cloned()
                .collect();
            if ids.contains(&pdu.event_id) {
                state.state_events.insert(pdu.event_id.clone(), pdu.clone());
            }
            for (id, event) in self.pdus(&missing).await? {
                state.state_events.insert(id, event);
            }
        }
        state.state = current;
        super::redaction::redact_in_memory(state, &redacted);
        Ok(verdict)
    }

    pub(crate) fn next_group_id(&self) -> i64 {
        self.inner
            .next_group
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}
