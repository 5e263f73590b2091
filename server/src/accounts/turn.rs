//! TURN credentials in the time-limited "REST API" scheme that coturn's `use-auth-secret`
//! understands: the username is `<expiry>:<user>`, the password the base64 HMAC-SHA1 of the
//! username under the shared secret.

use base64::Engine;
use hmac::{Hmac, Mac};
use ruma::UserId;
use sha1::Sha1;

use super::{Accounts, ids};
use crate::{Error, Result};

/// Credentials handed to a client for the configured TURN servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// The username (with its expiry when a shared secret is configured).
    pub username: String,
    /// The password.
    pub password: String,
    /// The TURN URIs.
    pub uris: Vec<String>,
    /// How long the credentials stay valid, in seconds.
    pub ttl_secs: u64,
}

impl Accounts {
    /// TURN credentials for `user`, or `None` when no TURN server is configured.
    pub fn turn_credentials(&self, user: &UserId) -> Result<Option<TurnCredentials>> {
        if self.config.turn_uris.is_empty() {
            return Ok(None);
        }
        let ttl_secs = self.config.turn_ttl_secs;
        let Some(secret) = &self.config.turn_shared_secret else {
            // Without a secret the TURN servers must be open; clients still need the URIs.
            return Ok(Some(TurnCredentials {
                username: String::new(),
                password: String::new(),
                uris: self.config.turn_uris.clone(),
                ttl_secs,
            }));
        };
        let expiry = ids::now_ms() / 1000 + i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2);
        let username = format!("{expiry}:{user}");
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())
            .map_err(|e| Error::Internal(format!("turn hmac: {e}")))?;
        mac.update(username.as_bytes());
        let password =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        Ok(Some(TurnCredentials {
            username,
            password,
            uris: self.config.turn_uris.clone(),
            ttl_secs,
        }))
    }
}
