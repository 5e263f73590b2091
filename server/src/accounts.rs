//! Users, devices, access tokens, registration and user-interactive auth.

use std::sync::Arc;

use crate::{ServerConfig, Storage, notifier::Notifier};

/// Accounts of local users.
#[derive(Clone)]
pub struct Accounts {
    storage: Storage,
    notifier: Notifier,
    config: Arc<ServerConfig>,
}

impl Accounts {
    /// The accounts component over `storage`.
    pub fn new(storage: Storage, notifier: Notifier, config: Arc<ServerConfig>) -> Self {
        Self {
            storage,
            notifier,
            config,
        }
    }
}

/// The user and device an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The authenticated user.
    pub user_id: ruma::OwnedUserId,
    /// The device the token was issued to.
    pub device_id: ruma::OwnedDeviceId,
}

impl Accounts {
    /// Looks up the session of an access token.
    pub async fn authenticate(&self, token: &str) -> crate::Result<Session> {
        let _ = (token, &self.storage, &self.notifier, &self.config);
        Err(crate::Error::UnknownToken)
    }
}
