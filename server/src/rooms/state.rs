//! Room state in memory: the current state of each loaded room (with the events auth needs),
//! and a cache of state groups loaded from the database, bounded in bytes.

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
    /// The events of the current state, for authorization and for syncs, which serve the
    /// current state from here rather than reading it again.
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

/// Bytes of state maps the group cache may hold; the least recently used go first past it.
pub const GROUP_CACHE_BYTES: usize = 24 << 20;
/// What one map entry costs besides its strings: the key tuple, the event ID's box and the
/// hash table's slot.
const ENTRY_OVERHEAD: usize = 96;

/// The memory a state map holds, approximately, counted as if it shared nothing with other
/// maps (versions of one room's state share most of their entries).
pub(crate) fn state_bytes(state: &StateMap) -> usize {
    state.iter().map(|(key, id)| entry_bytes(key, id)).sum()
}

/// What a cached state made from its room's head by one change is charged: the path of the
/// persistent map the change copied (a few nodes and the entries they hold). The rest it shares
/// with the head, which holds it anyway.
pub(crate) const DERIVED_STATE_BYTES: usize = 8 << 10;

/// The memory one state map entry holds, approximately.
fn entry_bytes((kind, key): &(StateEventType, String), id: &OwnedEventId) -> usize {
    ENTRY_OVERHEAD + display_len(kind) + key.len() + id.as_str().len()
}

/// The length of a value's display form, without building it.
fn display_len(value: &impl std::fmt::Display) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = std::fmt::write(&mut count, format_args!("{value}"));
    count.0
}

/// A cached state group.
struct CachedGroup {
    state: Arc<StateMap>,
    /// The length of its delta chain.
    chain_len: i64,
    /// What [`state_bytes`] says of `state`.
    bytes: usize,
    /// When it was last used, in the cache's own count of uses.
    used: u64,
}

#[derive(Default)]
struct Groups {
    map: HashMap<i64, CachedGroup>,
    /// The sum of the entries' `bytes`.
    bytes: usize,
    /// Uses so far, the clock of `used`.
    uses: u64,
}

/// A cache of state groups by ID, bounded by the bytes of the maps it holds
/// ([`GROUP_CACHE_BYTES`]): a room with large state fits fewer of its groups, not more memory.
#[derive(Clone)]
pub(crate) struct GroupCache {
    groups: Arc<Mutex<Groups>>,
    budget: usize,
}

impl Default for GroupCache {
    fn default() -> Self {
        Self::with_budget(GROUP_CACHE_BYTES)
    }
}

impl GroupCache {
    /// A cache holding at most about `budget` bytes of state.
    pub(crate) fn with_budget(budget: usize) -> Self {
        Self {
            groups: Arc::default(),
            budget,
        }
    }

    /// The approximate bytes of state held, and the number of groups.
    pub(crate) fn usage(&self) -> (usize, usize) {
        self.groups
            .lock()
            .map_or((0, 0), |g| (g.bytes, g.map.len()))
    }

    /// Remembers a group's full state and chain length.
    pub(crate) fn insert(&self, group: i64, state: Arc<StateMap>, chain_len: i64) {
        // A group never changes: one already held is only marked as used, and its size is not
        // measured again (the room's head is put back after every message).
        if self.get(group).is_some() {
            return;
        }
        let bytes = state_bytes(&state);
        self.insert_sized(group, state, chain_len, bytes);
    }

    /// [`GroupCache::insert`] of a state charged `bytes` rather than its [`state_bytes`]: a
    /// state sharing its entries with a room's head ([`DERIVED_STATE_BYTES`] per change).
    pub(crate) fn insert_sized(
        &self,
        group: i64,
        state: Arc<StateMap>,
        chain_len: i64,
        bytes: usize,
    ) {
        if self.get(group).is_some() {
            return;
        }
        if bytes > self.budget {
            return;
        }
        let Ok(mut groups) = self.groups.lock() else {
            return;
        };
        if let Some(old) = groups.map.remove(&group) {
            groups.bytes -= old.bytes;
        }
        while groups.bytes + bytes > self.budget {
            // The least recently used goes; a scan is cheap next to the map it frees.
            let Some(oldest) = groups
                .map
                .iter()
                .min_by_key(|(_, g)| g.used)
                .map(|(id, _)| *id)
            else {
                break;
            };
            if let Some(old) = groups.map.remove(&oldest) {
                groups.bytes -= old.bytes;
            }
        }
        groups.uses += 1;
        let used = groups.uses;
        groups.bytes += bytes;
        groups.map.insert(
            group,
            CachedGroup {
                state,
                chain_len,
                bytes,
                used,
            },
        );
    }

    fn get(&self, group: i64) -> Option<(Arc<StateMap>, i64)> {
        let mut groups = self.groups.lock().ok()?;
        groups.uses += 1;
        let used = groups.uses;
        let hit = groups.map.get_mut(&group)?;
        hit.used = used;
        Some((hit.state.clone(), hit.chain_len))
    }

    /// The full state of a group and its chain length, from the cache or the database.
    pub(crate) async fn load(&self, pool: &AnyPool, group: i64) -> Result<(Arc<StateMap>, i64)> {
        if let Some(hit) = self.get(group) {
            return Ok(hit);
        }
        // The chain down to its snapshot in one query; the nearest group of it that is cached
        // ends what must be read, then the entries above it come in a second query.
        let chain = store::group_chain(pool, group, store::MAX_CHAIN_WALK).await?;
        let Some((_, bottom_prev)) = chain.last() else {
            return Err(Error::Corrupt(format!("missing state group {group}")));
        };
        if bottom_prev.is_some() {
            return Err(Error::Corrupt(format!(
                "state group chain of {group} broken or too long"
            )));
        }
        let mut base: Option<(usize, Arc<StateMap>, i64)> = None;
        for (depth, (g, _)) in chain.iter().enumerate().skip(1) {
            if let Some((state, len)) = self.get(*g) {
                base = Some((depth, state, len));
                break;
            }
        }
        let links = base.as_ref().map_or(chain.len(), |(depth, ..)| *depth);
        let entries =
            store::chain_entries(pool, group, i64::try_from(links).unwrap_or(i64::MAX)).await?;
        let (mut state, chain_len) = match base {
            Some((_, b, len)) => ((*b).clone(), len + links as i64),
            None => (StateMap::default(), links as i64 - 1),
        };
        // The deepest link first, so that a nearer delta overrides what it replaces.
        let mut by_depth: Vec<Vec<((StateEventType, String), OwnedEventId)>> =
            vec![Vec::new(); links];
        for (depth, key, id) in entries {
            if let Some(level) = usize::try_from(depth)
                .ok()
                .and_then(|d| by_depth.get_mut(d))
            {
                level.push((key, id));
            }
        }
        for level in by_depth.into_iter().rev() {
            state.extend(level);
        }
        let state = Arc::new(state);
        self.insert(group, state.clone(), chain_len.max(0));
        Ok((state, chain_len.max(0)))
    }
}
