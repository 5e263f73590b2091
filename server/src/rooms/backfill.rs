//! History older than anything this node holds of a room (before it joined, or before the
//! oldest event it kept), fetched from other servers and placed under the timeline.
//!
//! Backfilled events take stream positions below every position in use (counting down from
//! zero), so backward pagination reaches them after everything already stored, and no sync, no
//! outgoing queue and no notification count ever sees them: those read positions above a token.
//! Each event is placed over the state after its parents (resolved when they disagree) or, when
//! its parents cannot be had, over the state another server reported before it. It is checked
//! against its auth events and that state; it never changes the room's current state, its
//! forward extremities or anyone's membership.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{CanonicalJsonObject, OwnedEventId, RoomId, events::TimelineEventType};

use super::{
    Rooms, StateMap,
    auth::{self, RemoteVerdict},
    builder,
    pdu::{Pdu, Replaced},
    redaction::{Earlier, redact_in_memory},
    store::{self, EventRow, NewGroup},
};
use crate::{Result, StreamPosition, storage::Batch};

/// Timeline events at the bottom of a room whose missing parents make the backfill frontier.
const FRONTIER_SCAN: i64 = 20;

/// Events placed by one call, at most.
pub const MAX_BACKFILL_BATCH: usize = 200;

/// An event ready to be written under the timeline.
struct Placed {
    pdu: Arc<Pdu>,
    group: i64,
    new_group: Option<NewGroup>,
    /// Already stored as an outlier: its row is updated rather than inserted.
    outlier: bool,
}

impl Rooms {
    /// The events this node lacks just before the oldest part of the room's timeline: what to
    /// ask other servers to backfill from. Empty when the timeline reaches the create event.
    pub async fn backfill_frontier(&self, room: &RoomId) -> Result<Vec<OwnedEventId>> {
        store::backfill_frontier(self.storage.pool(), room, FRONTIER_SCAN).await
    }

    /// Which of `objects` (events of `room` fetched by backfill) could not be placed over the
    /// state after their parents: neither their parents nor the batch give their state, so the
    /// state before them must be asked for.
    pub async fn backfill_needs_state(
        &self,
        room: &RoomId,
        objects: &[CanonicalJsonObject],
    ) -> Result<Vec<OwnedEventId>> {
        let rules = builder::rules_for(&self.room_version(room).await?)?;
        let pdus = sorted_pdus(room, objects, &rules);
        let mut placeable: HashSet<OwnedEventId> = HashSet::new();
        let parents: Vec<OwnedEventId> = pdus
            .iter()
            .flat_map(|p| p.prev_events.iter().cloned())
            .collect();
        let stored = store::events_by_id(self.storage.pool(), &parents).await?;
        let mut needs = Vec::new();
        for pdu in &pdus {
            let known = pdu.prev_events.iter().all(|p| {
                placeable.contains(p) || stored.get(p).is_some_and(|s| s.state_group.is_some())
            });
            if !known && pdu.kind != TimelineEventType::RoomCreate {
                needs.push(pdu.event_id.clone());
            }
            placeable.insert(pdu.event_id.clone());
        }
        Ok(needs)
    }

    /// Places backfilled events of `room` under its timeline, oldest first. `states` gives the
    /// state before events whose parents this node lacks ([`Rooms::backfill_needs_state`]);
    /// events with neither are skipped, and so are events that do not lead back from the
    /// frontier ([`Rooms::backfill_frontier`]): another server may only fill in the history
    /// behind it. The caller must have checked the events' signatures and hashes, and
    /// redacted those whose hash did not match; their format is checked here. Returns how many
    /// events joined the timeline.
    pub async fn add_backfilled(
        &self,
        room: &RoomId,
        objects: &[CanonicalJsonObject],
        states: &HashMap<OwnedEventId, StateMap>,
    ) -> Result<usize> {
        let rules = builder::rules_for(&self.room_version(room).await?)?;
        let frontier = self.backfill_frontier(room).await?;
        let pdus = behind(&frontier, sorted_pdus(room, objects, &rules));
        let ids: Vec<OwnedEventId> = pdus.iter().map(|p| p.event_id.clone()).collect();
        let already = store::events_by_id(self.storage.pool(), &ids).await?;
        // Held so that no other write of this room interleaves with the placing.
        let mut guard = self.lock(room).await?;

        let mut groups: HashMap<OwnedEventId, (i64, Arc<StateMap>)> = HashMap::new();
        let mut placed: Vec<Placed> = Vec::new();
        for pdu in pdus.into_iter().take(MAX_BACKFILL_BATCH) {
            let outlier = match already.get(&pdu.event_id) {
                Some(stored) if stored.position.is_some() => continue,
                Some(_) => true,
                None => false,
            };
            let Some((before, base)) = self.state_before(&rules, &pdu, &groups, states).await?
            else {
                continue;
            };
            let wanted = auth::events_to_check(&rules.authorization, &pdu, &[&before]);
            let mut events = self.pdus(&wanted).await?;
            for p in &placed {
                if wanted.contains(&p.pdu.event_id) {
                    events.insert(p.pdu.event_id.clone(), p.pdu.clone());
                }
            }
            // Checked against the state before it twice over: an event from the past cannot
            // soft-fail against the present.
            let verdict = auth::check_remote(&rules.authorization, &pdu, &events, &before, &before);
            let mut pdu = pdu;
            pdu.rejected = matches!(verdict, RemoteVerdict::Rejected(_));
            pdu.replaced = Replaced::in_state(&before, &pdu);
            let pdu = Arc::new(pdu);
            let state_key = (!pdu.rejected).then(|| pdu.state_key_pair()).flatten();
            let (group, new_group, after) = match (state_key, base) {
                // The state did not change and is already stored: share its group.
                (None, Some(group)) => (group, None, before),
                (key, _) => {
                    let mut after = (*before).clone();
                    if let Some(key) = key {
                        after.insert(key, pdu.event_id.clone());
                    }
                    let id = self.next_group_id();
                    let new = NewGroup {
                        id,
                        prev: None,
                        chain_len: 0,
                        entries: after.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    };
                    (id, Some(new), Arc::new(after))
                }
            };
            groups.insert(pdu.event_id.clone(), (group, after));
            placed.push(Placed {
                pdu,
                group,
                new_group,
                outlier,
            });
        }
        if placed.is_empty() {
            return Ok(0);
        }

        for p in &placed {
            if let (Some(group), Some((_, state))) = (&p.new_group, groups.get(&p.pdu.event_id)) {
                self.inner.groups.insert(group.id, state.clone(), 0);
            }
        }
        let count = placed.len();
        let mut txn = self.storage.write().await?;
        let lowest = store::lowest_position(txn.conn()).await?.min(0);
        let mut batch = Batch::default();
        let mut earlier = Earlier::new();
        let mut redacted = Vec::new();
        for (i, p) in placed.into_iter().enumerate() {
            // Oldest lowest, the newest just under what was there before.
            let position = StreamPosition(lowest - count as i64 + i as i64);
            if p.outlier {
                store::push_promote_outlier(&mut batch, &p.pdu, position.0, p.group);
                if let Some(group) = &p.new_group {
                    store::push_group(&mut batch, room, group);
                }
            } else {
                store::push_event(
                    &mut batch,
                    &EventRow {
                        pdu: &p.pdu,
                        position,
                        state_group: p.group,
                        new_group: p.new_group,
                        membership: None,
                        txn: None,
                        soft_failed: false,
                    },
                );
            }
            if let Some(state) = guard.state.as_ref() {
                let accepted = !p.pdu.rejected;
                redacted.extend(
                    self.remote_redactions(state, &p.pdu, accepted, &earlier, &mut batch)
                        .await?,
                );
            }
            earlier.insert(p.pdu.event_id.clone(), p.pdu);
        }
        txn.commit_batch(batch).await?;
        if let Some(state) = guard.state.as_mut() {
            redact_in_memory(state, &redacted);
        }
        Ok(count)
    }

    /// The state before a backfilled event, and the stored group it equals when it is the
    /// unchanged state after its one parent. None when it cannot be known.
    async fn state_before(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        pdu: &Pdu,
        placed: &HashMap<OwnedEventId, (i64, Arc<StateMap>)>,
        given: &HashMap<OwnedEventId, StateMap>,
    ) -> Result<Option<(Arc<StateMap>, Option<i64>)>> {
        if pdu.kind == TimelineEventType::RoomCreate {
            return Ok(Some((Arc::new(StateMap::default()), None)));
        }
        let stored = store::events_by_id(self.storage.pool(), &pdu.prev_events).await?;
        let mut states: Vec<(i64, Arc<StateMap>)> = Vec::new();
        for prev in &pdu.prev_events {
            if let Some((group, state)) = placed.get(prev) {
                states.push((*group, state.clone()));
            } else if let Some(group) = stored.get(prev).and_then(|s| s.state_group) {
                states.push((group, self.state_at_group(group).await?));
            } else {
                return Ok(given
                    .get(&pdu.event_id)
                    .cloned()
                    .map(|s| (Arc::new(s), None)));
            }
        }
        states.sort_by_key(|(g, _)| *g);
        states.dedup_by_key(|(g, _)| *g);
        match states.len() {
            0 => Ok(given
                .get(&pdu.event_id)
                .cloned()
                .map(|s| (Arc::new(s), None))),
            1 => Ok(states.pop().map(|(g, s)| (s, Some(g)))),
            _ => {
                let maps = states.into_iter().map(|(_, s)| (*s).clone()).collect();
                Ok(Some((
                    Arc::new(self.resolve_states(rules, maps, &[]).await?),
                    None,
                )))
            }
        }
    }
}

/// Those of `pdus` reached from `frontier` by following `prev_events` within them.
fn behind(frontier: &[OwnedEventId], pdus: Vec<Pdu>) -> Vec<Pdu> {
    let by_id: HashMap<&OwnedEventId, &Pdu> = pdus.iter().map(|p| (&p.event_id, p)).collect();
    let mut reached: HashSet<OwnedEventId> = HashSet::new();
    let mut next: Vec<&OwnedEventId> = frontier.iter().collect();
    while let Some(id) = next.pop() {
        let Some(pdu) = by_id.get(id) else {
            continue;
        };
        if reached.insert(id.clone()) {
            next.extend(pdu.prev_events.iter());
        }
    }
    pdus.into_iter()
        .filter(|p| reached.contains(&p.event_id))
        .collect()
}

/// The events of `room` among `objects` that parse, oldest first. Their hashes are not
/// checked: the caller redacted those whose hash did not match, as the spec asks.
fn sorted_pdus(
    room: &RoomId,
    objects: &[CanonicalJsonObject],
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Vec<Pdu> {
    let mut seen = HashSet::new();
    let mut pdus: Vec<Pdu> = objects
        .iter()
        .filter(|o| super::pdu::check_format(o, &rules.event_format).is_ok())
        .filter_map(|o| {
            let id = builder::event_id_of(o, rules).ok()?;
            let text = serde_json::to_string(o).ok()?;
            Pdu::parse(id, Some(room), &text).ok()
        })
        .filter(|p| p.room == room && seen.insert(p.event_id.clone()))
        .collect();
    pdus.sort_by(|a, b| {
        a.depth
            .cmp(&b.depth)
            .then_with(|| a.event_id.cmp(&b.event_id))
    });
    parents_first(pdus)
}

/// Orders `pdus` (sorted by depth) so that every event comes after those of its parents that
/// are among them, whatever depths their senders claimed; events in a cycle are dropped.
fn parents_first(mut pending: Vec<Pdu>) -> Vec<Pdu> {
    let ids: HashSet<OwnedEventId> = pending.iter().map(|p| p.event_id.clone()).collect();
    let mut done: HashSet<OwnedEventId> = HashSet::new();
    let mut out = Vec::with_capacity(pending.len());
    loop {
        let before = pending.len();
        let mut rest = Vec::new();
        for pdu in pending {
            let ready = pdu
                .prev_events
                .iter()
                .all(|p| !ids.contains(p) || done.contains(p));
            if ready {
                done.insert(pdu.event_id.clone());
                out.push(pdu);
            } else {
                rest.push(pdu);
            }
        }
        pending = rest;
        if pending.is_empty() || pending.len() == before {
            return out;
        }
    }
}
