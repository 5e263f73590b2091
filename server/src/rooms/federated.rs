//! What the server-server API reads and writes in rooms: the servers in a room, join and leave
//! templates, the state and auth chain at an event, bounded walks of the DAG for
//! `get_missing_events` and backfill, and persisting a room learnt from a remote join.
//!
//! Every walk is bounded by the caller's limit and by [`MAX_WALK`].

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, OwnedUserId, RoomId,
    RoomVersionId, ServerName, UserId,
    events::{StateEventType, TimelineEventType},
    signatures::content_hash,
};
use serde_json::json;

use super::{
    EventTemplate, Rooms, StateMap,
    auth::{self, RemoteVerdict},
    builder,
    pdu::{Pdu, Replaced},
    store::{self, EventRow, Head, NewGroup},
};
use crate::{Error, Result, storage::Batch};

/// Events visited by one DAG walk, at most.
pub const MAX_WALK: usize = 1_000;

/// Auth-chain events returned for one request, at most.
const MAX_AUTH_CHAIN: usize = super::resolve::MAX_RESOLUTION_EVENTS;

/// A room learnt from a remote server's answer to a join.
pub struct JoinedRoom<'a> {
    /// The room.
    pub room: &'a RoomId,
    /// Its version.
    pub version: &'a RoomVersionId,
    /// The join event, signed by both servers.
    pub join: CanonicalJsonObject,
    /// The room state before the join.
    pub state: Vec<CanonicalJsonObject>,
    /// The auth chain of that state and of the join.
    pub auth_chain: Vec<CanonicalJsonObject>,
}

impl Rooms {
    /// Whether this node has the room (it has joined it at some point).
    pub async fn is_known(&self, room: &RoomId) -> Result<bool> {
        Ok(store::room_head(self.storage.pool(), room).await?.is_some())
    }

    /// The servers with a joined member in the room.
    pub async fn servers_in_room(&self, room: &RoomId) -> Result<Vec<OwnedServerName>> {
        let mut servers: Vec<OwnedServerName> =
            store::members_with(self.storage.pool(), room, "join")
                .await?
                .into_iter()
                .map(|u| u.server_name().to_owned())
                .collect();
        servers.sort();
        servers.dedup();
        Ok(servers)
    }

    /// Whether a user of this node is joined to the room: only then is this node's view of
    /// the room current, and a join built here rather than through a server in the room.
    pub async fn has_local_member(&self, room: &RoomId) -> Result<bool> {
        Ok(store::members_with(self.storage.pool(), room, "join")
            .await?
            .iter()
            .any(|u| u.server_name() == self.config.server_name))
    }

    /// The room's forward extremities.
    pub async fn extremities(&self, room: &RoomId) -> Result<Vec<OwnedEventId>> {
        let guard = self.lock(room).await?;
        Ok(guard
            .state
            .as_ref()
            .map(|s| s.extremities.clone())
            .unwrap_or_default())
    }

    /// A membership event for `user` over the room's head, without hashes and signatures: what
    /// make_join and make_leave answer, for the user's server to complete and sign.
    /// `Forbidden` when the auth rules would not allow it over the current state.
    pub async fn membership_template(
        &self,
        room: &RoomId,
        user: &UserId,
        membership: &str,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        let version = self.room_version(room).await?;
        let mut prev = self.extremities(room).await?;
        prev.truncate(super::MAX_PREV_EVENTS);
        let template = EventTemplate::state(
            TimelineEventType::RoomMember,
            user.as_str(),
            json!({ "membership": membership }),
        );
        let mut object = self.build_over(room, user, &template, &prev).await?;
        // Only a membership the auth rules allow is offered: an invite-only room gives no
        // join template to a user who is not invited, a banned user none at all.
        {
            let guard = self.lock(room).await?;
            let Some(state) = guard.state.as_ref() else {
                return Err(Error::Internal("room head not loaded".into()));
            };
            let id = builder::event_id_of(&object, &state.rules)?;
            let pdu = Pdu::parse(id, Some(room), &serde_json::to_string(&object)?)?;
            auth::check_local(state, &pdu)?;
        }
        object.remove("signatures");
        object.remove("hashes");
        Ok((version, object))
    }

    /// The state before an event of the room (its `prev_events` resolved) and the auth chain of
    /// that state and of the event.
    pub async fn state_and_auth_chain(
        &self,
        room: &RoomId,
        event_id: &ruma::EventId,
    ) -> Result<(Vec<Pdu>, Vec<Pdu>)> {
        let Some(stored) = store::event(self.storage.pool(), event_id.as_str()).await? else {
            return Err(Error::NotFound(format!("unknown event {event_id}")));
        };
        if stored.pdu.room != room {
            return Err(Error::NotFound(format!("{event_id} is not in {room}")));
        }
        let version = self.room_version(room).await?;
        let rules = builder::rules_for(&version)?;
        let state = if stored.pdu.prev_events.is_empty() {
            StateMap::default()
        } else {
            self.state_after(&rules, room, &stored.pdu.prev_events)
                .await?
        };
        let ids: Vec<OwnedEventId> = state.values().cloned().collect();
        let mut events = store::events_by_id(self.storage.pool(), &ids).await?;
        let state_pdus: Vec<Pdu> = ids
            .iter()
            .filter_map(|id| events.remove(id).map(|s| s.pdu))
            .collect();
        let mut start = ids;
        start.extend(stored.pdu.auth_events.iter().cloned());
        let chain = self.auth_chain_of(&start).await?;
        Ok((state_pdus, chain))
    }

    /// The auth chains of the given events (the events themselves included when stored).
    pub async fn auth_chain_of(&self, ids: &[OwnedEventId]) -> Result<Vec<Pdu>> {
        let mut chain: Vec<Pdu> =
            store::auth_chain_events(self.storage.pool(), ids, MAX_AUTH_CHAIN)
                .await?
                .into_values()
                .collect();
        chain.sort_by_key(|p| p.depth);
        Ok(chain)
    }

    /// Events of the room before `latest` and not before `earliest`, walking `prev_events`,
    /// at most `limit`, oldest first (`get_missing_events`).
    /// Events `server` may not see are given redacted.
    pub async fn missing_events(
        &self,
        room: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
        server: &ServerName,
    ) -> Result<Vec<Pdu>> {
        let stop: HashSet<&OwnedEventId> = earliest.iter().collect();
        let starts = store::events_by_id(self.storage.pool(), latest).await?;
        let frontier: Vec<OwnedEventId> = starts
            .values()
            .filter(|s| s.pdu.room == room)
            .flat_map(|s| s.pdu.prev_events.iter().cloned())
            .filter(|id| !stop.contains(id))
            .collect();
        let events = self.walk_back(room, frontier, &stop, limit).await?;
        self.as_seen_by(room, server, events).await
    }

    /// Events of the room from `from` backwards, at most `limit`, oldest first (backfill).
    /// Events `server` may not see are given redacted.
    pub async fn backfill_from(
        &self,
        room: &RoomId,
        from: &[OwnedEventId],
        limit: usize,
        server: &ServerName,
    ) -> Result<Vec<Pdu>> {
        let events = self
            .walk_back(room, from.to_vec(), &HashSet::new(), limit)
            .await?;
        self.as_seen_by(room, server, events).await
    }

    /// A stored event of the room as `server` may see it: whole when the room's history
    /// visibility there lets some user of that server see it, redacted otherwise (the judgement
    /// of [`Rooms::backfill_from`]). None when this node has no such event.
    pub async fn event_for_server(
        &self,
        event_id: &ruma::EventId,
        server: &ServerName,
    ) -> Result<Option<Pdu>> {
        let Some(stored) = store::event(self.storage.pool(), event_id.as_str()).await? else {
            return Ok(None);
        };
        let room = stored.pdu.room.clone();
        let mut seen = self
            .as_seen_by(&room, server, vec![(stored.pdu, stored.state_group)])
            .await?;
        Ok(seen.pop())
    }

    /// `events` as `server` may see them: whole where the room's history visibility at each
    /// lets some user of that server see it, redacted elsewhere (the DAG stays whole).
    async fn as_seen_by(
        &self,
        room: &RoomId,
        server: &ServerName,
        events: Vec<(Pdu, Option<i64>)>,
    ) -> Result<Vec<Pdu>> {
        let rules = builder::rules_for(&self.room_version(room).await?)?;
        let mut verdicts: HashMap<i64, bool> = HashMap::new();
        let mut out = Vec::with_capacity(events.len());
        for (pdu, group) in events {
            let visible = match group {
                Some(group) => match verdicts.get(&group) {
                    Some(v) => *v,
                    None => {
                        let v = self.server_sees(group, server).await?;
                        verdicts.insert(group, v);
                        v
                    }
                },
                // An outlier (state or auth event) is needed whole to check others.
                None => true,
            };
            if visible {
                out.push(pdu);
            } else {
                let redacted =
                    ruma::canonical_json::redact(pdu.to_canonical()?, &rules.redaction, None)
                        .map_err(|e| Error::Internal(format!("redacting {}: {e}", pdu.event_id)))?;
                let text = serde_json::to_string(&CanonicalJsonValue::Object(redacted))?;
                out.push(Pdu::parse(pdu.event_id.clone(), Some(room), &text)?);
            }
        }
        Ok(out)
    }

    /// Whether some user of `server` may see events at state group `group`.
    async fn server_sees(&self, group: i64, server: &ServerName) -> Result<bool> {
        let state = self.state_at_group(group).await?;
        let visibility = match state.get(&(StateEventType::RoomHistoryVisibility, String::new())) {
            Some(id) => self
                .pdus(std::slice::from_ref(id))
                .await?
                .get(id)
                .and_then(|e| e.content_str("history_visibility"))
                .unwrap_or_else(|| "shared".to_owned()),
            None => "shared".to_owned(),
        };
        if matches!(visibility.as_str(), "world_readable" | "shared") {
            return Ok(true);
        }
        let suffix = format!(":{}", server.as_str());
        let members: Vec<OwnedEventId> = state
            .iter()
            .filter(|((kind, key), _)| {
                *kind == StateEventType::RoomMember && key.ends_with(&suffix)
            })
            .map(|(_, id)| id.clone())
            .collect();
        let events = self.pdus(&members).await?;
        Ok(events
            .values()
            .any(|e| match e.content_str("membership").as_deref() {
                Some("join") => true,
                Some("invite") => visibility == "invited",
                _ => false,
            }))
    }

    async fn walk_back(
        &self,
        room: &RoomId,
        mut frontier: Vec<OwnedEventId>,
        stop: &HashSet<&OwnedEventId>,
        limit: usize,
    ) -> Result<Vec<(Pdu, Option<i64>)>> {
        let limit = limit.min(MAX_WALK);
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut out = Vec::new();
        while !frontier.is_empty() && out.len() < limit {
            frontier.retain(|id| !seen.contains(id) && !stop.contains(id));
            frontier.sort();
            frontier.dedup();
            let found = store::events_by_id(self.storage.pool(), &frontier).await?;
            seen.extend(frontier.drain(..));
            let mut batch: Vec<(Pdu, Option<i64>)> = found
                .into_values()
                .map(|s| (s.pdu, s.state_group))
                .filter(|(p, _)| p.room == room)
                .collect();
            batch.sort_by_key(|(p, _)| std::cmp::Reverse(p.depth));
            for (pdu, group) in batch {
                if out.len() >= limit {
                    break;
                }
                frontier.extend(pdu.prev_events.iter().cloned());
                out.push((pdu, group));
            }
        }
        out.sort_by_key(|(p, _)| p.depth);
        Ok(out)
    }

    /// Stores a room this node joins through another server: the state and auth chain as
    /// outliers, then the join event as the room's head, in one transaction. A room this node
    /// held before (all its users had left) is re-synced: its state and memberships become
    /// those the resident server answered, and the join its only forward extremity.
    pub async fn persist_joined_room(&self, joined: JoinedRoom<'_>) -> Result<()> {
        let room = joined.room;
        let rules = builder::rules_for(joined.version)?;
        let handle = self.handle(room);
        let mut guard = handle.lock_owned().await;
        let held = store::room_head(self.storage.pool(), room).await?;
        if let Some((version, ..)) = &held
            && version != joined.version.as_str()
        {
            return Err(Error::BadJson(format!(
                "the room is of version {version} here, not {}",
                joined.version
            )));
        }
        let mut events: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        let mut state = StateMap::default();
        let state_ids: HashSet<OwnedEventId> = joined
            .state
            .iter()
            .filter_map(|o| builder::event_id_of(o, &rules).ok())
            .collect();
        for object in joined.state.iter().chain(joined.auth_chain.iter()) {
            let pdu = parse_checked(room, object, &rules)?;
            if state_ids.contains(&pdu.event_id)
                && let Some(key) = pdu.state_key_pair()
                && let Some(other) = state.insert(key.clone(), pdu.event_id.clone())
                && other != pdu.event_id
            {
                return Err(Error::Forbidden(format!(
                    "the state holds both {other} and {} for ({}, {:?})",
                    pdu.event_id, key.0, key.1
                )));
            }
            events.insert(pdu.event_id.clone(), Arc::new(pdu));
        }
        // What the resident says the room is must be what the room's own rules made it.
        auth::check_auth_chain(&rules.authorization, &events)?;
        let mut join = parse_checked(room, &joined.join, &rules)?;
        join.replaced = Replaced::in_state(&state, &join);
        let user = join
            .state_key
            .as_deref()
            .and_then(|k| UserId::parse(k).ok())
            .ok_or_else(|| Error::BadJson("join event has no user".into()))?;
        if join.kind != TimelineEventType::RoomMember
            || join.content_str("membership").as_deref() != Some("join")
        {
            return Err(Error::BadJson("not a join event".into()));
        }
        if let RemoteVerdict::Rejected(why) =
            auth::check_remote(&rules.authorization, &join, &events, &state, &state)
        {
            return Err(Error::Forbidden(format!("the join is not allowed: {why}")));
        }
        let mut after = state.clone();
        if let Some(key) = join.state_key_pair() {
            after.insert(key, join.event_id.clone());
        }
        let members: Vec<(OwnedUserId, String, OwnedEventId)> = state
            .iter()
            .filter(|((kind, _), _)| kind.to_string() == "m.room.member")
            .filter_map(|((_, key), id)| {
                let user = UserId::parse(key.as_str()).ok()?;
                let membership = events.get(id)?.content_str("membership")?;
                Some((user, membership, id.clone()))
            })
            .filter(|(u, ..)| *u != user)
            .collect();
        let group = self.next_group_id();
        let mut txn = self.storage.write().await?;
        for pdu in events.values() {
            store::insert_outlier(txn.conn(), pdu).await?;
        }
        let position = txn.next_position();
        store::insert_event(
            txn.conn(),
            &EventRow {
                pdu: &join,
                position,
                state_group: group,
                new_group: Some(NewGroup {
                    id: group,
                    prev: None,
                    chain_len: 0,
                    entries: after.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                }),
                membership: Some((user.clone(), "join".into())),
                txn: None,
                soft_failed: false,
            },
        )
        .await?;
        for (member, membership, id) in &members {
            store::set_membership(
                txn.conn(),
                room,
                member,
                membership,
                id.as_str(),
                position.0,
            )
            .await?;
        }
        let head = Head {
            group,
            state: &after,
            extremities: std::slice::from_ref(&join.event_id),
        };
        if held.is_some() {
            let mut batch = Batch::default();
            store::push_room_head(&mut batch, room, &head)?;
            batch.run(txn.conn()).await?;
        } else {
            let room_type = after
                .get(&(StateEventType::RoomCreate, String::new()))
                .and_then(|id| events.get(id))
                .and_then(|create| create.content_str("type"));
            store::insert_room(
                txn.conn(),
                room,
                joined.version.as_str(),
                room_type.as_deref(),
                &head,
            )
            .await?;
        }
        store::delete_remote_invites(txn.conn(), room, None).await?;
        txn.commit().await?;
        self.inner.groups.insert(group, Arc::new(after), 0);
        guard.state = None;
        Ok(())
    }
}

impl Rooms {
    /// Which of the given events this node does not have.
    pub async fn unknown_events(&self, ids: &[OwnedEventId]) -> Result<Vec<OwnedEventId>> {
        let found = store::events_by_id(self.storage.pool(), ids).await?;
        Ok(ids
            .iter()
            .filter(|id| !found.contains_key(*id))
            .cloned()
            .collect())
    }

    /// Stores events of the room fetched to fill a gap (state and auth events) as outliers,
    /// after checking their content hashes.
    pub async fn store_outliers(
        &self,
        room: &RoomId,
        objects: &[CanonicalJsonObject],
    ) -> Result<()> {
        let version = self.room_version(room).await?;
        let rules = builder::rules_for(&version)?;
        let pdus = objects
            .iter()
            .map(|o| parse_checked(room, o, &rules))
            .collect::<Result<Vec<_>>>()?;
        let mut txn = self.storage.write().await?;
        for pdu in &pdus {
            store::insert_outlier(txn.conn(), pdu).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// The state map named by a list of stored state event IDs (unknown ones left out).
    pub async fn state_map_of(&self, room: &RoomId, ids: &[OwnedEventId]) -> Result<StateMap> {
        Ok(store::events_by_id(self.storage.pool(), ids)
            .await?
            .into_values()
            .filter(|s| s.pdu.room == room && !s.pdu.rejected)
            .filter_map(|s| s.pdu.state_key_pair().map(|k| (k, s.pdu.event_id.clone())))
            .collect())
    }
}

/// An invite of a local user to a room this node is not in.
#[derive(Debug, Clone)]
pub struct RemoteInvite {
    /// The invite event.
    pub event: Pdu,
    /// The room's version.
    pub version: RoomVersionId,
    /// The stripped state the inviting server sent with it.
    pub stripped: Vec<serde_json::Value>,
}

impl Rooms {
    /// Stores an invite of a local user to a room this node is not in, so that the user's sync
    /// shows it, in one transaction with its membership change.
    pub async fn store_remote_invite(
        &self,
        room: &RoomId,
        version: &RoomVersionId,
        invite: &CanonicalJsonObject,
        stripped: &[serde_json::Value],
    ) -> Result<()> {
        let rules = builder::rules_for(version)?;
        let pdu = parse_checked(room, invite, &rules)?;
        let user = pdu
            .state_key
            .as_deref()
            .and_then(|k| UserId::parse(k).ok())
            .ok_or_else(|| Error::BadJson("invite without a target".into()))?;
        let stripped = inviter_claims(stripped, &pdu.sender, &self.config.server_name);
        let stripped = serde_json::to_string(&stripped)?;
        let mut txn = self.storage.write().await?;
        store::insert_outlier(txn.conn(), &pdu).await?;
        let position = txn.next_position();
        let id = pdu.event_id.as_str();
        store::set_membership(txn.conn(), room, &user, "invite", id, position.0).await?;
        store::log_membership(txn.conn(), &user, position.0, room, "invite", id).await?;
        store::insert_remote_invite(txn.conn(), room, &user, id, version.as_str(), &stripped)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The room state sent to the invitee's server with an invite by `inviter`: the kinds
    /// shown with an invite (create, join rules, name, ..., the inviter's member event) as
    /// full PDUs, which Matrix 1.18 asks for (MSC4311) so that the invitee's server can check
    /// them; Synapse refuses stripped entries in v12 rooms.
    pub async fn invite_room_state(
        &self,
        room: &RoomId,
        inviter: &UserId,
    ) -> Result<Vec<serde_json::Value>> {
        let (map, _) = self.current_state(room).await?;
        let ids: Vec<OwnedEventId> = STRIPPED_KINDS
            .iter()
            .map(|kind| {
                let key = if *kind == "m.room.member" {
                    inviter.to_string()
                } else {
                    String::new()
                };
                (StateEventType::from(*kind), key)
            })
            .filter_map(|k| map.get(&k).cloned())
            .collect();
        let events = self.pdus(&ids).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(event) = events.get(id) {
                out.push(serde_json::from_str(&event.json)?);
            }
        }
        Ok(out)
    }

    /// The pending invite of `user` to a room this node is not in.
    pub async fn remote_invite(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Option<RemoteInvite>> {
        let Some((event_id, version, stripped)) =
            store::remote_invite(self.storage.pool(), room, user).await?
        else {
            return Ok(None);
        };
        let Some(stored) = store::event(self.storage.pool(), &event_id).await? else {
            return Ok(None);
        };
        let version = RoomVersionId::try_from(version.as_str())
            .map_err(|e| Error::Corrupt(format!("room version: {e}")))?;
        let stripped: Vec<serde_json::Value> = serde_json::from_str(&stripped)?;
        Ok(Some(RemoteInvite {
            event: stored.pdu,
            version,
            stripped,
        }))
    }

    /// Records that `user` refused an invite to a room this node is not in, with the leave
    /// event the room accepted.
    pub async fn record_remote_leave(
        &self,
        room: &RoomId,
        version: &RoomVersionId,
        leave: &CanonicalJsonObject,
    ) -> Result<()> {
        let rules = builder::rules_for(version)?;
        let pdu = parse_checked(room, leave, &rules)?;
        let user = pdu
            .state_key
            .as_deref()
            .and_then(|k| UserId::parse(k).ok())
            .ok_or_else(|| Error::BadJson("leave without a user".into()))?;
        let mut txn = self.storage.write().await?;
        store::insert_outlier(txn.conn(), &pdu).await?;
        let position = txn.next_position();
        let id = pdu.event_id.as_str();
        store::set_membership(txn.conn(), room, &user, "leave", id, position.0).await?;
        store::log_membership(txn.conn(), &user, position.0, room, "leave", id).await?;
        store::delete_remote_invites(txn.conn(), room, Some(&user)).await?;
        txn.commit().await?;
        Ok(())
    }
}

/// The stripped state kinds shown with an invite to a room this node is not in.
const STRIPPED_KINDS: [&str; 8] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
    "m.room.member",
];

/// The stripped state an inviting server sent, as that server's claim: only the kinds shown
/// with an invite, well formed (`type`, string `state_key`, object `content`), once per key.
/// Nobody on this node can have sent an event in a room this node never joined, so an entry
/// naming a local sender is shown as the inviter's.
fn inviter_claims(
    stripped: &[serde_json::Value],
    inviter: &UserId,
    ours: &ServerName,
) -> Vec<serde_json::Value> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for entry in stripped {
        let (Some(kind), Some(key), Some(content)) = (
            entry["type"].as_str(),
            entry["state_key"].as_str(),
            entry["content"].as_object(),
        ) else {
            continue;
        };
        if !STRIPPED_KINDS.contains(&kind) || !seen.insert((kind, key)) {
            continue;
        }
        // Of the members, the inviter's own is the one the inviter can speak for.
        if kind == "m.room.member" && key != inviter.as_str() {
            continue;
        }
        let sender = entry["sender"]
            .as_str()
            .and_then(|s| UserId::parse(s).ok())
            .filter(|s| s.server_name() != ours)
            .unwrap_or_else(|| inviter.to_owned());
        out.push(json!({
            "type": kind,
            "state_key": key,
            "content": content,
            "sender": sender,
        }));
    }
    out
}

/// Parses a PDU of `room`, checking its format and its content hash (an event already in its redacted form
/// may fail it).
pub(crate) fn parse_checked(
    room: &RoomId,
    object: &CanonicalJsonObject,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Result<Pdu> {
    // Every way in (transactions, send_join answers, fetched outliers, invites, leaves) passes
    // here, so every way in has the size and field checks.
    super::pdu::check_format(object, &rules.event_format)?;
    let event_id = builder::event_id_of(object, rules)?;
    let hash = content_hash(object).map_err(|e| Error::BadJson(e.to_string()))?;
    let claimed = match object.get("hashes") {
        Some(CanonicalJsonValue::Object(h)) => match h.get("sha256") {
            Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    };
    // An event whose content was altered is used in its redacted form, as the spec asks:
    // a mismatch is let through only when the object is that form already.
    if claimed.as_deref() != Some(hash.encode().as_str())
        && ruma::canonical_json::redact(object.clone(), &rules.redaction, None)
            .ok()
            .as_ref()
            != Some(object)
    {
        return Err(Error::BadJson(format!("{event_id}: content hash mismatch")));
    }
    let text = serde_json::to_string(object)?;
    let pdu = Pdu::parse(event_id, Some(room), &text)?;
    if pdu.room != room {
        return Err(Error::BadJson(format!(
            "{} is in another room",
            pdu.event_id
        )));
    }
    Ok(pdu)
}
