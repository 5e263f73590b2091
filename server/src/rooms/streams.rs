//! What sync reads from rooms: membership history, timeline ranges, state at positions,
//! membership changes of others and unread counts.

use std::{collections::HashMap, sync::Arc};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::StateEventType};

use super::{Direction, Rooms, StateMap, pdu::Pdu, store};
use crate::{Error, Result};

pub(crate) use super::store::{ListedRoom, MembershipChange, RoomKind, StoredEvent};

/// Events counted for unread notifications, at most, per room.
const MAX_UNREAD_SCAN: i64 = 1_000;

impl Rooms {
    /// The rooms a sliding-sync list may show `user`: joined and invited ones, and
    /// those left or banned from after `left_after`.
    pub(crate) async fn listed_rooms(
        &self,
        user: &UserId,
        left_after: i64,
    ) -> Result<Vec<ListedRoom>> {
        store::listed_rooms(self.storage.pool(), user, left_after).await
    }

    /// The newest message-like event's position of each room with one in `(after, upto]`,
    /// from the recent events held in memory (None when they do not cover the range).
    pub(crate) async fn bumps_between(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<Option<HashMap<OwnedRoomId, i64>>> {
        self.inner
            .recent
            .bumps_between(&self.storage, after, upto)
            .await
    }

    /// Rooms with events in `(after, upto]`.
    pub(crate) async fn rooms_with_events(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<std::collections::HashSet<OwnedRoomId>> {
        if let Some(rooms) = self
            .inner
            .recent
            .rooms_between(&self.storage, after, upto)
            .await?
        {
            return Ok(rooms);
        }
        Ok(store::rooms_with_events(self.storage.pool(), after, upto)
            .await?
            .into_iter()
            .collect())
    }

    /// Events of `room` in `(after, upto]`, newest first, at most `limit`.
    pub(crate) async fn latest_events(
        &self,
        room: &RoomId,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<Arc<StoredEvent>>> {
        if let Some(events) = self
            .inner
            .recent
            .room_backward(
                &self.storage,
                room,
                after,
                upto,
                usize::try_from(limit).unwrap_or(0),
            )
            .await?
        {
            return Ok(events);
        }
        Ok(store::room_events(
            self.storage.pool(),
            room,
            after,
            upto,
            Direction::Backward,
            limit,
        )
        .await?
        .into_iter()
        .map(Arc::new)
        .collect())
    }

    /// The room state after the event at or before `position` (empty before the room began).
    pub(crate) async fn state_at_position(
        &self,
        room: &RoomId,
        position: i64,
    ) -> Result<Arc<StateMap>> {
        if let Some(group) = store::group_at(self.storage.pool(), room, position).await? {
            return self.state_at_group(group).await;
        }
        // Nothing in the stream before `position`: a room joined through another server starts
        // with its join, whose state came with it. The state before that first event is its
        // state without the event itself.
        match store::first_group_after(self.storage.pool(), room, position).await? {
            Some((group, first)) => {
                let mut state = (*self.state_at_group(group).await?).clone();
                state.retain(|_, id| *id != first);
                Ok(Arc::new(state))
            }
            None => Ok(Arc::new(StateMap::default())),
        }
    }

    /// Membership changes in any room in `(after, upto]`: (room, user, membership).
    pub(crate) async fn member_changes(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<Vec<(OwnedRoomId, OwnedUserId, String)>> {
        store::member_changes(self.storage.pool(), after, upto).await
    }

    /// Joined members of a room now.
    pub(crate) async fn joined_user_ids(&self, room: &RoomId) -> Result<Vec<OwnedUserId>> {
        store::members_with(self.storage.pool(), room, "join").await
    }

    /// Events by ID.
    pub(crate) async fn load_pdus(
        &self,
        ids: &[OwnedEventId],
    ) -> Result<HashMap<OwnedEventId, Arc<Pdu>>> {
        self.pdus(ids).await
    }

    /// State events of `room` by ID: those the room's head holds (the current state's) from
    /// memory, the rest from the database. An initial sync's state is mostly the current
    /// state, so a room with large state is not read and parsed again for every such sync.
    pub(crate) async fn state_pdus(
        &self,
        room: &RoomId,
        ids: &[OwnedEventId],
    ) -> Result<HashMap<OwnedEventId, Arc<Pdu>>> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        // A room with no head here (held only as history, say) is read from the database.
        let guard = match self.lock(room).await {
            Ok(guard) => Some(guard),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        {
            match guard.as_ref().and_then(|g| g.state.as_ref()) {
                Some(head) => {
                    for id in ids {
                        match head.state_events.get(id) {
                            Some(pdu) => {
                                out.insert(id.clone(), pdu.clone());
                            }
                            None => missing.push(id.clone()),
                        }
                    }
                }
                None => missing.extend(ids.iter().cloned()),
            }
        }
        drop(guard);
        if !missing.is_empty() {
            out.extend(self.pdus(&missing).await?);
        }
        Ok(out)
    }

    /// The stripped state shown with an invite: the room's identity and the invite itself.
    pub(crate) async fn invite_state(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Vec<serde_json::Value>> {
        self.invite_state_by(room, user, None).await
    }

    /// [`Rooms::invite_state`], naming the inviter before the invite exists (for the
    /// invitee's server); otherwise the invite's sender is the inviter.
    pub(crate) async fn invite_state_by(
        &self,
        room: &RoomId,
        user: &UserId,
        inviter: Option<&UserId>,
    ) -> Result<Vec<serde_json::Value>> {
        if !self.is_known(room).await? {
            // An invite to a room on other servers: what the inviting server told us.
            return Ok(match self.remote_invite(room, user).await? {
                Some(invite) => {
                    let mut out = invite.stripped;
                    out.push(invite.event.to_client_value(false, None));
                    out
                }
                None => Vec::new(),
            });
        }
        let (map, _) = self.current_state(room).await?;
        let keys = [
            (StateEventType::RoomCreate, String::new()),
            (StateEventType::RoomJoinRules, String::new()),
            (StateEventType::RoomName, String::new()),
            (StateEventType::RoomAvatar, String::new()),
            (StateEventType::RoomCanonicalAlias, String::new()),
            (StateEventType::RoomEncryption, String::new()),
            (StateEventType::RoomTopic, String::new()),
            (StateEventType::RoomMember, user.to_string()),
        ];
        let member_id = map.get(&(StateEventType::RoomMember, user.to_string()));
        // The inviter's own member event: clients name a DM invite after it.
        let inviter = match (inviter, member_id) {
            (Some(inviter), _) => Some(inviter.to_owned()),
            (None, Some(id)) => self
                .pdus(std::slice::from_ref(id))
                .await?
                .get(id)
                .map(|e| e.sender.clone())
                .filter(|sender| sender != user),
            (None, None) => None,
        };
        let ids: Vec<OwnedEventId> = keys
            .iter()
            .cloned()
            .chain(inviter.map(|u| (StateEventType::RoomMember, u.to_string())))
            .filter_map(|k| map.get(&k).cloned())
            .collect();
        let events = self.pdus(&ids).await?;
        let mut out = Vec::new();
        for id in &ids {
            let Some(event) = events.get(id) else {
                continue;
            };
            // The invite itself is shown as a full event, which carries its ID and timestamp.
            if Some(id) == member_id {
                out.push(event.to_client_value(false, None));
            } else {
                out.push(event.to_stripped_value());
            }
        }
        Ok(out)
    }

    /// Unread counts of `user` in `room` after the read position (or after their join):
    /// (notifications, highlights), up to `upto`. `judge` says of one event by someone else
    /// whether it notifies and whether it highlights (from the user's push rules).
    pub(crate) async fn unread_counts(
        &self,
        room: &RoomId,
        user: &UserId,
        read_position: Option<i64>,
        joined_at: i64,
        upto: i64,
        judge: &mut impl JudgeNotify,
    ) -> Result<(u64, u64)> {
        let after = read_position.unwrap_or(joined_at);
        // Counts are kept per (user, room) and extended by the events since the last count,
        // so a sync after one new message reads one event, not the whole unread backlog.
        let key = (user.to_owned(), room.to_owned());
        let cached = self
            .inner
            .unread
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
            .filter(|c| c.after == after && c.upto <= upto);
        let (from, mut notify, mut highlight) = match cached {
            Some(c) => (c.upto, c.notify, c.highlight),
            None => (after, 0, 0),
        };
        let events = self
            .latest_events(room, from, upto, MAX_UNREAD_SCAN)
            .await?;
        for stored in events {
            if stored.pdu.sender == user {
                continue;
            }
            let judged = judge.judge(&stored).await?;
            if judged.notify {
                notify += 1;
            }
            if judged.highlight {
                highlight += 1;
            }
        }
        if let Ok(mut cache) = self.inner.unread.lock() {
            if cache.len() >= super::UNREAD_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(
                key,
                super::UnreadCount {
                    after,
                    upto,
                    notify,
                    highlight,
                },
            );
        }
        Ok((notify, highlight))
    }
}

/// Says what one user's push rules make of an event, for [`Rooms::unread_counts`].
pub(crate) trait JudgeNotify {
    /// Whether `stored` notifies and whether it highlights.
    fn judge(&mut self, stored: &StoredEvent) -> impl Future<Output = Result<Notify>> + Send;
}

/// What a user's push rules make of one event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Notify {
    /// The event notifies (counts in `notification_count`).
    pub(crate) notify: bool,
    /// The event highlights (counts in `highlight_count`).
    pub(crate) highlight: bool,
}

/// Rooms in `log` as of a position: the last change per room at or before it.
pub(crate) fn memberships_as_of(
    log: &[MembershipChange],
    position: i64,
) -> HashMap<OwnedRoomId, MembershipChange> {
    let mut out = HashMap::new();
    for change in log.iter().filter(|c| c.position <= position) {
        out.insert(change.room.clone(), change.clone());
    }
    out
}
