//! Per-user data: profiles, account data, room tags, push rules, pushers, filters, presence,
//! read receipts and typing notifications.
//!
//! Every change a client syncs (account data, tags, push rules, receipts, typing, presence)
//! takes a stream position in the same write transaction, so `/sync` sees it in
//! `(since, upto]`. Typing lives in memory; its changes still take positions.

mod account_data;
mod ephemeral;
pub(crate) mod presence;
mod pushers;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{OwnedRoomId, OwnedUserId};

pub use presence::Presence;

use crate::{ServerConfig, Storage, notifier::Notifier};

/// Per-user data of local users.
#[derive(Clone)]
pub struct UserData {
    storage: Storage,
    #[allow(dead_code)] // Kept for components that wait on changes; reads use storage.
    notifier: Notifier,
    #[allow(dead_code)] // Server-wide settings for future limits.
    config: Arc<ServerConfig>,
    typing: ephemeral::Typing,
    /// Users' push rules as last read, which every sync with something unread judges by.
    rules: Arc<account_data::RulesCache>,
    /// Read positions per (user, room), each with the committed position it was read at.
    reads: Arc<Mutex<ReadPositions>>,
}

/// Read positions by (user, room): the committed position each was read at, and the position.
type ReadPositions = HashMap<(OwnedUserId, OwnedRoomId), (i64, Option<i64>)>;

impl UserData {
    /// The user-data component over `storage`.
    pub fn new(storage: Storage, notifier: Notifier, config: Arc<ServerConfig>) -> Self {
        Self {
            storage,
            notifier,
            config,
            typing: ephemeral::Typing::default(),
            rules: Arc::default(),
            reads: Arc::default(),
        }
    }
}

/// A user's display name and avatar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// The display name, if set.
    pub displayname: Option<String>,
    /// The avatar, if set.
    pub avatar_url: Option<ruma::OwnedMxcUri>,
}
