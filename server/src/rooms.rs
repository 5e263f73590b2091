//! Rooms: event creation and hashing, the DAG, authorization, state, timelines, aliases and the
//! public directory.
//!
//! # How an event is added
//!
//! 1. Take the room's lock ([`Rooms::room`] loads the room's head into memory on first use).
//! 2. Build the event over the current head: `prev_events` = forward extremities, `auth_events`
//!    chosen by `auth_types_for_event`, then hash and sign it ([`builder`]).
//! 3. Authorize it against the current state ([`auth`]); a failure is `M_FORBIDDEN` and nothing
//!    is stored.
//! 4. Apply it to the in-memory head (state, extremities, DAG window).
//! 5. Write the event row, its edges, a state-group delta (state events only), the membership
//!    change and the new head in one `storage.write()` transaction; committing wakes syncs.
//!
//! If the write fails, the room's in-memory head is marked stale and reloaded from the database
//! by the next caller, so memory never runs ahead of disk.

pub mod acl;
pub mod auth;
pub mod backfill;
pub mod builder;
pub mod create;
pub mod dag;
pub mod directory;
pub mod federated;
pub mod hierarchy;
mod member_cache;
pub mod membership;
pub mod pdu;
mod power;
mod push_context;
mod recent;
mod redaction;
pub mod remote;
mod replaced;
pub mod resolve;
mod state;
mod store;
pub(crate) mod streams;
pub mod timeline;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use ruma::{
    CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId, UserId,
    canonical_json::redact,
    events::{StateEventType, TimelineEventType},
};
use tokio::sync::Mutex as AsyncMutex;
use tracing::{debug, warn};

pub use self::{
    builder::{EventTemplate, SUPPORTED_VERSIONS},
    pdu::Pdu,
    state::GROUP_CACHE_BYTES,
    store::Direction,
};
use self::{
    builder::{Placement, Signer},
    dag::RoomGraph,
    pdu::Replaced,
    state::{GroupCache, RoomState},
    store::{EventRow, Head, NewGroup},
};
use crate::{
    Error, NodeKey, Result, ServerConfig, Storage, StreamPosition, notifier::Notifier,
    storage::Batch,
};

/// A room state: `(event type, state key)` → event ID. A persistent map: a clone shares every
/// entry, and a change copies only the path to the entry changed, so the room's head, the
/// cached states of its recent groups and the states a sync works on are not full copies of a
/// room with thousands of state entries.
pub type StateMap = imbl::HashMap<(StateEventType, String), OwnedEventId>;

/// Parents named by one new event at most (the rest stay extremities for a later event).
pub(crate) const MAX_PREV_EVENTS: usize = 20;
/// Forward extremities a room keeps. Any server may add forks over old events, and each one is
/// written with the room's head and offered to the next resolution; past this many the oldest
/// are forgotten (their state is already in the current state, and their events stay stored).
pub(crate) const MAX_EXTREMITIES: usize = 64;

/// Drops the oldest forward extremities beyond [`MAX_EXTREMITIES`] (the newest are at the end).
pub(crate) fn keep_newest_extremities(extremities: &mut Vec<OwnedEventId>) {
    let excess = extremities.len().saturating_sub(MAX_EXTREMITIES);
    extremities.drain(..excess);
}

/// Recent events loaded into a room's DAG window when the room is loaded.
const LOAD_RECENT_EVENTS: i64 = 200;

type RoomHandle = Arc<AsyncMutex<Loaded>>;

/// A room head in memory, or a marker that it must be reloaded.
pub(crate) struct Loaded {
    state: Option<RoomState>,
}

/// The rooms this node takes part in.
#[derive(Clone)]
pub struct Rooms {
    storage: Storage,
    notifier: Notifier,
    config: Arc<ServerConfig>,
    key: Arc<NodeKey>,
    inner: Arc<Inner>,
}

/// Unread-count entries kept; the cache is emptied when it grows past this.
const UNREAD_CACHE_LIMIT: usize = 10_000;

/// A user's unread counts in a room, valid for events in `(after, upto]`.
#[derive(Debug, Clone, Copy)]
struct UnreadCount {
    after: i64,
    upto: i64,
    notify: u64,
    highlight: u64,
}

struct Inner {
    rooms: Mutex<HashMap<OwnedRoomId, RoomHandle>>,
    unread: Mutex<HashMap<(OwnedUserId, OwnedRoomId), UnreadCount>>,
    /// Per state group and user: the history visibility and the user's membership there
    /// (state groups never change, so neither does this).
    seen_at: Mutex<HashMap<(i64, OwnedUserId), timeline::SeenAt>>,
    groups: GroupCache,
    /// The shared part of push conditions per state group.
    push_bases: push_context::PushBaseCache,
    /// Memberships as last read.
    members: member_cache::MemberCache,
    /// The newest events of the stream.
    recent: recent::RecentEvents,
    next_group: AtomicI64,
    /// The `origin_server_ts` of the last create event built here: each new room takes a
    /// later one, so two rooms created alike in the same millisecond still differ in ID.
    last_create_ts: AtomicU64,
}

/// An event built for [`Rooms::append`]: the event, its state group, the group it creates and
/// its transaction.
type Staged = (Arc<Pdu>, i64, Option<NewGroup>, Option<(String, String)>);

/// A new event for [`Rooms::append`]: who sends what, with an optional transaction.
pub(crate) struct Outgoing {
    /// The sender.
    pub(crate) sender: OwnedUserId,
    /// The event.
    pub(crate) template: EventTemplate,
    /// Device and transaction ID, for idempotent sends.
    pub(crate) txn: Option<(String, String)>,
    /// An event already built (a create event whose ID names the room); only checked.
    pub(crate) prebuilt: Option<Pdu>,
}

impl Rooms {
    /// The rooms component over `storage`. Room heads are loaded on first use.
    pub async fn new(
        storage: Storage,
        notifier: Notifier,
        config: Arc<ServerConfig>,
        key: Arc<NodeKey>,
    ) -> Result<Self> {
        let max_group = store::max_group_id(storage.pool()).await?;
        let position = notifier.current().0;
        Ok(Self {
            storage,
            notifier,
            config,
            key,
            inner: Arc::new(Inner {
                rooms: Mutex::new(HashMap::new()),
                unread: Mutex::new(HashMap::new()),
                seen_at: Mutex::new(HashMap::new()),
                groups: GroupCache::default(),
                push_bases: Default::default(),
                members: Default::default(),
                recent: recent::RecentEvents::new(position),
                next_group: AtomicI64::new(max_group + 1),
                last_create_ts: AtomicU64::new(0),
            }),
        })
    }

    /// The server name events are signed under.
    pub fn server_name(&self) -> &ruma::ServerName {
        &self.config.server_name
    }

    /// The notifier, for positions.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    fn handle(&self, room: &RoomId) -> RoomHandle {
        let mut rooms = match self.inner.rooms.lock() {
            Ok(rooms) => rooms,
            Err(poisoned) => poisoned.into_inner(),
        };
        rooms
            .entry(room.to_owned())
            .or_insert_with(|| Arc::new(AsyncMutex::new(Loaded { state: None })))
            .clone()
    }

    /// Locks a room's head, loading it when needed; `NotFound` when the room is unknown.
    pub(crate) async fn lock(&self, room: &RoomId) -> Result<tokio::sync::OwnedMutexGuard<Loaded>> {
        let handle = self.handle(room);
        let mut guard = handle.lock_owned().await;
        if guard.state.is_none() {
            guard.state = Some(self.load(room).await?);
        }
        Ok(guard)
    }

    async fn load(&self, room: &RoomId) -> Result<RoomState> {
        let pool = self.storage.pool();
        let Some((version, group, extremities, published)) = store::room_head(pool, room).await?
        else {
            return Err(Error::NotFound(format!("unknown room {room}")));
        };
        let version = RoomVersionId::try_from(version.as_str())
            .map_err(|e| Error::Corrupt(format!("room version: {e}")))?;
        let rules = builder::rules_for(&version)?;
        let (state, chain_len) = self.inner.groups.load(pool, group).await?;
        let ids: Vec<OwnedEventId> = state.values().cloned().collect();
        let stored = store::events_by_id(pool, &ids).await?;
        let state_events: HashMap<OwnedEventId, Arc<Pdu>> = stored
            .into_iter()
            .map(|(id, s)| (id, Arc::new(s.pdu)))
            .collect();
        let mut graph = RoomGraph::new();
        let mut recent = store::room_events(
            pool,
            room,
            0,
            i64::MAX,
            Direction::Backward,
            LOAD_RECENT_EVENTS,
        )
        .await?;
        recent.reverse();
        let mut depth = 0;
        for event in &recent {
            graph.add(&event.pdu.event_id, &event.pdu.prev_events);
            depth = depth.max(event.pdu.depth);
        }
        let older = graph.gaps();
        let stored_parents: Vec<OwnedEventId> = store::events_by_id(pool, &older)
            .await?
            .into_keys()
            .collect();
        graph.mark_on_disk(&stored_parents);
        debug!(%room, events = recent.len(), "room loaded");
        Ok(RoomState {
            room_id: room.to_owned(),
            version,
            rules,
            group,
            chain_len,
            state,
            state_events,
            extremities,
            depth,
            graph,
            published,
        })
    }

    /// Builds, authorizes and persists events in order, in one transaction, under the room's
    /// lock. Returns the events and the position of the last one.
    pub(crate) async fn append(
        &self,
        loaded: &mut Loaded,
        items: Vec<Outgoing>,
    ) -> Result<(Vec<Arc<Pdu>>, StreamPosition)> {
        let Some(room) = loaded.state.as_mut() else {
            return Err(Error::Internal("room head not loaded".into()));
        };
        let result = self.append_to(room, items).await;
        if result.is_err() {
            // Memory may be ahead of disk now: reload on next use.
            loaded.state = None;
        }
        result
    }

    async fn append_to(
        &self,
        room: &mut RoomState,
        items: Vec<Outgoing>,
    ) -> Result<(Vec<Arc<Pdu>>, StreamPosition)> {
        let signer = Signer {
            server_name: &self.config.server_name,
            key_pair: self.key.key_pair(),
        };
        let mut staged: Vec<Staged> = Vec::with_capacity(items.len());
        let mut redactions: Vec<(OwnedEventId, String, OwnedEventId)> = Vec::new();
        for item in items {
            let mut pdu = match item.prebuilt {
                Some(pdu) => {
                    auth::check_local(room, &pdu)?;
                    pdu
                }
                None => self.build_checked(room, &signer, &item.sender, &item.template)?,
            };
            pdu.replaced = Replaced::in_state(&room.state, &pdu);
            let pdu = Arc::new(pdu);
            let new_group = self.apply(room, &pdu);
            if let Some(target) = &pdu.redacts
                && let Some(redacted) = self.redacted_form(room, target).await?
            {
                redactions.push((target.clone(), redacted, pdu.event_id.clone()));
            }
            staged.push((pdu, room.group, new_group, item.txn));
        }
        let mut txn = self.storage.write_batched().await?;
        // Every row of the write goes to the database in one batch.
        let mut batch = Batch::default();
        let mut last = StreamPosition(0);
        for (pdu, group, new_group, txn_id) in &staged {
            // A message changes only its room's timeline; a state event may change who shares
            // rooms, so device lists too.
            let position = if pdu.state_key.is_some() {
                txn.next_position()
            } else {
                txn.next_position_for(&[])
            };
            last = position;
            let membership = (pdu.kind == TimelineEventType::RoomMember)
                .then(|| {
                    let user = pdu
                        .state_key
                        .as_deref()
                        .and_then(|k| UserId::parse(k).ok())?;
                    Some((user, pdu.content_str("membership")?))
                })
                .flatten();
            store::push_event(
                &mut batch,
                &EventRow {
                    pdu,
                    position,
                    state_group: *group,
                    new_group: new_group.as_ref().map(|g| NewGroup {
                        id: g.id,
                        prev: g.prev,
                        chain_len: g.chain_len,
                        entries: g.entries.clone(),
                    }),
                    membership,
                    txn: txn_id.clone(),
                    soft_failed: false,
                },
            );
        }
        for (target, redacted, by) in &redactions {
            store::push_redaction(&mut batch, target, redacted, by);
        }
        let head = Head {
            group: room.group,
            state: &room.state,
            extremities: &room.extremities,
        };
        match staged.first() {
            Some((create, ..)) if create.kind == TimelineEventType::RoomCreate => {
                store::push_insert_room(
                    &mut batch,
                    &room.room_id,
                    room.version.as_str(),
                    create.content_str("type").as_deref(),
                    &head,
                )?;
            }
            _ => store::push_room_head(&mut batch, &room.room_id, &head)?,
        }
        txn.commit_batch(batch).await?;
        // The new head's state shares all but the changed paths with the head before it.
        let changes = staged
            .iter()
            .filter(|(_, _, group, _)| group.is_some())
            .count();
        self.inner.groups.insert_sized(
            room.group,
            room.state.clone(),
            room.chain_len,
            changes.max(1) * state::DERIVED_STATE_BYTES,
        );
        // Redacted state events change what auth sees (e.g. a redacted power levels event).
        for (target, redacted, _) in &redactions {
            if let Some(held) = room.state_events.get(target)
                && let Ok(mut pdu) = Pdu::parse(target.clone(), Some(&room.room_id), redacted)
            {
                pdu.replaced = held.replaced.clone();
                room.state_events.insert(target.clone(), Arc::new(pdu));
            }
        }
        Ok((staged.into_iter().map(|(p, ..)| p).collect(), last))
    }

    /// Builds an event over the room's head and checks it against the current state.
    fn build_checked(
        &self,
        room: &RoomState,
        signer: &Signer<'_>,
        sender: &UserId,
        template: &EventTemplate,
    ) -> Result<Pdu> {
        let is_create = template.kind == TimelineEventType::RoomCreate;
        let auth_events = if is_create {
            Vec::new()
        } else {
            auth::auth_events_for(room, sender, template)?
        };
        let prev: Vec<OwnedEventId> = room
            .extremities
            .iter()
            .take(MAX_PREV_EVENTS)
            .cloned()
            .collect();
        let derived_id = is_create
            && room.rules.room_id_format == ruma::room_version_rules::RoomIdFormatVersion::V2;
        let placement = Placement {
            room: (!derived_id).then_some(&*room.room_id),
            prev_events: &prev,
            auth_events: &auth_events,
            depth: builder::depth_after(room.depth),
        };
        let pdu = builder::build_event(
            &room.rules,
            signer,
            sender,
            template,
            &placement,
            MilliSecondsSinceUnixEpoch::now(),
        )?;
        if pdu.room != room.room_id {
            return Err(Error::Internal("built event for another room".into()));
        }
        auth::check_local(room, &pdu)?;
        Ok(pdu)
    }

    /// Applies an accepted event to the in-memory head; returns the state group it creates.
    fn apply(&self, room: &mut RoomState, pdu: &Arc<Pdu>) -> Option<NewGroup> {
        room.graph.add(&pdu.event_id, &pdu.prev_events);
        room.extremities
            .retain(|e| !pdu.prev_events.contains(e) && *e != pdu.event_id);
        room.extremities.push(pdu.event_id.clone());
        keep_newest_extremities(&mut room.extremities);
        room.depth = room.depth.max(pdu.depth);
        let key = pdu.state_key_pair()?;
        let id = self.inner.next_group.fetch_add(1, Ordering::Relaxed);
        let prev_group = room.group;
        Arc::make_mut(&mut room.state).insert(key.clone(), pdu.event_id.clone());
        room.state_events.insert(pdu.event_id.clone(), pdu.clone());
        let snapshot = store::needs_snapshot(room.chain_len, room.state.len()) || prev_group == 0;
        let group = if snapshot {
            room.chain_len = 0;
            NewGroup {
                id,
                prev: None,
                chain_len: 0,
                entries: room
                    .state
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }
        } else {
            room.chain_len += 1;
            NewGroup {
                id,
                prev: Some(prev_group),
                chain_len: room.chain_len,
                entries: vec![(key, pdu.event_id.clone())],
            }
        };
        room.group = id;
        // Keep only events still in the state among those auth may fetch.
        if room.state_events.len() > room.state.len() + 64 {
            let live: std::collections::HashSet<&OwnedEventId> = room.state.values().collect();
            room.state_events.retain(|id, _| live.contains(id));
        }
        Some(group)
    }

    /// The redacted PDU text of `target` if it is an event of this room not yet redacted.
    async fn redacted_form(
        &self,
        room: &RoomState,
        target: &OwnedEventId,
    ) -> Result<Option<String>> {
        let Some(stored) = store::event(self.storage.pool(), target.as_str()).await? else {
            return Ok(None);
        };
        if stored.pdu.room != room.room_id || stored.redacted_by.is_some() {
            return Ok(None);
        }
        let object = stored.pdu.to_canonical()?;
        let redacted = redact(object, &room.rules.redaction, None)
            .map_err(|e| Error::Internal(format!("redacting {target}: {e}")))?;
        Ok(Some(serde_json::to_string(&CanonicalJsonValue::Object(
            redacted,
        ))?))
    }

    /// Sends one event as `sender`. With a transaction ID, a repeated send from the same device
    /// returns the first event's ID and sends nothing.
    pub async fn send(
        &self,
        room: &RoomId,
        sender: &UserId,
        txn: Option<(&str, &str)>,
        template: EventTemplate,
    ) -> Result<OwnedEventId> {
        let mut guard = self.lock(room).await?;
        let outgoing = Outgoing {
            sender: sender.to_owned(),
            template,
            txn: txn.map(|(d, t)| (d.to_owned(), t.to_owned())),
            prebuilt: None,
        };
        match self.append(&mut guard, vec![outgoing]).await {
            Ok((events, _)) => events
                .first()
                .map(|e| e.event_id.clone())
                .ok_or_else(|| Error::Internal("no event sent".into())),
            // A transaction ID the device used before fails the write on its unique index
            // (nothing is kept): the event it named is the answer. Sends need no lookup first.
            Err(e) => match txn {
                Some((device, txn_id)) => {
                    match store::event_for_txn(self.storage.pool(), sender, device, txn_id).await? {
                        Some(id) => Ok(id),
                        None => Err(e),
                    }
                }
                None => Err(e),
            },
        }
    }

    /// The current state of a room as loaded in memory: `(map, events)`.
    pub(crate) async fn current_state(
        &self,
        room: &RoomId,
    ) -> Result<(Arc<StateMap>, Vec<Arc<Pdu>>)> {
        let guard = self.lock(room).await?;
        let Some(state) = guard.state.as_ref() else {
            return Err(Error::Internal("room head not loaded".into()));
        };
        let events = state
            .state
            .values()
            .filter_map(|id| state.state_events.get(id).cloned())
            .collect();
        Ok((state.state.clone(), events))
    }

    /// The current state event of `(kind, key)` in `room`.
    pub(crate) async fn current_state_event(
        &self,
        room: &RoomId,
        kind: &StateEventType,
        key: &str,
    ) -> Result<Option<Arc<Pdu>>> {
        let guard = self.lock(room).await?;
        Ok(guard.state.as_ref().and_then(|s| s.get(kind, key).cloned()))
    }

    /// The version of a room.
    pub async fn room_version(&self, room: &RoomId) -> Result<RoomVersionId> {
        let guard = self.lock(room).await?;
        guard
            .state
            .as_ref()
            .map(|s| s.version.clone())
            .ok_or_else(|| Error::Internal("room head not loaded".into()))
    }

    /// The bytes (approximately) and the number of state groups held in memory by the cache
    /// of loaded state, which stays within [`GROUP_CACHE_BYTES`].
    pub fn state_cache_usage(&self) -> (usize, usize) {
        self.inner.groups.usage()
    }

    /// The full state at a state group.
    pub(crate) async fn state_at_group(&self, group: i64) -> Result<Arc<StateMap>> {
        Ok(self.inner.groups.load(self.storage.pool(), group).await?.0)
    }

    /// Events by ID, as stored.
    pub(crate) async fn pdus(
        &self,
        ids: &[OwnedEventId],
    ) -> Result<HashMap<OwnedEventId, Arc<Pdu>>> {
        Ok(store::events_by_id(self.storage.pool(), ids)
            .await?
            .into_iter()
            .map(|(id, s)| (id, Arc::new(s.pdu)))
            .collect())
    }

    /// The forward extremities and the recent DAG's gaps of a room.
    pub async fn extremities_and_gaps(
        &self,
        room: &RoomId,
    ) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
        let guard = self.lock(room).await?;
        let Some(state) = guard.state.as_ref() else {
            return Err(Error::Internal("room head not loaded".into()));
        };
        let mut ext = state.extremities.clone();
        ext.sort();
        // The stored set may be smaller than the graph's: the oldest forks beyond
        // `MAX_EXTREMITIES` are forgotten.
        let in_graph = state.graph.extremities();
        if ext.iter().any(|e| in_graph.binary_search(e).is_err()) {
            warn!(room = %room, "stored extremities differ from the in-memory DAG");
        }
        Ok((ext, state.graph.gaps()))
    }
}

impl Rooms {
    /// Rooms `user` is joined to.
    pub async fn joined_rooms(&self, user: &UserId) -> Result<Vec<OwnedRoomId>> {
        store::rooms_with_membership(self.storage.pool(), user, "join").await
    }

    /// Every user that shares at least one joined room with `user` (including `user`).
    pub async fn users_sharing_rooms_with(&self, user: &UserId) -> Result<Vec<OwnedUserId>> {
        let mut users = store::users_sharing_rooms(self.storage.pool(), user).await?;
        if !users.iter().any(|u| u == user) {
            users.push(user.to_owned());
        }
        users.sort();
        Ok(users)
    }

    /// Sends new `m.room.member` events carrying the user's current display name and avatar to
    /// every room the user is joined to, after a profile change.
    pub async fn refresh_profile(
        &self,
        user: &UserId,
        displayname: Option<&str>,
        avatar_url: Option<&ruma::MxcUri>,
    ) -> Result<()> {
        for room in self.joined_rooms(user).await? {
            let previous = self
                .current_state_event(&room, &StateEventType::RoomMember, user.as_str())
                .await?;
            let mut content = previous
                .map(|p| p.content_value())
                .unwrap_or_else(|| serde_json::json!({}));
            if let Some(map) = content.as_object_mut() {
                map.insert("membership".into(), "join".into());
                match displayname {
                    Some(name) => map.insert("displayname".into(), name.into()),
                    None => map.remove("displayname"),
                };
                match avatar_url {
                    Some(url) => map.insert("avatar_url".into(), url.as_str().into()),
                    None => map.remove("avatar_url"),
                };
            }
            let template =
                EventTemplate::state(TimelineEventType::RoomMember, user.as_str(), content);
            if let Err(e) = self.send(&room, user, None, template).await {
                warn!(%room, %user, error = %e, "profile update not sent to room");
            }
        }
        Ok(())
    }

    /// Whether `user` is currently joined to `room`.
    pub async fn is_joined(&self, user: &UserId, room: &RoomId) -> Result<bool> {
        Ok(store::membership(self.storage.pool(), room, user)
            .await?
            .is_some_and(|(m, _)| m == "join"))
    }
}

impl Rooms {
    /// A stored event by ID (in redacted form once redacted).
    pub async fn pdu(&self, event_id: &str) -> Result<Option<Pdu>> {
        Ok(store::event(self.storage.pool(), event_id)
            .await?
            .map(|s| s.pdu))
    }

    /// The content of a current state event of a room.
    pub async fn state_content(
        &self,
        room: &RoomId,
        kind: &StateEventType,
        key: &str,
    ) -> Result<Option<serde_json::Value>> {
        Ok(self
            .current_state_event(room, kind, key)
            .await?
            .map(|e| e.content_value()))
    }
}
