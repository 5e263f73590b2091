//! Unread notification counts from the user's push rules: each unread event by someone else is
//! run through the rules ([`Ruleset::get_actions`]) in the room as it was at that event (member
//! count, the user's display name, power levels); a `notify` action counts it in
//! `notification_count`, a `highlight` tweak in `highlight_count`.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    OwnedUserId, RoomId, UInt, UserId,
    events::{
        AnySyncTimelineEvent, StateEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    },
    push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    room_version_rules::RoomVersionRules,
    serde::Raw,
};
use serde_json::Value;

use crate::{
    Homeserver, Result,
    rooms::{
        StateMap,
        builder::rules_for,
        pdu::Pdu,
        streams::{JudgeNotify, Notify, StoredEvent},
    },
};

/// Evaluates one user's push rules over the events of one room.
pub(crate) struct PushJudge<'a> {
    hs: &'a Homeserver,
    room: &'a RoomId,
    user: &'a UserId,
    /// The user's push rules and the room's version rules, loaded on the first event judged
    /// (a sync whose counts are all cached judges none).
    loaded: Option<(Ruleset, RoomVersionRules)>,
    /// The push condition context per state group: events sharing a state share a context.
    contexts: HashMap<i64, Arc<PushConditionRoomCtx>>,
}

impl<'a> PushJudge<'a> {
    /// The judge of `user`'s push rules in `room`.
    pub(crate) fn new(hs: &'a Homeserver, room: &'a RoomId, user: &'a UserId) -> Self {
        Self {
            hs,
            room,
            user,
            loaded: None,
            contexts: HashMap::new(),
        }
    }

    /// What the rules make of an event stored with state group `group`.
    async fn judge_event(&mut self, pdu: &Pdu, group: Option<i64>) -> Result<Notify> {
        let Some(group) = group else {
            return Ok(Notify::default());
        };
        if self.loaded.is_none() {
            let rules = self.hs.userdata.push_rules(self.user).await?;
            let version = rules_for(&self.hs.rooms.room_version(self.room).await?)?;
            self.loaded = Some((rules, version));
        }
        let Some((rules, version)) = &self.loaded else {
            return Ok(Notify::default());
        };
        let context = match self.contexts.get(&group) {
            Some(context) => context.clone(),
            None => {
                let state = self.hs.rooms.state_at_group(group).await?;
                let context = Arc::new(self.context(&state, version).await?);
                self.contexts.insert(group, context.clone());
                context
            }
        };
        let event: Raw<AnySyncTimelineEvent> = pdu.to_client_raw(true, None);
        let actions = rules.get_actions(&event, &context).await;
        Ok(Notify {
            notify: actions.iter().any(|a| a.should_notify()),
            highlight: actions.iter().any(|a| a.is_highlight()),
        })
    }

    /// The push condition context of the room in `state`.
    async fn context(
        &self,
        state: &StateMap,
        version: &RoomVersionRules,
    ) -> Result<PushConditionRoomCtx> {
        let wanted: Vec<_> = state
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
        let events = self.hs.rooms.load_pdus(&wanted).await?;
        let content = |kind: StateEventType, key: &str| -> Option<Value> {
            let id = state.get(&(kind, key.to_owned()))?;
            Some(events.get(id)?.content_value())
        };
        let members = state
            .iter()
            .filter(|((kind, _), _)| *kind == StateEventType::RoomMember)
            .filter_map(|(_, id)| events.get(id))
            .filter(|e| e.content_str("membership").as_deref() == Some("join"))
            .count();
        let display_name = content(StateEventType::RoomMember, self.user.as_str())
            .and_then(|c| c.get("displayname")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| self.user.localpart().to_owned());
        let context = PushConditionRoomCtx::new(
            self.room.to_owned(),
            UInt::try_from(members).unwrap_or(UInt::MAX),
            self.user.to_owned(),
            display_name,
        );
        let source = content(StateEventType::RoomPowerLevels, "")
            .and_then(|c| serde_json::from_value::<RoomPowerLevelsEventContent>(c).ok())
            .map_or(RoomPowerLevelsSource::None, RoomPowerLevelsSource::Original);
        let creators = creators(state, &events, version);
        let levels = RoomPowerLevels::new(source, &version.authorization, creators);
        Ok(context.with_power_levels(PushConditionPowerLevelsCtx::from(levels)))
    }
}

/// The room's creators: the create event's sender and, where the version has them, its
/// additional creators.
fn creators(
    state: &StateMap,
    events: &HashMap<ruma::OwnedEventId, Arc<Pdu>>,
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

impl JudgeNotify for PushJudge<'_> {
    async fn judge(&mut self, stored: &StoredEvent) -> Result<Notify> {
        self.judge_event(&stored.pdu, stored.state_group).await
    }
}
