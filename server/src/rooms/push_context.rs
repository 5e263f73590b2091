//! The room's part of the push-rule conditions at one state group: the joined member count,
//! the power levels and the members' display names. It is built once per group and shared:
//! one message in a room of N members is judged N times (once per member's unread count),
//! and building it means reading every member event of the room, so building it per judge
//! made a message cost N² event reads.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    OwnedEventId, OwnedUserId, RoomId, UInt, UserId,
    events::{
        StateEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    },
    push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    room_version_rules::RoomVersionRules,
};
use serde_json::Value;

use super::{Rooms, StateMap, pdu::Pdu};
use crate::Result;

/// Display names held by the cache, over all its groups, at most; past that it starts again.
const MAX_CACHED_NAMES: usize = 20_000;

/// What the push conditions of every member of a room share at one state group.
pub(crate) struct RoomPushBase {
    /// Joined members.
    members: UInt,
    /// The power levels, with the room's creators.
    power_levels: PushConditionPowerLevelsCtx,
    /// Display names from the member events that carry one, by user ID.
    display_names: HashMap<String, String>,
}

impl RoomPushBase {
    /// The condition context of `user` in `room`: a user without a display name is named by
    /// their localpart.
    pub(crate) fn context_for(&self, room: &RoomId, user: &UserId) -> PushConditionRoomCtx {
        let display_name = self
            .display_names
            .get(user.as_str())
            .cloned()
            .unwrap_or_else(|| user.localpart().to_owned());
        PushConditionRoomCtx::new(room.to_owned(), self.members, user.to_owned(), display_name)
            .with_power_levels(self.power_levels.clone())
    }
}

/// Built bases by state group, with the display names they hold in all.
#[derive(Default)]
pub(crate) struct PushBaseCache {
    bases: Mutex<(HashMap<i64, Arc<RoomPushBase>>, usize)>,
}

impl Rooms {
    /// The shared push conditions of the room whose state group `group` is, in a room of
    /// version `version`.
    pub(crate) async fn push_base(
        &self,
        group: i64,
        version: &RoomVersionRules,
    ) -> Result<Arc<RoomPushBase>> {
        if let Some(base) = self
            .inner
            .push_bases
            .bases
            .lock()
            .ok()
            .and_then(|b| b.0.get(&group).cloned())
        {
            return Ok(base);
        }
        let state = self.state_at_group(group).await?;
        let base = Arc::new(self.build_push_base(&state, version).await?);
        if let Ok(mut cache) = self.inner.push_bases.bases.lock() {
            let (bases, names) = &mut *cache;
            if *names + base.display_names.len() > MAX_CACHED_NAMES {
                bases.clear();
                *names = 0;
            }
            *names += base.display_names.len();
            bases.insert(group, base.clone());
        }
        Ok(base)
    }

    async fn build_push_base(
        &self,
        state: &StateMap,
        version: &RoomVersionRules,
    ) -> Result<RoomPushBase> {
        let wanted: Vec<OwnedEventId> = state
            .iter()
            .filter(|((kind, _), _)| {
                matches!(
                    kind,
                    StateEventType::RoomMember
                        | StateEventType::RoomPowerLevels
                        | StateEventType::RoomCreate
                )
            })
            .map(|(_, id)| id.clone())
            .collect();
        let events = self.pdus(&wanted).await?;
        let mut members = 0usize;
        let mut display_names = HashMap::new();
        for ((kind, key), id) in state {
            if *kind != StateEventType::RoomMember {
                continue;
            }
            let Some(event) = events.get(id) else {
                continue;
            };
            let content = event.content_value();
            if content.get("membership").and_then(Value::as_str) == Some("join") {
                members += 1;
            }
            if let Some(name) = content.get("displayname").and_then(Value::as_str) {
                display_names.insert(key.clone(), name.to_owned());
            }
        }
        let source = state
            .get(&(StateEventType::RoomPowerLevels, String::new()))
            .and_then(|id| events.get(id))
            .and_then(|e| {
                serde_json::from_value::<RoomPowerLevelsEventContent>(e.content_value()).ok()
            })
            .map_or(RoomPowerLevelsSource::None, RoomPowerLevelsSource::Original);
        let creators = creators(state, &events, version);
        let levels = RoomPowerLevels::new(source, &version.authorization, creators);
        Ok(RoomPushBase {
            members: UInt::try_from(members).unwrap_or(UInt::MAX),
            power_levels: PushConditionPowerLevelsCtx::from(levels),
            display_names,
        })
    }
}

/// The room's creators: the create event's sender and, where the version has them, its
/// additional creators.
fn creators(
    state: &StateMap,
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
    version: &RoomVersionRules,
) -> Vec<OwnedUserId> {
    let Some(create) = state
        .get(&(StateEventType::RoomCreate, String::new()))
        .and_then(|id| events.get(id))
    else {
        return Vec::new();
    };
    let mut creators = vec![create.sender.clone()];
    if version.authorization.additional_room_creators {
        let content = create.content_value();
        creators.extend(
            content
                .get("additional_creators")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|u| UserId::parse(u.as_str()?).ok()),
        );
    }
    creators
}
