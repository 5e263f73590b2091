//! Reading rooms as a member sees them: messages (both directions), context, single events,
//! state, members; and the writes a member makes through the timeline (state, redactions).
//!
//! Pagination tokens are stream positions written as decimal strings: token `t` sits just
//! after the event at position `t`, so a sync's `next_batch` and `prev_batch` work as
//! `/messages` tokens too. On one node stream order is a topological order of the room.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    DeviceId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedUserId, RoomId, UserId,
    api::client::filter::{RoomEventFilter, UrlFilter},
    events::{AnyStateEvent, AnyTimelineEvent, StateEventType, TimelineEventType},
    serde::Raw,
};
use serde_json::{Value, json};

use super::{Direction, EventTemplate, Rooms, StateMap, pdu::Pdu, power, store};
use crate::{Error, Result};

/// Events one pagination request scans at most, visible or not.
const MAX_SCAN: usize = 2_000;
/// The most events one page returns.
pub const MAX_PAGE: usize = 1_000;

/// Who reads, for visibility and for `unsigned.transaction_id`.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    /// The reading user.
    pub user: &'a UserId,
    /// The reading device, when known.
    pub device: Option<&'a DeviceId>,
}

/// A page of `/messages`.
#[derive(Debug)]
pub struct MessagesPage {
    /// The events, in the order read.
    pub chunk: Vec<Raw<AnyTimelineEvent>>,
    /// The token the page starts at.
    pub start: String,
    /// The token to continue from, when there may be more.
    pub end: Option<String>,
    /// Member events of the senders, when members are lazy-loaded.
    pub state: Vec<Raw<AnyStateEvent>>,
}

/// An event with the events around it.
#[derive(Debug)]
pub struct EventContext {
    /// The event.
    pub event: Raw<AnyTimelineEvent>,
    /// Events before it, newest first.
    pub before: Vec<Raw<AnyTimelineEvent>>,
    /// Events after it, oldest first.
    pub after: Vec<Raw<AnyTimelineEvent>>,
    /// Token before the earliest event returned.
    pub start: String,
    /// Token after the latest event returned.
    pub end: String,
    /// The state at the event (or the senders' member events when lazy-loading).
    pub state: Vec<Raw<AnyStateEvent>>,
}

/// Parses a pagination token.
pub fn parse_token(token: &str) -> Result<i64> {
    token
        .trim_start_matches('s')
        .parse::<i64>()
        .ok()
        .ok_or_else(|| Error::InvalidParam(format!("bad pagination token {token:?}")))
}

/// Whether an event passes a room event filter.
pub fn filter_matches(filter: &RoomEventFilter, pdu: &Pdu) -> bool {
    let kind = pdu.kind.to_string();
    let type_matches = |pattern: &String| match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => *pattern == kind,
    };
    if filter.not_types.iter().any(type_matches) {
        return false;
    }
    if let Some(types) = &filter.types
        && !types.iter().any(type_matches)
    {
        return false;
    }
    if filter.not_senders.contains(&pdu.sender) {
        return false;
    }
    if let Some(senders) = &filter.senders
        && !senders.contains(&pdu.sender)
    {
        return false;
    }
    if let Some(url) = &filter.url_filter {
        let has_url = pdu.content_value().get("url").is_some();
        match url {
            UrlFilter::EventsWithUrl if !has_url => return false,
            UrlFilter::EventsWithoutUrl if has_url => return false,
            _ => {}
        }
    }
    true
}

/// What a reader may see of a room, from their current membership.
#[derive(Debug, Clone, Copy)]
struct Access {
    /// Last position visible (the leave or ban, for former members).
    until: i64,
    /// Whether the reader is joined now.
    joined: bool,
    /// Whether the reader is invited now.
    invited: bool,
    /// Whether the reader takes part in the room (joined, invited, or left or banned after
    /// taking part), rather than peeking into a world-readable room.
    participant: bool,
}

/// Judges, event by event, what one user may see of one room's history: by the
/// `m.room.history_visibility` and the user's membership in the state at each event, bounded by
/// where the user's access ends (their leave, for former members).
///
/// The rules, as the spec gives them: `world_readable` events are visible to all; an event is
/// visible to a user who was joined at it; `shared` events to anyone taking part in the room
/// now (or up to leaving it); `invited` events to users invited (or joined) at the event;
/// `joined` events only to users joined at them. A user always sees the events that change
/// their own membership, up to where their access ends.
pub(crate) struct HistoryJudge<'a> {
    rooms: &'a Rooms,
    user: &'a UserId,
    access: Access,
    /// Per state group: (history visibility, the user's membership).
    cache: HashMap<i64, (String, Option<String>)>,
}

impl HistoryJudge<'_> {
    /// The last position the user may see.
    pub(crate) fn until(&self) -> i64 {
        self.access.until
    }

    /// Whether the user may see `stored`.
    pub(crate) async fn allows(&mut self, stored: &store::StoredEvent) -> Result<bool> {
        let (Some(group), Some(position)) = (stored.state_group, stored.position) else {
            return Ok(false);
        };
        if position > self.access.until {
            return Ok(false);
        }
        if self.access.participant
            && stored.pdu.kind == TimelineEventType::RoomMember
            && stored.pdu.state_key.as_deref() == Some(self.user.as_str())
        {
            return Ok(true);
        }
        let (visibility, membership) = match self.cache.get(&group) {
            Some(known) => known.clone(),
            None => {
                let known = self.rooms.seen_at(group, self.user).await?;
                self.cache.insert(group, known.clone());
                known
            }
        };
        Ok(match visibility.as_str() {
            "world_readable" => true,
            _ if membership.as_deref() == Some("join") => true,
            "joined" => false,
            "invited" => membership.as_deref() == Some("invite"),
            // "shared" and anything unknown, which the spec says to treat as shared.
            _ => self.access.participant,
        })
    }
}

/// The history visibility at a state group, and one user's membership there.
pub(crate) type SeenAt = (String, Option<String>);

/// Entries of the shared visibility cache, at most; past that it starts again.
const MAX_SEEN_AT: usize = 10_000;

impl Rooms {
    /// The history visibility and `user`'s membership at state group `group`.
    async fn seen_at(&self, group: i64, user: &UserId) -> Result<SeenAt> {
        let key = (group, user.to_owned());
        if let Some(known) = self
            .inner
            .seen_at
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            return Ok(known);
        }
        let state = self.state_at_group(group).await?;
        let visibility_key = (StateEventType::RoomHistoryVisibility, String::new());
        let member_key = (StateEventType::RoomMember, user.to_string());
        let wanted: Vec<OwnedEventId> = [&visibility_key, &member_key]
            .into_iter()
            .filter_map(|k| state.get(k).cloned())
            .collect();
        let events = self.pdus(&wanted).await?;
        let field = |key: &(StateEventType, String), name: &str| {
            state
                .get(key)
                .and_then(|id| events.get(id))
                .and_then(|e| e.content_str(name))
        };
        let visibility =
            field(&visibility_key, "history_visibility").unwrap_or_else(|| "shared".to_owned());
        let known = (visibility, field(&member_key, "membership"));
        if let Ok(mut cache) = self.inner.seen_at.lock() {
            if cache.len() >= MAX_SEEN_AT {
                cache.clear();
            }
            cache.insert(key, known.clone());
        }
        Ok(known)
    }
}

impl Rooms {
    /// The client-format `unsigned` of a stored event for `viewer`.
    pub(crate) async fn unsigned_for(
        &self,
        stored: &store::StoredEvent,
        viewer: Viewer<'_>,
    ) -> Result<Option<Value>> {
        let mut unsigned = serde_json::Map::new();
        let now = u64::from(MilliSecondsSinceUnixEpoch::now().get());
        let ts = u64::from(stored.pdu.origin_server_ts.get());
        unsigned.insert("age".into(), now.saturating_sub(ts).into());
        if stored.pdu.sender == viewer.user
            && let (Some((device, txn_id)), Some(viewer_device)) = (&stored.txn, viewer.device)
            && device == viewer_device.as_str()
        {
            unsigned.insert("transaction_id".into(), txn_id.as_str().into());
        }
        if let Some(by) = &stored.redacted_by
            && let Some(redaction) = store::event(self.storage.pool(), by.as_str()).await?
        {
            unsigned.insert(
                "redacted_because".into(),
                redaction.pdu.to_client_value(true, None),
            );
        }
        if stored.pdu.state_key.is_some()
            && let Some(replaced) = self
                .replaced_states(&[&stored.pdu])
                .await?
                .get(&stored.pdu.event_id)
        {
            super::replaced::add_replaced(&mut unsigned, replaced);
        }
        Ok(Some(Value::Object(unsigned)))
    }

    /// A stored event in the client format.
    pub(crate) async fn client_event<T>(
        &self,
        stored: &store::StoredEvent,
        viewer: Viewer<'_>,
        with_room_id: bool,
    ) -> Result<Raw<T>> {
        let unsigned = self.unsigned_for(stored, viewer).await?;
        Ok(stored.pdu.to_client_raw(with_room_id, unsigned))
    }

    async fn access(&self, room: &RoomId, user: &UserId) -> Result<Access> {
        let current = self.notifier.current().0;
        let membership = self.membership_now(room, user).await?;
        match membership.as_ref().map(|(m, p)| (m.as_str(), *p)) {
            Some(("join", _)) => Ok(Access {
                until: current,
                joined: true,
                invited: false,
                participant: true,
            }),
            Some(("invite", _)) => Ok(Access {
                until: current,
                joined: false,
                invited: true,
                participant: true,
            }),
            Some(("leave" | "ban", position)) => Ok(Access {
                until: position,
                joined: false,
                invited: false,
                participant: true,
            }),
            _ => {
                if self.world_readable(room).await? {
                    Ok(Access {
                        until: current,
                        joined: false,
                        invited: false,
                        participant: false,
                    })
                } else {
                    Err(Error::Forbidden("you are not a member of this room".into()))
                }
            }
        }
    }

    /// Whether the room's current history visibility is `world_readable`.
    async fn world_readable(&self, room: &RoomId) -> Result<bool> {
        Ok(self
            .current_state_event(room, &StateEventType::RoomHistoryVisibility, "")
            .await?
            .and_then(|e| e.content_str("history_visibility"))
            .as_deref()
            == Some("world_readable"))
    }

    /// What `user` may see of the room's state: like [`Rooms::access`], but an invited user
    /// sees only the invite's stripped state unless the room is world-readable.
    async fn state_access(&self, room: &RoomId, user: &UserId) -> Result<Access> {
        let access = self.access(room, user).await?;
        if access.invited && !self.world_readable(room).await? {
            return Err(Error::Forbidden("you are not joined to this room".into()));
        }
        Ok(access)
    }

    /// The judge of what `user` may see of `room`'s history ([`Error::Forbidden`] when they
    /// may see none of it).
    pub(crate) async fn history_judge<'a>(
        &'a self,
        room: &RoomId,
        user: &'a UserId,
    ) -> Result<HistoryJudge<'a>> {
        Ok(HistoryJudge {
            rooms: self,
            user,
            access: self.access(room, user).await?,
            cache: HashMap::new(),
        })
    }

    /// A page of a room's timeline from `from` in `direction` (up to `to`), as `viewer` sees it.
    #[allow(clippy::too_many_arguments)]
    pub async fn messages(
        &self,
        room: &RoomId,
        viewer: Viewer<'_>,
        from: Option<&str>,
        to: Option<&str>,
        direction: Direction,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<MessagesPage> {
        let mut judge = self.history_judge(room, viewer.user).await?;
        let until = judge.until();
        let limit = limit.clamp(1, MAX_PAGE);
        let from = match from {
            Some(t) => parse_token(t)?,
            None => match direction {
                Direction::Backward => self.notifier.current().0,
                // Backfilled history sits below zero.
                Direction::Forward => i64::MIN,
            },
        };
        let to = to.map(parse_token).transpose()?;
        let mut cursor = from;
        let mut chunk = Vec::new();
        let mut senders: Vec<OwnedUserId> = Vec::new();
        let mut scanned = 0;
        let mut exhausted = false;
        while chunk.len() < limit && scanned < MAX_SCAN {
            let batch_size = (limit - chunk.len()).max(20) as i64;
            let (after, upto) = match direction {
                Direction::Backward => (to.unwrap_or(i64::MIN), cursor.min(until)),
                Direction::Forward => (cursor, to.unwrap_or(i64::MAX).min(until)),
            };
            if after >= upto {
                exhausted = true;
                break;
            }
            let batch = store::room_events(
                self.storage.pool(),
                room,
                after,
                upto,
                direction,
                batch_size,
            )
            .await?;
            if batch.is_empty() {
                exhausted = true;
                break;
            }
            for stored in &batch {
                scanned += 1;
                let position = stored.position.unwrap_or(0);
                cursor = match direction {
                    Direction::Backward => position - 1,
                    Direction::Forward => position,
                };
                if !filter_matches(filter, &stored.pdu) || !judge.allows(stored).await? {
                    continue;
                }
                senders.push(stored.pdu.sender.clone());
                chunk.push(self.client_event(stored, viewer, true).await?);
                if chunk.len() >= limit {
                    break;
                }
            }
        }
        let state = if filter.lazy_load_options.is_disabled() {
            Vec::new()
        } else {
            self.member_events(room, &senders).await?
        };
        Ok(MessagesPage {
            chunk,
            start: from.to_string(),
            end: (!exhausted).then(|| cursor.to_string()),
            state,
        })
    }

    /// Current member events of `users` in the client format.
    pub(crate) async fn member_events(
        &self,
        room: &RoomId,
        users: &[OwnedUserId],
    ) -> Result<Vec<Raw<AnyStateEvent>>> {
        let (map, _) = self.current_state(room).await?;
        let mut ids: Vec<OwnedEventId> = users
            .iter()
            .filter_map(|u| {
                map.get(&(StateEventType::RoomMember, u.to_string()))
                    .cloned()
            })
            .collect();
        ids.sort();
        ids.dedup();
        let events = self.pdus(&ids).await?;
        Ok(ids
            .iter()
            .filter_map(|id| events.get(id))
            .map(|e| e.to_client_raw(true, None))
            .collect())
    }

    /// One event, if `viewer` may see it.
    pub async fn event(
        &self,
        room: &RoomId,
        viewer: Viewer<'_>,
        event_id: &str,
    ) -> Result<Raw<AnyTimelineEvent>> {
        let mut judge = self.history_judge(room, viewer.user).await?;
        let Some(stored) = store::event(self.storage.pool(), event_id).await? else {
            return Err(Error::NotFound("event not found".into()));
        };
        if stored.pdu.room != room || !judge.allows(&stored).await? {
            return Err(Error::NotFound("event not found".into()));
        }
        self.client_event(&stored, viewer, true).await
    }

    /// An event with up to `limit` events around it.
    pub async fn context(
        &self,
        room: &RoomId,
        viewer: Viewer<'_>,
        event_id: &str,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<EventContext> {
        let event = self.event(room, viewer, event_id).await?;
        let Some(stored) = store::event(self.storage.pool(), event_id).await? else {
            return Err(Error::NotFound("event not found".into()));
        };
        let position = stored.position.unwrap_or(0);
        let half = limit.min(MAX_PAGE) / 2;
        let before_limit = limit.min(MAX_PAGE) - half;
        let before = self
            .messages(
                room,
                viewer,
                Some(&(position - 1).to_string()),
                None,
                Direction::Backward,
                before_limit.max(1),
                filter,
            )
            .await?;
        let after = self
            .messages(
                room,
                viewer,
                Some(&position.to_string()),
                None,
                Direction::Forward,
                half.max(1),
                filter,
            )
            .await?;
        let (before_chunk, after_chunk) = if limit == 0 {
            (Vec::new(), Vec::new())
        } else {
            (
                before.chunk.into_iter().take(before_limit).collect(),
                after.chunk.into_iter().take(half).collect(),
            )
        };
        let state_map = match stored.state_group {
            Some(g) => self.state_at_group(g).await?,
            None => Arc::new(StateMap::default()),
        };
        let state = if filter.lazy_load_options.is_disabled() {
            self.state_events_client(&state_map).await?
        } else {
            self.member_events(room, std::slice::from_ref(&stored.pdu.sender))
                .await?
        };
        Ok(EventContext {
            event,
            before: before_chunk,
            after: after_chunk,
            start: before.end.unwrap_or_else(|| i64::MIN.to_string()),
            end: after
                .end
                .unwrap_or_else(|| self.notifier.current().0.to_string()),
            state,
        })
    }

    /// The events of a state map in the client format.
    pub(crate) async fn state_events_client(
        &self,
        state: &StateMap,
    ) -> Result<Vec<Raw<AnyStateEvent>>> {
        let ids: Vec<OwnedEventId> = state.values().cloned().collect();
        let events = self.pdus(&ids).await?;
        let mut out: Vec<&Arc<Pdu>> = events.values().collect();
        out.sort_by(|a, b| a.depth.cmp(&b.depth).then(a.event_id.cmp(&b.event_id)));
        let pdus: Vec<&Pdu> = out.iter().map(|e| &***e).collect();
        let mut unsigned = self.state_unsigned(&pdus).await?;
        Ok(out
            .into_iter()
            .map(|e| e.to_client_raw_with(true, unsigned.remove(&e.event_id).as_deref()))
            .collect())
    }

    /// The state a user may see: current while joined, as of leaving for former members.
    async fn visible_state(&self, room: &RoomId, user: &UserId) -> Result<Arc<StateMap>> {
        let access = self.state_access(room, user).await?;
        if access.joined || access.until >= self.notifier.current().0 {
            return Ok(self.current_state(room).await?.0);
        }
        match store::group_at(self.storage.pool(), room, access.until).await? {
            Some(g) => self.state_at_group(g).await,
            None => Err(Error::Forbidden("you are not a member of this room".into())),
        }
    }

    /// The room state as `user` may see it.
    pub async fn room_state(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Vec<Raw<AnyStateEvent>>> {
        let state = self.visible_state(room, user).await?;
        self.state_events_client(&state).await
    }

    /// The content of one state event as `user` may see it.
    pub async fn room_state_event(
        &self,
        room: &RoomId,
        user: &UserId,
        kind: &StateEventType,
        key: &str,
    ) -> Result<Raw<AnyStateEvent>> {
        let state = self.visible_state(room, user).await?;
        let Some(id) = state.get(&(kind.clone(), key.to_owned())) else {
            return Err(Error::NotFound("state event not found".into()));
        };
        let events = self.pdus(std::slice::from_ref(id)).await?;
        let event = events
            .get(id)
            .ok_or_else(|| Error::NotFound("state event not found".into()))?;
        let mut unsigned = self.state_unsigned(&[event]).await?;
        Ok(event.to_client_raw_with(true, unsigned.remove(&event.event_id).as_deref()))
    }

    /// Member events of a room, at `at` (a token) or now, filtered by membership.
    pub async fn members(
        &self,
        room: &RoomId,
        user: &UserId,
        at: Option<&str>,
        membership: Option<&str>,
        not_membership: Option<&str>,
    ) -> Result<Vec<Raw<AnyStateEvent>>> {
        let access = self.state_access(room, user).await?;
        let state = match at {
            Some(token) => {
                let at = parse_token(token)?.min(access.until);
                match store::group_at(self.storage.pool(), room, at).await? {
                    Some(g) => self.state_at_group(g).await?,
                    None => Arc::new(StateMap::default()),
                }
            }
            None => self.visible_state(room, user).await?,
        };
        let ids: Vec<OwnedEventId> = state
            .iter()
            .filter(|((kind, _), _)| *kind == StateEventType::RoomMember)
            .map(|(_, id)| id.clone())
            .collect();
        let events = self.pdus(&ids).await?;
        let mut out: Vec<&Arc<Pdu>> = events
            .values()
            .filter(|e| {
                let m = e.content_str("membership");
                membership.is_none_or(|want| m.as_deref() == Some(want))
                    && not_membership.is_none_or(|skip| m.as_deref() != Some(skip))
            })
            .collect();
        out.sort_by(|a, b| a.state_key.cmp(&b.state_key));
        let pdus: Vec<&Pdu> = out.iter().map(|e| &***e).collect();
        let mut unsigned = self.state_unsigned(&pdus).await?;
        Ok(out
            .into_iter()
            .map(|e| e.to_client_raw_with(true, unsigned.remove(&e.event_id).as_deref()))
            .collect())
    }

    /// Joined members with their display names and avatars; the caller must be joined.
    pub async fn joined_members(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Vec<(OwnedUserId, Option<String>, Option<String>)>> {
        if !self.is_joined(user, room).await? {
            return Err(Error::Forbidden("you are not joined to this room".into()));
        }
        let (_, events) = self.current_state(room).await?;
        let mut out: Vec<(OwnedUserId, Option<String>, Option<String>)> = events
            .iter()
            .filter(|e| e.kind == TimelineEventType::RoomMember)
            .filter(|e| e.content_str("membership").as_deref() == Some("join"))
            .filter_map(|e| {
                let user = UserId::parse(e.state_key.as_deref()?).ok()?;
                Some((
                    user,
                    e.content_str("displayname"),
                    e.content_str("avatar_url"),
                ))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Sends a state event.
    pub async fn send_state(
        &self,
        room: &RoomId,
        sender: &UserId,
        kind: &str,
        key: &str,
        content: Value,
    ) -> Result<OwnedEventId> {
        self.send(room, sender, None, EventTemplate::state(kind, key, content))
            .await
    }

    /// Redacts an event; others' events need the room's redact level.
    pub async fn redact(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &str,
        reason: Option<&str>,
        txn: Option<(&str, &str)>,
    ) -> Result<OwnedEventId> {
        let Some(stored) = store::event(self.storage.pool(), target).await? else {
            return Err(Error::NotFound("event not found".into()));
        };
        if stored.pdu.room != room {
            return Err(Error::NotFound("event not found".into()));
        }
        if stored.pdu.sender != sender {
            let guard = self.lock(room).await?;
            let allowed = guard
                .state
                .as_ref()
                .is_some_and(|s| power::user_level(s, sender) >= power::redact_level(s));
            if !allowed {
                return Err(Error::Forbidden(
                    "you may not redact other users' events".into(),
                ));
            }
        }
        let mut content = json!({});
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        let template = EventTemplate {
            kind: TimelineEventType::RoomRedaction,
            state_key: None,
            content,
            redacts: Some(stored.pdu.event_id.clone()),
        };
        self.send(room, sender, txn, template).await
    }
}
