//! Unread notification counts from the user's push rules: each unread event by someone else is
//! run through the rules ([`Ruleset::get_actions`]) in the room as it was at that event (member
//! count, the user's display name, power levels); a `notify` action counts it in
//! `notification_count`, a `highlight` tweak in `highlight_count`.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    RoomId, UserId,
    events::AnySyncTimelineEvent,
    push::{PushConditionRoomCtx, Ruleset},
    room_version_rules::RoomVersionRules,
    serde::Raw,
};

use crate::{
    Homeserver, Result,
    rooms::{
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
                let base = self.hs.rooms.push_base(group, version).await?;
                let context = Arc::new(base.context_for(self.room, self.user));
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
}

impl JudgeNotify for PushJudge<'_> {
    async fn judge(&mut self, stored: &StoredEvent) -> Result<Notify> {
        self.judge_event(&stored.pdu, stored.state_group).await
    }
}
