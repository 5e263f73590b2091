//! Room aliases, the public room directory and the user directory (local users with their
//! profiles, other servers' users with what their member events say).

use ruma::{
    OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UInt, UserId,
    api::client::user_directory::search_users::v3::User,
    directory::{PublicRoomsChunk, PublicRoomsChunkInit},
    events::StateEventType,
    room::JoinRuleKind,
};

use std::sync::Arc;

use super::{Rooms, pdu::Pdu, store};
use crate::{
    Error, Result,
    userdata::{Profile, UserData},
};

/// Rooms a public-room listing returns at most.
pub const MAX_PUBLIC_ROOMS: usize = 500;
/// Candidates the user directory looks at, at most.
const MAX_DIRECTORY_CANDIDATES: usize = 5_000;
/// Rooms looked at for another server's user's display name, at most.
const MAX_PROFILE_ROOMS: usize = 20;
/// Longest display name shown for another server's user.
const MAX_DISPLAYNAME_CHARS: usize = 256;

/// What a public-room listing asks for, whichever server answers it.
#[derive(Debug, Clone, Default)]
pub struct PublicRoomsQuery {
    /// Rooms on the page, at most.
    pub limit: Option<usize>,
    /// The token of a previous page.
    pub since: Option<String>,
    /// Matched against name, topic and canonical alias.
    pub search: Option<String>,
    /// Whether rooms bridged from other networks are wanted too (this node bridges none).
    pub include_all_networks: bool,
}

/// One page of the public room directory.
#[derive(Debug, Clone)]
pub struct PublicRoomsPage {
    /// The rooms.
    pub chunk: Vec<PublicRoomsChunk>,
    /// Token for the next page.
    pub next_batch: Option<String>,
    /// Token for the previous page.
    pub prev_batch: Option<String>,
    /// How many rooms match in total.
    pub total: usize,
}

impl Rooms {
    /// The room an alias names, if it is a local alias.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        Ok(store::alias_room(self.storage.pool(), alias.as_str())
            .await?
            .map(|(room, _)| room))
    }

    /// Adds a local alias for a room (`M_ROOM_IN_USE` when taken). Only a member of the room
    /// may name it, so nobody can point an alias of this server at a room they are not in.
    pub async fn set_alias(
        &self,
        alias: &RoomAliasId,
        room: &RoomId,
        creator: &UserId,
    ) -> Result<()> {
        if alias.server_name() != self.config.server_name {
            return Err(Error::InvalidParam("alias must be on this server".into()));
        }
        if store::room_head(self.storage.pool(), room).await?.is_none() {
            return Err(Error::NotFound("unknown room".into()));
        }
        // A taken alias is reported as taken, whoever asks (resolving it is public anyway).
        if store::alias_room(self.storage.pool(), alias.as_str())
            .await?
            .is_some()
        {
            return Err(Error::RoomInUse("room alias already taken".into()));
        }
        if !self.is_joined(creator, room).await? {
            return Err(Error::Forbidden(
                "you must be joined to the room to give it an alias".into(),
            ));
        }
        if !store::insert_alias(self.storage.pool(), alias.as_str(), room, creator).await? {
            return Err(Error::RoomInUse("room alias already taken".into()));
        }
        Ok(())
    }

    /// Removes a local alias; its creator or a user who may change the room's canonical alias
    /// may do so.
    pub async fn delete_alias(&self, alias: &RoomAliasId, user: &UserId) -> Result<()> {
        let Some((room, creator)) = store::alias_room(self.storage.pool(), alias.as_str()).await?
        else {
            return Err(Error::NotFound("unknown alias".into()));
        };
        if creator != user.as_str()
            && !self
                .may_send_state(&room, user, &StateEventType::RoomCanonicalAlias)
                .await?
        {
            return Err(Error::Forbidden("you may not remove this alias".into()));
        }
        store::delete_alias(self.storage.pool(), alias.as_str()).await
    }

    /// The local aliases of a room.
    pub async fn aliases(&self, room: &RoomId) -> Result<Vec<String>> {
        store::room_aliases(self.storage.pool(), room).await
    }

    /// Lists or unlists a room in the public directory.
    pub async fn set_published(&self, room: &RoomId, published: bool) -> Result<()> {
        let mut guard = self.lock(room).await?;
        store::set_published(self.storage.pool(), room, published).await?;
        if let Some(state) = guard.state.as_mut() {
            state.published = published;
        }
        Ok(())
    }

    /// Whether a room is listed in the public directory.
    pub async fn is_published(&self, room: &RoomId) -> Result<bool> {
        let guard = self.lock(room).await?;
        Ok(guard.state.as_ref().is_some_and(|s| s.published))
    }

    /// A page of the public room directory: `since` is the token of a previous page, `search`
    /// matches name, topic and alias.
    pub async fn public_rooms(
        &self,
        limit: Option<usize>,
        since: Option<&str>,
        search: Option<&str>,
    ) -> Result<PublicRoomsPage> {
        let offset: usize = match since {
            Some(token) => token
                .parse()
                .map_err(|_| Error::InvalidParam("bad since token".into()))?,
            None => 0,
        };
        let search = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let mut all = Vec::new();
        for room in store::rooms(self.storage.pool(), true)
            .await?
            .into_iter()
            .take(MAX_PUBLIC_ROOMS)
        {
            let chunk = self.public_chunk(&room).await?;
            if let Some(term) = &search {
                let hay = [
                    chunk.name.clone(),
                    chunk.topic.clone(),
                    chunk.canonical_alias.as_ref().map(|a| a.to_string()),
                ];
                if !hay
                    .iter()
                    .flatten()
                    .any(|s| s.to_lowercase().contains(term))
                {
                    continue;
                }
            }
            all.push(chunk);
        }
        all.sort_by(|a, b| {
            b.num_joined_members
                .cmp(&a.num_joined_members)
                .then(a.room_id.cmp(&b.room_id))
        });
        let total = all.len();
        let limit = limit.unwrap_or(MAX_PUBLIC_ROOMS).clamp(1, MAX_PUBLIC_ROOMS);
        let chunk: Vec<PublicRoomsChunk> = all.into_iter().skip(offset).take(limit).collect();
        let end = offset + chunk.len();
        Ok(PublicRoomsPage {
            chunk,
            next_batch: (end < total).then(|| end.to_string()),
            prev_batch: (offset > 0).then(|| offset.saturating_sub(limit).to_string()),
            total,
        })
    }

    pub(crate) async fn public_chunk(&self, room: &RoomId) -> Result<PublicRoomsChunk> {
        let guard = self.lock(room).await?;
        let Some(state) = guard.state.as_ref() else {
            return Err(Error::Internal("room head not loaded".into()));
        };
        let joined = state
            .state
            .iter()
            .filter(|((kind, _), _)| *kind == StateEventType::RoomMember)
            .filter_map(|(_, id)| state.state_events.get(id))
            .filter(|e| e.content_str("membership").as_deref() == Some("join"))
            .count();
        let mut chunk = PublicRoomsChunk::from(PublicRoomsChunkInit {
            num_joined_members: UInt::try_from(joined).unwrap_or_default(),
            room_id: room.to_owned(),
            world_readable: false,
            guest_can_join: false,
        });
        chunk.name = state.content_str(&StateEventType::RoomName, "name");
        chunk.topic = state.content_str(&StateEventType::RoomTopic, "topic");
        chunk.canonical_alias = state
            .content_str(&StateEventType::RoomCanonicalAlias, "alias")
            .and_then(|a| a.try_into().ok());
        chunk.avatar_url = state
            .content_str(&StateEventType::RoomAvatar, "url")
            .map(Into::into);
        chunk.world_readable = state
            .content_str(&StateEventType::RoomHistoryVisibility, "history_visibility")
            .as_deref()
            == Some("world_readable");
        chunk.guest_can_join = state
            .content_str(&StateEventType::RoomGuestAccess, "guest_access")
            .as_deref()
            == Some("can_join");
        chunk.join_rule = state
            .content_str(&StateEventType::RoomJoinRules, "join_rule")
            .map(|r| JoinRuleKind::from(r.as_str()))
            .unwrap_or(JoinRuleKind::Invite);
        chunk.room_type = state
            .content_str(&StateEventType::RoomCreate, "type")
            .map(|t| t.as_str().into());
        Ok(chunk)
    }

    /// Users the searcher may find: those sharing a room with them and those in public rooms.
    pub async fn directory_candidates(&self, searcher: &UserId) -> Result<Vec<OwnedUserId>> {
        let mut users = self.users_sharing_rooms_with(searcher).await?;
        for room in store::rooms(self.storage.pool(), false).await? {
            if users.len() >= MAX_DIRECTORY_CANDIDATES {
                break;
            }
            let public = self
                .current_state_event(&room, &StateEventType::RoomJoinRules, "")
                .await?
                .and_then(|e| e.content_str("join_rule"))
                .as_deref()
                == Some("public");
            if public {
                users.extend(store::members_with(self.storage.pool(), &room, "join").await?);
            }
        }
        users.sort();
        users.dedup();
        Ok(users)
    }

    /// The display name and avatar of the newest join event of `user` in the rooms this node
    /// shares with them (empty when none says anything).
    pub async fn member_profile(&self, user: &UserId) -> Result<Profile> {
        let mut newest: Option<Arc<Pdu>> = None;
        for room in self
            .joined_rooms(user)
            .await?
            .into_iter()
            .take(MAX_PROFILE_ROOMS)
        {
            if let Some(event) = self
                .current_state_event(&room, &StateEventType::RoomMember, user.as_str())
                .await?
                && newest
                    .as_ref()
                    .is_none_or(|n| n.origin_server_ts < event.origin_server_ts)
            {
                newest = Some(event);
            }
        }
        let Some(event) = newest else {
            return Ok(Profile::default());
        };
        Ok(Profile {
            displayname: event
                .content_str("displayname")
                .map(|n| n.chars().take(MAX_DISPLAYNAME_CHARS).collect()),
            avatar_url: event.content_str("avatar_url").map(Into::into),
        })
    }

    /// Whether `user`'s power allows sending a state event of `kind` in `room`.
    pub async fn may_send_state(
        &self,
        room: &RoomId,
        user: &UserId,
        kind: &StateEventType,
    ) -> Result<bool> {
        let guard = self.lock(room).await?;
        let Some(state) = guard.state.as_ref() else {
            return Ok(false);
        };
        Ok(super::power::user_level(state, user) >= super::power::state_level(state, kind))
    }

    pub(crate) fn forget_handle(&self, room: &RoomId) {
        if let Ok(mut rooms) = self.inner.rooms.lock() {
            rooms.remove(room);
        }
    }
}

/// Searches the user directory for `term` (matched against user IDs and display names) as seen
/// by `searcher`. Returns the matches (at most `limit`) and whether more were left out.
pub async fn search_users(
    rooms: &Rooms,
    userdata: &UserData,
    searcher: &UserId,
    term: &str,
    limit: usize,
) -> Result<(Vec<User>, bool)> {
    let term = term.to_lowercase();
    let mut out = Vec::new();
    let mut limited = false;
    let ours = rooms.server_name().to_owned();
    for user in rooms.directory_candidates(searcher).await? {
        // Another server's user is known by what their member events say.
        let profile = if user.server_name() == ours {
            userdata.profile(&user).await?
        } else {
            rooms.member_profile(&user).await?
        };
        let name_match = profile
            .displayname
            .as_ref()
            .is_some_and(|n| n.to_lowercase().contains(&term));
        if !(user.as_str().to_lowercase().contains(&term) || name_match) {
            continue;
        }
        if out.len() >= limit {
            limited = true;
            break;
        }
        let mut found = User::new(user);
        found.display_name = profile.displayname;
        found.avatar_url = profile.avatar_url;
        out.push(found);
    }
    Ok((out, limited))
}
