//! Joining, inviting and resolving aliases across servers: the [`grove_server::federation::Remote`]
//! operations the client API calls for rooms and users on other nodes.

use std::sync::{Arc, Weak};

use grove_server::{
    Error, Result,
    federation::{BoxFuture, Remote},
    rooms::{
        EventTemplate, builder,
        directory::{MAX_PUBLIC_ROOMS, PublicRoomsPage, PublicRoomsQuery},
        federated::JoinedRoom,
        hierarchy::{MAX_SPACE_CHILDREN, RemoteSpace, SpaceRoom},
    },
    userdata::Profile,
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedRoomId,
    OwnedServerName, RoomAliasId, RoomId, RoomOrAliasId, RoomVersionId, ServerName, UserId,
    directory::PublicRoomsChunk, events::TimelineEventType,
};
use serde_json::{Value, json};
use tracing::{debug, info};

use crate::{Ctx, client::segment};

/// Longest display name taken from another server.
const MAX_DISPLAYNAME_CHARS: usize = 256;
/// Servers asked about one space, at most.
const MAX_HIERARCHY_SERVERS: usize = 3;
/// Events of a room's history fetched right after joining it through another server.
const JOIN_HISTORY: usize = 50;
/// How long the join waits for that history at most.
const JOIN_HISTORY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Events in the state, or in the auth chain, of a `send_join` answer, at most: a room with a
/// larger state is not joined. The bound this node's own answers keep to, so one Grove node
/// can always join through another.
pub const MAX_JOIN_EVENTS: usize = grove_server::rooms::resolve::MAX_RESOLUTION_EVENTS;
/// Longest pagination token taken from another server.
const MAX_TOKEN_CHARS: usize = 256;

/// Federation as the client API sees it.
pub struct RemoteRooms {
    // Weak: the homeserver holds this, and the context holds the homeserver.
    ctx: Weak<Ctx>,
    backfills: crate::backfill::Attempts,
}

impl RemoteRooms {
    /// Remote operations over `ctx`.
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        Self {
            ctx: Arc::downgrade(ctx),
            backfills: crate::backfill::Attempts::default(),
        }
    }

    fn ctx(&self) -> Result<Arc<Ctx>> {
        self.ctx
            .upgrade()
            .ok_or_else(|| Error::NotEnabled("federation has stopped".into()))
    }

    async fn join_room(
        &self,
        user: &UserId,
        target: &RoomOrAliasId,
        via: &[OwnedServerName],
    ) -> Result<OwnedRoomId> {
        let ctx = self.ctx()?;
        let hs = &ctx.hs;
        let mut servers: Vec<OwnedServerName> = Vec::new();
        let room: OwnedRoomId = match <&RoomId>::try_from(target) {
            Ok(room) => {
                servers.extend(via.iter().cloned());
                if let Some(server) = room.server_name() {
                    servers.push(server.to_owned());
                }
                room.to_owned()
            }
            Err(alias) => {
                let (room, found) = self
                    .alias(alias)
                    .await?
                    .ok_or_else(|| Error::NotFound("room alias not found".into()))?;
                servers.extend(found);
                servers.extend(via.iter().cloned());
                servers.push(alias.server_name().to_owned());
                room
            }
        };
        if let Some(invite) = hs.rooms.remote_invite(&room, user).await? {
            servers.push(invite.event.sender.server_name().to_owned());
        }
        let profile = hs.userdata.profile(user).await?;
        // A node with no joined user in a room no longer follows it: a join built over what it
        // last saw could undo a ban made meanwhile, so it joins through a server in the room.
        let known = hs.rooms.is_known(&room).await?;
        if known {
            if hs.rooms.has_local_member(&room).await? {
                return hs.rooms.join(&room, user, &profile).await;
            }
            servers.extend(hs.rooms.servers_in_room(&room).await?);
        }
        let mut candidates: Vec<OwnedServerName> = Vec::new();
        for s in servers {
            if s != hs.config.server_name && !candidates.contains(&s) {
                candidates.push(s);
            }
        }
        if known && candidates.is_empty() {
            // Nobody else is in the room: this node's view is the room.
            return hs.rooms.join(&room, user, &profile).await;
        }
        if candidates.is_empty() {
            return Err(Error::NotFound(
                "this node does not know the room; name a server in it with via".into(),
            ));
        }
        let mut last = Error::NotFound("no server could be joined through".into());
        for server in candidates {
            match self.join_via(&server, &room, user, &profile).await {
                Ok(()) => {
                    info!(%room, %server, %user, "joined a room through another server");
                    self.recent_history(&ctx, &room).await;
                    return Ok(room);
                }
                Err(e) => {
                    debug!(%room, %server, error = %e, "remote join failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Fetches the room's latest history after a join through another server, so that the
    /// joiner's next sync shows what was said before (send_join brings only the state). A
    /// failure costs only that: the client can still page back later.
    async fn recent_history(&self, ctx: &Ctx, room: &RoomId) {
        let fetch = crate::backfill::backfill(ctx, &self.backfills, room, JOIN_HISTORY);
        match tokio::time::timeout(JOIN_HISTORY_WAIT, fetch).await {
            Ok(Ok(placed)) => debug!(%room, placed, "history fetched after the join"),
            Ok(Err(e)) => debug!(%room, error = %e, "no history fetched after the join"),
            Err(_) => debug!(%room, "fetching history after the join took too long"),
        }
    }

    async fn join_via(
        &self,
        server: &ServerName,
        room: &RoomId,
        user: &UserId,
        profile: &Profile,
    ) -> Result<()> {
        let ctx = self.ctx()?;
        let hs = &ctx.hs;
        let path = format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11&ver=12",
            segment(room.as_str()),
            segment(user.as_str())
        );
        let answer = ctx
            .client
            .request(server, http::Method::GET, &path, None)
            .await?;
        let version = answer["room_version"]
            .as_str()
            .and_then(|v| RoomVersionId::try_from(v).ok())
            .ok_or_else(|| Error::BadJson("make_join: no room version".into()))?;
        let rules = builder::rules_for(&version)?;
        let mut event =
            object(&answer["event"]).ok_or_else(|| Error::BadJson("make_join: no event".into()))?;
        event.remove("signatures");
        event.remove("hashes");
        event.remove("unsigned");
        let mut content = json!({ "membership": "join" });
        if let Some(name) = &profile.displayname {
            content["displayname"] = name.as_str().into();
        }
        if let Some(url) = &profile.avatar_url {
            content["avatar_url"] = url.as_str().into();
        }
        let content = canonical(content)?;
        event.insert("content".into(), content);
        event.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(MilliSecondsSinceUnixEpoch::now().get().into()),
        );
        let sender_ok = matches!(event.get("sender"), Some(CanonicalJsonValue::String(s)) if s == user.as_str());
        let key_ok = matches!(event.get("state_key"), Some(CanonicalJsonValue::String(s)) if s == user.as_str());
        let room_ok = matches!(event.get("room_id"), Some(CanonicalJsonValue::String(s)) if s == room.as_str());
        if !sender_ok || !key_ok || !room_ok {
            return Err(Error::BadJson(
                "make_join: template is for someone else".into(),
            ));
        }
        ruma::signatures::hash_and_sign_event(
            hs.config.server_name.as_str(),
            hs.key.key_pair(),
            &mut event,
            &rules.redaction,
        )
        .map_err(|e| Error::Internal(format!("signing join: {e}")))?;
        let event_id = builder::event_id_of(&event, &rules)?;
        let path = format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            segment(room.as_str()),
            segment(event_id.as_str())
        );
        let body = serde_json::to_value(&event)?;
        let answer = ctx
            .client
            .request(server, http::Method::PUT, &path, Some(&body))
            .await?;
        // The resident's copy carries its signature too; take it when it is the same event.
        let join = object(&answer["event"])
            .filter(|e| builder::event_id_of(e, &rules).ok().as_ref() == Some(&event_id))
            .unwrap_or(event);
        let state = checked_events(&ctx, &answer["state"], &rules, "state").await?;
        let auth_chain = checked_events(&ctx, &answer["auth_chain"], &rules, "auth chain").await?;
        hs.rooms
            .persist_joined_room(JoinedRoom {
                room,
                version: &version,
                join,
                state,
                auth_chain,
            })
            .await
    }

    async fn invite_user(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<()> {
        let ctx = self.ctx()?;
        let hs = &ctx.hs;
        match hs.rooms.membership_of(room, target).await?.as_deref() {
            Some("join") => {
                return Err(Error::Forbidden(format!("{target} is already in the room")));
            }
            Some("ban") => return Err(Error::Forbidden(format!("{target} is banned"))),
            Some("invite") => return Ok(()),
            _ => {}
        }
        let version = hs.rooms.room_version(room).await?;
        let rules = builder::rules_for(&version)?;
        let mut content = json!({ "membership": "invite" });
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        if is_direct {
            content["is_direct"] = true.into();
        }
        // Clients name the invitee from the invite until they join; an unreachable profile
        // leaves the invite without a name.
        if let Ok(Some(profile)) = self.remote_profile(target).await {
            if let Some(name) = &profile.displayname {
                content["displayname"] = name.as_str().into();
            }
            if let Some(url) = &profile.avatar_url {
                content["avatar_url"] = url.as_str().into();
            }
        }
        let template =
            EventTemplate::state(TimelineEventType::RoomMember, target.as_str(), content);
        let prev = hs.rooms.extremities(room).await?;
        let event = hs.rooms.build_over(room, sender, &template, &prev).await?;
        let event_id = builder::event_id_of(&event, &rules)?;
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            segment(room.as_str()),
            segment(event_id.as_str())
        );
        let body = json!({
            "room_version": version.as_str(),
            "event": event,
            "invite_room_state": hs.rooms.invite_room_state(room, sender).await?,
        });
        let answer = ctx
            .client
            .request(target.server_name(), http::Method::PUT, &path, Some(&body))
            .await?;
        let signed = object(&answer["event"])
            .filter(|e| builder::event_id_of(e, &rules).ok().as_ref() == Some(&event_id))
            .ok_or_else(|| Error::BadJson("invite: the answer is another event".into()))?;
        ctx.keys
            .check_event(&signed, &rules)
            .await
            .map_err(|e| Error::Forbidden(format!("invite: {e}")))?;
        match hs.rooms.add_pdu(room, signed).await? {
            grove_server::rooms::auth::RemoteVerdict::Rejected(why)
            | grove_server::rooms::auth::RemoteVerdict::SoftFailed(why) => {
                Err(Error::Forbidden(why))
            }
            grove_server::rooms::auth::RemoteVerdict::Accepted => Ok(()),
        }
    }

    async fn refuse(&self, room: &RoomId, user: &UserId, reason: Option<&str>) -> Result<()> {
        let ctx = self.ctx()?;
        let hs = &ctx.hs;
        let invite = hs
            .rooms
            .remote_invite(room, user)
            .await?
            .ok_or_else(|| Error::Forbidden("you are not in this room".into()))?;
        let server = invite.event.sender.server_name().to_owned();
        let rules = builder::rules_for(&invite.version)?;
        let path = format!(
            "/_matrix/federation/v1/make_leave/{}/{}",
            segment(room.as_str()),
            segment(user.as_str())
        );
        let answer = ctx
            .client
            .request(&server, http::Method::GET, &path, None)
            .await?;
        let mut event = object(&answer["event"])
            .ok_or_else(|| Error::BadJson("make_leave: no event".into()))?;
        event.remove("signatures");
        event.remove("hashes");
        event.remove("unsigned");
        let mut content = json!({ "membership": "leave" });
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        event.insert("content".into(), canonical(content)?);
        let key_ok = matches!(event.get("state_key"), Some(CanonicalJsonValue::String(s)) if s == user.as_str());
        let sender_ok = matches!(event.get("sender"), Some(CanonicalJsonValue::String(s)) if s == user.as_str());
        if !key_ok || !sender_ok {
            return Err(Error::BadJson(
                "make_leave: template is for someone else".into(),
            ));
        }
        ruma::signatures::hash_and_sign_event(
            hs.config.server_name.as_str(),
            hs.key.key_pair(),
            &mut event,
            &rules.redaction,
        )
        .map_err(|e| Error::Internal(format!("signing leave: {e}")))?;
        let event_id = builder::event_id_of(&event, &rules)?;
        let path = format!(
            "/_matrix/federation/v2/send_leave/{}/{}",
            segment(room.as_str()),
            segment(event_id.as_str())
        );
        let body = serde_json::to_value(&event)?;
        ctx.client
            .request(&server, http::Method::PUT, &path, Some(&body))
            .await?;
        hs.rooms
            .record_remote_leave(room, &invite.version, &event)
            .await
    }

    async fn remote_profile(&self, user: &UserId) -> Result<Option<Profile>> {
        let ctx = self.ctx()?;
        let path = format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            segment(user.as_str())
        );
        let answer = match ctx
            .client
            .request(user.server_name(), http::Method::GET, &path, None)
            .await
        {
            Ok(a) => a,
            Err(crate::error::RequestError::Remote { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let displayname = answer["displayname"]
            .as_str()
            .map(|s| s.chars().take(MAX_DISPLAYNAME_CHARS).collect());
        let avatar_url = answer["avatar_url"]
            .as_str()
            .map(|s| ruma::OwnedMxcUri::from(s.to_owned()));
        Ok(Some(Profile {
            displayname,
            avatar_url,
        }))
    }

    async fn alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<Option<grove_server::federation::RoomAndServers>> {
        let ctx = self.ctx()?;
        let hs = &ctx.hs;
        if alias.server_name() == hs.config.server_name {
            let Some(room) = hs.rooms.resolve_alias(alias).await? else {
                return Ok(None);
            };
            let servers = hs.rooms.servers_in_room(&room).await?;
            return Ok(Some((room, servers)));
        }
        let path = format!(
            "/_matrix/federation/v1/query/directory?room_alias={}",
            segment(alias.as_str())
        );
        let answer = match ctx
            .client
            .request(alias.server_name(), http::Method::GET, &path, None)
            .await
        {
            Ok(a) => a,
            Err(crate::error::RequestError::Remote { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let room = answer["room_id"]
            .as_str()
            .and_then(|r| OwnedRoomId::try_from(r).ok())
            .ok_or_else(|| Error::BadJson("directory: no room ID".into()))?;
        let servers = answer["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|s| OwnedServerName::try_from(s).ok())
            .take(20)
            .collect();
        Ok(Some((room, servers)))
    }
}

impl RemoteRooms {
    async fn directory(
        &self,
        server: &ServerName,
        query: &PublicRoomsQuery,
    ) -> Result<PublicRoomsPage> {
        let ctx = self.ctx()?;
        let mut body = json!({ "include_all_networks": query.include_all_networks });
        if let Some(limit) = query.limit {
            body["limit"] = limit.min(MAX_PUBLIC_ROOMS).into();
        }
        if let Some(since) = &query.since {
            body["since"] = since.as_str().into();
        }
        if let Some(term) = &query.search {
            body["filter"] = json!({ "generic_search_term": term });
        }
        let answer = ctx
            .client
            .request(
                server,
                http::Method::POST,
                "/_matrix/federation/v1/publicRooms",
                Some(&body),
            )
            .await?;
        let Some(list) = answer["chunk"].as_array() else {
            return Err(Error::BadJson("publicRooms: no chunk".into()));
        };
        // A malformed entry costs that entry only.
        let chunk: Vec<PublicRoomsChunk> = list
            .iter()
            .take(MAX_PUBLIC_ROOMS)
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect();
        let token = |field: &str| {
            answer[field]
                .as_str()
                .filter(|t| t.len() <= MAX_TOKEN_CHARS)
                .map(str::to_owned)
        };
        Ok(PublicRoomsPage {
            total: answer["total_room_count_estimate"]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(chunk.len()),
            next_batch: token("next_batch"),
            prev_batch: token("prev_batch"),
            chunk,
        })
    }
}

impl RemoteRooms {
    async fn space(
        &self,
        room: &RoomId,
        via: &[OwnedServerName],
        suggested_only: bool,
    ) -> Result<Option<RemoteSpace>> {
        let ctx = self.ctx()?;
        let mut servers: Vec<OwnedServerName> = Vec::new();
        for s in via
            .iter()
            .cloned()
            .chain(room.server_name().map(ToOwned::to_owned))
        {
            if s != ctx.hs.config.server_name && !servers.contains(&s) {
                servers.push(s);
            }
        }
        let path = format!(
            "/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}",
            segment(room.as_str())
        );
        for server in servers.into_iter().take(MAX_HIERARCHY_SERVERS) {
            let answer = match ctx
                .client
                .request(&server, http::Method::GET, &path, None)
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    debug!(%room, %server, error = %e, "hierarchy not answered");
                    continue;
                }
            };
            let Some(space) = SpaceRoom::from_chunk(&answer["room"])
                .filter(|s| s.room_id().as_deref() == Some(room))
            else {
                debug!(%room, %server, "hierarchy answer names another room");
                continue;
            };
            let children = answer["children"]
                .as_array()
                .into_iter()
                .flatten()
                .take(MAX_SPACE_CHILDREN)
                .filter_map(SpaceRoom::from_chunk)
                .map(|mut c| {
                    // A child's own children are learnt by asking about it.
                    c.children_state.clear();
                    c
                })
                .collect();
            return Ok(Some(RemoteSpace {
                room: space,
                children,
            }));
        }
        Ok(None)
    }
}

/// The events of one list of a `send_join` answer, each once, after their signatures and
/// hashes are checked. A list longer than [`MAX_JOIN_EVENTS`] is refused before any event of it
/// is looked at: checking a signature costs far more than sending a copy of an event.
async fn checked_events(
    ctx: &Ctx,
    list: &Value,
    rules: &ruma::room_version_rules::RoomVersionRules,
    what: &str,
) -> Result<Vec<CanonicalJsonObject>> {
    let list = list.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.len() > MAX_JOIN_EVENTS {
        return Err(Error::Forbidden(format!(
            "send_join: {} {what} events, more than {MAX_JOIN_EVENTS}",
            list.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for value in list {
        let e = object(value).ok_or_else(|| Error::BadJson(format!("send_join: bad {what}")))?;
        let id = builder::event_id_of(&e, rules)?;
        if !seen.insert(id) {
            continue;
        }
        ctx.keys
            .check_event(&e, rules)
            .await
            .map_err(|e| Error::Forbidden(format!("send_join {what}: {e}")))?;
        out.push(e);
    }
    Ok(out)
}

fn object(value: &Value) -> Option<CanonicalJsonObject> {
    match CanonicalJsonValue::try_from(value.clone()) {
        Ok(CanonicalJsonValue::Object(o)) => Some(o),
        _ => None,
    }
}

fn canonical(value: Value) -> Result<CanonicalJsonValue> {
    CanonicalJsonValue::try_from(value).map_err(|e| Error::BadJson(e.to_string()))
}

impl Remote for RemoteRooms {
    fn join<'a>(
        &'a self,
        user: &'a UserId,
        room: &'a RoomOrAliasId,
        via: &'a [OwnedServerName],
    ) -> BoxFuture<'a, Result<OwnedRoomId>> {
        Box::pin(self.join_room(user, room, via))
    }

    fn invite<'a>(
        &'a self,
        room: &'a RoomId,
        sender: &'a UserId,
        target: &'a UserId,
        reason: Option<&'a str>,
        is_direct: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.invite_user(room, sender, target, reason, is_direct))
    }

    fn leave<'a>(
        &'a self,
        room: &'a RoomId,
        user: &'a UserId,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.refuse(room, user, reason))
    }

    fn profile<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<Option<Profile>>> {
        Box::pin(self.remote_profile(user))
    }

    fn ephemeral(&self, room: &RoomId, edu_type: &str, content: Value) {
        let Ok(ctx) = self.ctx() else {
            return;
        };
        let room = room.to_owned();
        let edu = json!({ "edu_type": edu_type, "content": content });
        tokio::spawn(async move {
            let servers = match ctx.hs.rooms.servers_in_room(&room).await {
                Ok(s) => s,
                Err(e) => {
                    debug!(%room, error = %e, "no servers for an EDU");
                    return;
                }
            };
            for server in servers {
                ctx.sender.queue_edus(&server, vec![edu.clone()]).await;
            }
        });
    }

    fn resolve_alias<'a>(
        &'a self,
        alias: &'a RoomAliasId,
    ) -> BoxFuture<'a, Result<Option<grove_server::federation::RoomAndServers>>> {
        Box::pin(self.alias(alias))
    }

    fn download_media<'a>(
        &'a self,
        origin: &'a ServerName,
        media_id: &'a str,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<grove_server::federation::RemoteMedia>> {
        Box::pin(async move {
            let ctx = self.ctx()?;
            crate::media::fetch(&ctx, origin, media_id, max_bytes).await
        })
    }

    fn public_rooms<'a>(
        &'a self,
        server: &'a ServerName,
        query: &'a PublicRoomsQuery,
    ) -> BoxFuture<'a, Result<PublicRoomsPage>> {
        Box::pin(self.directory(server, query))
    }

    fn hierarchy<'a>(
        &'a self,
        room: &'a RoomId,
        via: &'a [OwnedServerName],
        suggested_only: bool,
    ) -> BoxFuture<'a, Result<Option<RemoteSpace>>> {
        Box::pin(self.space(room, via, suggested_only))
    }

    fn backfill<'a>(&'a self, room: &'a RoomId, limit: usize) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let ctx = self.ctx()?;
            crate::backfill::backfill(&ctx, &self.backfills, room, limit).await
        })
    }
}
