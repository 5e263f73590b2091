//! Room state in memory: the current state of each loaded room (with the events auth needs),
//! and a bounded cache of state groups loaded from the database.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    OwnedEventId, OwnedRoomId, RoomVersionId, events::StateEventType,
    room_version_rules::RoomVersionRules,
};
use sqlx::AnyPool;

use super::{StateMap, dag::RoomGraph, pdu::Pdu, store};
use crate::{Error, Result};

/// State groups kept in memory; the cache is emptied when it grows past this.
const GROUP_CACHE_LIMIT: usize = 512;

/// The current head of one room, guarded by the room's lock while an event is added.
pub(crate) struct RoomState {
    /// The room.
    pub(crate) room_id: OwnedRoomId,
    /// Its version.
    pub(crate) version: RoomVersionId,
    /// The version's rules.
    pub(crate) rules: RoomVersionRules,
    /// The state group of the current state.
    pub(crate) group: i64,
    /// Length of the delta chain of `group`.
    pub(crate) chain_len: i64,
    /// The current state.
    pub(crate) state: Arc<StateMap>,
    /// The events of the current state, for authorization.
    pub(crate) state_events: HashMap<OwnedEventId, Arc<Pdu>>,
    /// The forward extremities.
    pub(crate) extremities: Vec<OwnedEventId>,
    /// The greatest depth seen.
    pub(crate) depth: u64,
    /// The recent DAG.
    pub(crate) graph: RoomGraph,
    /// Whether the room is listed in the public directory.
    pub(crate) published: bool,
}

impl RoomState {
    /// The current state event of `(kind, key)`.
    pub(crate) fn get(&self, kind: &StateEventType, key: &str) -> Option<&Arc<Pdu>> {
        self.state
            .get(&(kind.clone(), key.to_owned()))
            .and_then(|id| self.state_events.get(id))
    }

    /// A field of the current state event's content.
    pub(crate) fn content_str(&self, kind: &StateEventType, field: &str) -> Option<String> {
        self.get(kind, "").and_then(|e| e.content_str(field))
    }
}

/// A bounded cache of state groups by ID.
#[derive(Clone, Default)]
pub(crate) struct GroupCache {
    groups: Arc<Mutex<HashMap<i64, (Arc<StateMap>, i64)>>>,
}

impl GroupCache {
    /// Remembers a group's full state and chain length.
    pub(crate) fn insert(&self, group: i64, state: Arc<StateMap>, chain_len: i64) {
        let Ok(mut groups) = self.groups.lock() else {
            return;
        };
        if groups.len() >= GROUP_CACHE_LIMIT {
            groups.clear();
        }
        groups.insert(group, (state, chain_len));
    }

    fn get(&self, group: i64) -> Option<(Arc<StateMap>, i64)> {
        self.groups.lock().ok()?.get(&group).cloned()
    }

    /// The full state of a group and its chain length, from the cache or the database.
    pub(crate) async fn load(&self, pool: &AnyPool, group: i64) -> Result<(Arc<StateMap>, i64)> {
        if let Some(hit) = self.get(group) {
            return Ok(hit);
        }
        // Walk down the delta chain (bounded: chains are cut at MAX_DELTA_CHAIN, and a cached
        // group ends the walk early), then apply the deltas from the bottom up.
        let mut links = Vec::new();
        let mut base: Option<(Arc<StateMap>, i64)> = None;
        let mut current = Some(group);
        while let Some(g) = current {
            if links.len() as i64 > store::MAX_DELTA_CHAIN + 1 {
                return Err(Error::Corrupt(format!(
                    "state group chain of {group} too long"
                )));
            }
            if g != group
                && let Some(hit) = self.get(g)
            {
                base = Some(hit);
                break;
            }
            let (prev, entries) = store::group_link(pool, g).await?;
            links.push(entries);
            current = prev;
        }
        let (mut state, chain_len) = match base {
            Some((b, len)) => ((*b).clone(), len + links.len() as i64),
            None => (StateMap::default(), links.len() as i64 - 1),
        };
        for entries in links.into_iter().rev() {
            state.extend(entries);
        }
        let state = Arc::new(state);
        self.insert(group, state.clone(), chain_len.max(0));
        Ok((state, chain_len.max(0)))
    }
}
