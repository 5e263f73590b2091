//! Membership changes of local users: join, leave, invite, kick, ban, unban and forget.
//! Who may do what is decided by the room's auth rules; the checks here only turn the common
//! mistakes into clear errors before an event is built.

use ruma::{OwnedRoomId, RoomId, UserId, events::TimelineEventType};
use serde_json::{Value, json};

use super::{EventTemplate, Rooms, store};
use crate::{
    Error, Result,
    userdata::{Profile, presence::read_profile},
};

/// A membership change one user makes to another (or to themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    /// Invite the target.
    Invite,
    /// Remove the target (their membership becomes `leave`).
    Kick,
    /// Ban the target.
    Ban,
    /// Lift the target's ban (their membership becomes `leave`).
    Unban,
}

impl Rooms {
    /// Joins `user` to a room known to this node. Joining again while joined changes nothing.
    pub async fn join(
        &self,
        room: &RoomId,
        user: &UserId,
        profile: &Profile,
    ) -> Result<OwnedRoomId> {
        if store::room_head(self.storage.pool(), room).await?.is_none() {
            return Err(Error::NotFound(
                "this node does not know the room (remote joins are not available yet)".into(),
            ));
        }
        if self.is_joined(user, room).await? {
            return Ok(room.to_owned());
        }
        let mut content = json!({ "membership": "join" });
        add_profile(&mut content, profile);
        self.send(
            room,
            user,
            None,
            EventTemplate::state(TimelineEventType::RoomMember, user.as_str(), content),
        )
        .await?;
        Ok(room.to_owned())
    }

    /// `user` leaves the room (or rejects an invite).
    pub async fn leave(&self, room: &RoomId, user: &UserId, reason: Option<&str>) -> Result<()> {
        match self.membership_of(room, user).await?.as_deref() {
            Some("join" | "invite" | "knock") => {}
            _ => return Err(Error::Forbidden("you are not in this room".into())),
        }
        self.send(
            room,
            user,
            None,
            EventTemplate::state(
                TimelineEventType::RoomMember,
                user.as_str(),
                with_reason(json!({ "membership": "leave" }), reason),
            ),
        )
        .await?;
        Ok(())
    }

    /// `sender` changes `target`'s membership.
    pub async fn change_membership(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &UserId,
        change: MembershipChange,
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<()> {
        let current = self.membership_of(room, target).await?;
        let membership = match change {
            MembershipChange::Invite => {
                match current.as_deref() {
                    Some("join") => {
                        return Err(Error::Forbidden(format!("{target} is already in the room")));
                    }
                    Some("ban") => return Err(Error::Forbidden(format!("{target} is banned"))),
                    Some("invite") => return Ok(()),
                    _ => {}
                }
                "invite"
            }
            MembershipChange::Kick => {
                if !matches!(current.as_deref(), Some("join" | "invite" | "knock")) {
                    return Err(Error::Forbidden(format!("{target} is not in the room")));
                }
                "leave"
            }
            MembershipChange::Ban => "ban",
            MembershipChange::Unban => {
                if current.as_deref() != Some("ban") {
                    return Err(Error::Forbidden(format!("{target} is not banned")));
                }
                "leave"
            }
        };
        let mut content = with_reason(json!({ "membership": membership }), reason);
        if is_direct {
            content["is_direct"] = true.into();
        }
        if change == MembershipChange::Invite && target.server_name() == self.config.server_name {
            // Clients name the invitee from the invite until they join (as Synapse does).
            let profile = read_profile(self.storage.pool(), target).await?;
            add_profile(&mut content, &profile);
        }
        self.send(
            room,
            sender,
            None,
            EventTemplate::state(TimelineEventType::RoomMember, target.as_str(), content),
        )
        .await?;
        Ok(())
    }

    /// Forgets a room the user has left, so it no longer appears in their sync.
    pub async fn forget(&self, room: &RoomId, user: &UserId) -> Result<()> {
        match store::membership(self.storage.pool(), room, user).await? {
            Some((m, _)) if m == "join" || m == "invite" => Err(Error::InvalidParam(
                "leave the room before forgetting it".into(),
            )),
            Some(_) => store::forget(self.storage.pool(), room, user).await,
            None => Err(Error::NotFound("you were never in this room".into())),
        }
    }

    /// The user's current membership in a room (`join`, `invite`, `leave`, `ban`, `knock`).
    pub async fn membership_of(&self, room: &RoomId, user: &UserId) -> Result<Option<String>> {
        Ok(store::membership(self.storage.pool(), room, user)
            .await?
            .map(|(m, _)| m))
    }

    /// Whether the user forgot the room.
    pub async fn is_forgotten(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        Ok(store::membership(self.storage.pool(), room, user)
            .await?
            .is_some_and(|(_, f)| f))
    }
}

/// Adds a user's display name and avatar to member event content.
pub(crate) fn add_profile(content: &mut Value, profile: &Profile) {
    if let Some(name) = &profile.displayname {
        content["displayname"] = name.as_str().into();
    }
    if let Some(url) = &profile.avatar_url {
        content["avatar_url"] = url.as_str().into();
    }
}

fn with_reason(mut content: Value, reason: Option<&str>) -> Value {
    if let Some(reason) = reason {
        content["reason"] = reason.into();
    }
    content
}
