//! Creating a room: the create event, the creator's join, power levels, join rules, history
//! visibility and the rest of the preset, initial state, name, topic and invites, all written
//! in one transaction.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedRoomId, OwnedUserId, UInt, UserId,
    api::client::room::{
        Visibility,
        create_room::v3::{Request as CreateRoomRequest, RoomPreset},
    },
    events::TimelineEventType,
    room_version_rules::RoomIdFormatVersion,
};
use serde_json::{Map, Value, json};

use super::{
    Outgoing, Rooms, StateMap,
    builder::{self, EventTemplate, Placement, Signer},
    dag::RoomGraph,
    state::RoomState,
    store,
};
use crate::{Error, Result, userdata::Profile};

/// The most initial-state events a createRoom request may carry.
const MAX_INITIAL_STATE: usize = 100;
/// The most invites a createRoom request may carry.
const MAX_INVITES: usize = 100;
/// Create events built at most for one room before giving up on a free room ID.
const MAX_CREATE_ATTEMPTS: usize = 16;

impl Rooms {
    /// Creates a room as `creator` (whose profile goes into the join event) and returns its ID.
    pub async fn create_room(
        &self,
        creator: &UserId,
        request: &CreateRoomRequest,
        profile: &Profile,
    ) -> Result<OwnedRoomId> {
        let version = request
            .room_version
            .clone()
            .unwrap_or_else(|| self.config.default_room_version.clone());
        let rules = builder::rules_for(&version)?;
        if request.initial_state.len() > MAX_INITIAL_STATE || request.invite.len() > MAX_INVITES {
            return Err(Error::LimitExceeded("too many initial events".into()));
        }
        let alias = match &request.room_alias_name {
            Some(name) => {
                let alias =
                    ruma::RoomAliasId::parse(format!("#{name}:{}", self.config.server_name))
                        .map_err(|e| Error::InvalidParam(format!("room alias: {e}")))?;
                if self.resolve_alias(&alias).await?.is_some() {
                    return Err(Error::RoomInUse("room alias already taken".into()));
                }
                Some(alias)
            }
            None => None,
        };
        let preset = request.preset.clone().unwrap_or(match request.visibility {
            Visibility::Public => RoomPreset::PublicChat,
            _ => RoomPreset::PrivateChat,
        });
        if !matches!(
            preset,
            RoomPreset::PublicChat | RoomPreset::PrivateChat | RoomPreset::TrustedPrivateChat
        ) {
            return Err(Error::BadJson(format!(
                "unknown preset {:?}",
                preset.as_str()
            )));
        }
        let trusted = preset == RoomPreset::TrustedPrivateChat;
        let v12 = rules.authorization.explicitly_privilege_room_creators;

        // The create event.
        let mut create: Map<String, Value> = match &request.creation_content {
            Some(raw) => serde_json::from_str(raw.json().get())
                .map_err(|e| Error::BadJson(format!("creation_content: {e}")))?,
            None => Map::new(),
        };
        create.insert("room_version".into(), version.as_str().into());
        if rules.authorization.use_room_create_sender {
            create.remove("creator");
        } else {
            create.insert("creator".into(), creator.as_str().into());
        }
        if v12 && trusted && !request.invite.is_empty() {
            let others: Vec<&OwnedUserId> =
                request.invite.iter().filter(|u| *u != creator).collect();
            create.insert("additional_creators".into(), json!(others));
        }
        let create_template =
            EventTemplate::state(TimelineEventType::RoomCreate, "", Value::Object(create));

        // Everything after the create event.
        let mut templates = Vec::new();
        let mut member = json!({ "membership": "join" });
        if let Some(name) = &profile.displayname {
            member["displayname"] = name.as_str().into();
        }
        if let Some(url) = &profile.avatar_url {
            member["avatar_url"] = url.as_str().into();
        }
        templates.push(EventTemplate::state(
            TimelineEventType::RoomMember,
            creator.as_str(),
            member,
        ));
        let mut users = Map::new();
        if !v12 {
            users.insert(creator.to_string(), 100.into());
            if trusted {
                for invitee in &request.invite {
                    users.insert(invitee.to_string(), 100.into());
                }
            }
        }
        let mut power = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": 100,
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": if preset == RoomPreset::PublicChat { 50 } else { 0 },
            "notifications": { "room": 50 },
        });
        if let Some(raw) = &request.power_level_content_override {
            let overrides: Map<String, Value> = serde_json::from_str(raw.json().get())
                .map_err(|e| Error::BadJson(format!("power_level_content_override: {e}")))?;
            if let Some(map) = power.as_object_mut() {
                map.extend(overrides);
            }
        }
        templates.push(EventTemplate::state(
            TimelineEventType::RoomPowerLevels,
            "",
            power,
        ));
        if let Some(alias) = &alias {
            templates.push(EventTemplate::state(
                TimelineEventType::RoomCanonicalAlias,
                "",
                json!({ "alias": alias.as_str() }),
            ));
        }
        let join_rule = if preset == RoomPreset::PublicChat {
            "public"
        } else {
            "invite"
        };
        templates.push(EventTemplate::state(
            TimelineEventType::RoomJoinRules,
            "",
            json!({ "join_rule": join_rule }),
        ));
        templates.push(EventTemplate::state(
            TimelineEventType::RoomHistoryVisibility,
            "",
            json!({ "history_visibility": "shared" }),
        ));
        if preset != RoomPreset::PublicChat {
            templates.push(EventTemplate::state(
                TimelineEventType::RoomGuestAccess,
                "",
                json!({ "guest_access": "can_join" }),
            ));
        }
        for raw in &request.initial_state {
            templates.push(initial_state_template(raw.json().get())?);
        }
        if let Some(name) = &request.name {
            templates.push(EventTemplate::state(
                TimelineEventType::RoomName,
                "",
                json!({ "name": name }),
            ));
        }
        if let Some(topic) = &request.topic {
            templates.push(EventTemplate::state(
                TimelineEventType::RoomTopic,
                "",
                json!({ "topic": topic }),
            ));
        }
        // Users of other servers are invited once the room exists, through their server
        // (the client API does it), so that their server learns of the invite.
        for invitee in request
            .invite
            .iter()
            .filter(|u| u.server_name() == self.config.server_name)
        {
            let mut content = json!({ "membership": "invite" });
            if request.is_direct {
                content["is_direct"] = true.into();
            }
            let profile =
                crate::userdata::presence::read_profile(self.storage.pool(), invitee).await?;
            super::membership::add_profile(&mut content, &profile);
            templates.push(EventTemplate::state(
                TimelineEventType::RoomMember,
                invitee.as_str(),
                content,
            ));
        }

        // The create event last: a v12 room's ID is its hash, so an ID already taken (by a
        // room made alike in the same millisecond, say) is made anew with a later timestamp.
        let derived = rules.room_id_format == RoomIdFormatVersion::V2;
        let signer = Signer {
            server_name: &self.config.server_name,
            key_pair: self.key.key_pair(),
        };
        let mut attempts = 0;
        let (create_pdu, room_id, mut guard) = loop {
            let provisional: OwnedRoomId =
                builder::room_id_for(&rules, None, &self.config.server_name).or_else(|_| {
                    // A provisional ID only; the real one comes from the create event below.
                    ruma::RoomId::parse(format!("!provisional:{}", self.config.server_name))
                        .map_err(|e| Error::Internal(e.to_string()))
                })?;
            let create_pdu = builder::build_event(
                &rules,
                &signer,
                creator,
                &create_template,
                &Placement {
                    room: (!derived).then_some(&*provisional),
                    prev_events: &[],
                    auth_events: &[],
                    depth: 1,
                },
                self.next_create_ts(),
            )?;
            let room_id = create_pdu.room.clone();
            let handle = self.handle(&room_id);
            let guard = handle.lock_owned().await;
            if guard.state.is_none()
                && store::room_head(self.storage.pool(), &room_id)
                    .await?
                    .is_none()
            {
                break (create_pdu, room_id, guard);
            }
            drop(guard);
            attempts += 1;
            if attempts >= MAX_CREATE_ATTEMPTS {
                return Err(Error::RoomInUse("room already exists".into()));
            }
        };
        guard.state = Some(RoomState {
            room_id: room_id.clone(),
            version: version.clone(),
            rules,
            group: 0,
            chain_len: 0,
            state: Arc::new(StateMap::default()),
            state_events: HashMap::new(),
            extremities: Vec::new(),
            depth: 0,
            graph: RoomGraph::new(),
            published: false,
        });
        let mut items = vec![Outgoing {
            sender: creator.to_owned(),
            template: create_template,
            txn: None,
            prebuilt: Some(create_pdu),
        }];
        items.extend(templates.into_iter().map(|template| Outgoing {
            sender: creator.to_owned(),
            template,
            txn: None,
            prebuilt: None,
        }));
        if let Err(e) = self.append(&mut guard, items).await {
            drop(guard);
            self.forget_handle(&room_id);
            return Err(e);
        }
        drop(guard);
        if let Some(alias) = &alias {
            self.set_alias(alias, &room_id, creator).await?;
        }
        if request.visibility == Visibility::Public {
            self.set_published(&room_id, true).await?;
        }
        Ok(room_id)
    }
}

impl Rooms {
    /// The `origin_server_ts` of a new create event: now, or just after the last one built
    /// here, whichever is later.
    fn next_create_ts(&self) -> MilliSecondsSinceUnixEpoch {
        let now = u64::from(MilliSecondsSinceUnixEpoch::now().get());
        let previous = self
            .inner
            .last_create_ts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            .unwrap_or_else(|last| last);
        MilliSecondsSinceUnixEpoch(UInt::new_saturating(now.max(previous.saturating_add(1))))
    }
}

/// An `initial_state` entry as a template (`state_key` defaults to the empty string).
fn initial_state_template(json: &str) -> Result<EventTemplate> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| Error::BadJson(format!("initial_state: {e}")))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadJson("initial_state event without type".into()))?;
    let key = value.get("state_key").and_then(Value::as_str).unwrap_or("");
    let content = value.get("content").cloned().unwrap_or_else(|| json!({}));
    if matches!(
        kind,
        "m.room.create" | "m.room.member" | "m.room.power_levels"
    ) {
        return Err(Error::InvalidParam(format!(
            "{kind} cannot be set through initial_state"
        )));
    }
    Ok(EventTemplate::state(kind, key, content))
}
