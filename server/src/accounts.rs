//! Users, devices, access tokens, registration, user-interactive auth and the limits on login
//! and registration attempts.
//!
//! Calling sequence for a client: [`Accounts::register`] (or [`Accounts::login_password`])
//! yields an access token; every later request resolves it with [`Accounts::authenticate`].
//! Creating or deleting a device records a device-list change at a fresh stream position, so
//! the users who share rooms with its owner see it in `/sync`.

pub(crate) mod ids;
mod password;
mod ratelimit;
mod token_cache;
mod turn;
mod uia;

use std::{sync::Arc, time::Instant};

use ruma::{
    DeviceId, OwnedDeviceId, OwnedUserId, UserId,
    api::client::uiaa::{AuthData, AuthType},
};
use sqlx::AnyConnection;
use tracing::info;

#[allow(unused_imports)] // Used by the key and user-data stores as they land.
pub(crate) use ids::{now_ms, random_string};
pub use ratelimit::RateLimited;
use ratelimit::RateLimiter;
use token_cache::TokenCache;
pub use turn::TurnCredentials;
pub use uia::UiaFlows;

use crate::{Error, Result, ServerConfig, Storage, config::Registration, notifier::Notifier};

/// The longest localpart accepted, so that the whole user ID stays within 255 bytes.
const MAX_USER_ID_LEN: usize = 255;

/// A `devices` row: ID, display name, last seen time and address.
type DeviceRow = (String, Option<String>, Option<i64>, Option<String>);

/// What a rate limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A login attempt.
    Login,
    /// A registration request (or a registration-token validity check).
    Register,
}

/// Accounts of local users.
#[derive(Clone)]
pub struct Accounts {
    storage: Storage,
    notifier: Notifier,
    config: Arc<ServerConfig>,
    login_limiter: RateLimiter,
    register_limiter: RateLimiter,
    tokens: Arc<TokenCache>,
    hasher: password::Hasher,
}

impl Accounts {
    /// The accounts component over `storage`.
    pub fn new(storage: Storage, notifier: Notifier, config: Arc<ServerConfig>) -> Self {
        Self {
            storage,
            notifier,
            login_limiter: RateLimiter::new(
                config.rate_limits.login_burst,
                config.rate_limits.login_per_second,
            ),
            register_limiter: RateLimiter::new(
                config.rate_limits.register_burst,
                config.rate_limits.register_per_second,
            ),
            tokens: Arc::new(TokenCache::default()),
            hasher: password::Hasher::default(),
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

/// A device as listed to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device ID.
    pub device_id: OwnedDeviceId,
    /// The name the user gave it.
    pub display_name: Option<String>,
    /// When it last logged in or was used, in ms since the epoch.
    pub last_seen_ts: Option<i64>,
    /// The address it was last seen from.
    pub last_seen_ip: Option<String>,
}

/// The device a login or registration creates (or takes over).
#[derive(Debug, Clone, Default)]
pub struct NewDevice {
    /// The device ID the client asked for; a fresh one when absent.
    pub device_id: Option<OwnedDeviceId>,
    /// The name shown in device lists.
    pub display_name: Option<String>,
    /// The client's address, recorded as last seen.
    pub ip: Option<String>,
}

/// A logged-in device.
#[derive(Debug, Clone)]
pub struct Login {
    /// The user.
    pub user_id: OwnedUserId,
    /// The device.
    pub device_id: OwnedDeviceId,
    /// The new access token.
    pub access_token: String,
}

/// A registration request, after parsing.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    /// The wanted localpart; a random one when absent.
    pub username: Option<String>,
    /// The password; an account without one cannot log in with a password.
    pub password: Option<String>,
    /// The device to log in, unless `inhibit_login`.
    pub device: NewDevice,
    /// Register without logging in.
    pub inhibit_login: bool,
}

/// A finished registration.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The new user.
    pub user_id: OwnedUserId,
    /// The login, unless login was inhibited.
    pub login: Option<Login>,
}

impl Accounts {
    /// Looks up the session of an access token ([`Error::UnknownToken`] when unknown).
    pub async fn authenticate(&self, token: &str) -> Result<Session> {
        let hash = ids::token_hash(token);
        if let Some(session) = self.tokens.get(&hash) {
            return Ok(session);
        }
        let generation = self.tokens.generation();
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT user_id, device_id FROM access_tokens WHERE token_hash = $1")
                .bind(&hash)
                .fetch_optional(self.storage.pool())
                .await?;
        let Some((user, device)) = row else {
            return Err(Error::UnknownToken);
        };
        let session = Session {
            user_id: UserId::parse(user).map_err(|e| Error::Corrupt(format!("user id: {e}")))?,
            device_id: device.into(),
        };
        self.tokens.insert(generation, hash, session.clone());
        Ok(session)
    }

    /// Takes one attempt of `kind` for `key` (a client address or a user ID).
    pub fn rate_limit(&self, kind: Attempt, key: &str) -> std::result::Result<(), RateLimited> {
        let limiter = match kind {
            Attempt::Login => &self.login_limiter,
            Attempt::Register => &self.register_limiter,
        };
        limiter.check(key, Instant::now())
    }

    /// Whether a login may be tried for every one of `keys` (the account, and the client's
    /// address where it tells clients apart), or how long to wait. Only failed logins count
    /// ([`Accounts::login_failed`]).
    pub fn login_allowed(&self, keys: &[&str]) -> std::result::Result<(), RateLimited> {
        let now = Instant::now();
        keys.iter()
            .try_for_each(|key| self.login_limiter.peek(key, now))
    }

    /// Counts a failed login against every one of `keys`.
    pub fn login_failed(&self, keys: &[&str]) {
        let now = Instant::now();
        for key in keys {
            // A bucket already empty stays empty; the refusal is what `login_allowed` reports.
            let _ = self.login_limiter.check(key, now);
        }
    }

    /// The full user ID for a localpart or a user ID of this server.
    pub fn resolve_user(&self, user: &str) -> Result<OwnedUserId> {
        if user.starts_with('@') {
            let id = UserId::parse(user).map_err(|e| Error::InvalidUsername(e.to_string()))?;
            if id.server_name() != self.config.server_name {
                return Err(Error::InvalidUsername("not a user of this server".into()));
            }
            Ok(id)
        } else {
            UserId::parse(format!(
                "@{}:{}",
                user.to_lowercase(),
                self.config.server_name
            ))
            .map_err(|e| Error::InvalidUsername(e.to_string()))
        }
    }

    /// The user ID a new account with `localpart` would get, if the localpart is valid.
    pub fn user_id_for(&self, localpart: &str) -> Result<OwnedUserId> {
        let valid = !localpart.is_empty()
            && localpart.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'_' | b'=' | b'-' | b'/' | b'+')
            });
        if !valid {
            return Err(Error::InvalidUsername(
                "User ID may only contain a-z, 0-9, and . _ = - / +".into(),
            ));
        }
        let id = format!("@{localpart}:{}", self.config.server_name);
        if id.len() > MAX_USER_ID_LEN {
            return Err(Error::InvalidUsername("User ID is too long".into()));
        }
        UserId::parse(id).map_err(|e| Error::InvalidUsername(e.to_string()))
    }

    /// Whether a local user exists (deactivated users still hold their ID).
    pub async fn exists(&self, user: &UserId) -> Result<bool> {
        let row: Option<(String,)> = sqlx::query_as("SELECT user_id FROM users WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(self.storage.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Whether `user` exists and was deactivated.
    pub async fn is_deactivated(&self, user: &UserId) -> Result<bool> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT deactivated FROM users WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_optional(self.storage.pool())
                .await?;
        Ok(matches!(row, Some((1,))))
    }

    /// Checks that `localpart` is valid and free ([`Error::UserInUse`] or
    /// [`Error::InvalidUsername`] otherwise).
    pub async fn username_available(&self, localpart: &str) -> Result<OwnedUserId> {
        let user = self.user_id_for(localpart)?;
        if self.exists(&user).await? {
            return Err(Error::UserInUse);
        }
        Ok(user)
    }

    /// Whether `token` is one of the configured registration tokens, in token mode.
    pub fn registration_token_valid(&self, token: &str) -> bool {
        self.config.registration == Registration::Token
            && self.config.registration_tokens.iter().any(|t| t == token)
    }

    /// The user-interactive auth flows registration needs ([`Error::Forbidden`] when closed).
    pub fn registration_flows(&self) -> Result<UiaFlows> {
        match self.config.registration {
            Registration::Closed => Err(Error::Forbidden("Registration is disabled".into())),
            Registration::Open => Ok(UiaFlows::single(AuthType::Dummy)),
            Registration::Token => Ok(UiaFlows::single(AuthType::RegistrationToken)),
        }
    }

    /// Registers an account: checks the username, runs user-interactive auth with `auth`,
    /// then creates the user (and logs in a device unless asked not to).
    pub async fn register(
        &self,
        account: NewAccount,
        auth: Option<&AuthData>,
    ) -> Result<Registered> {
        let flows = self.registration_flows()?;
        let user_id = match &account.username {
            Some(name) => self.username_available(name).await?,
            None => self.fresh_user_id().await?,
        };
        self.check_uia(None, &flows, auth).await?;
        let hash = match account.password {
            Some(p) => Some(self.hasher.hash(p).await?),
            None => None,
        };
        let now = ids::now_ms();
        let mut txn = self.storage.write().await?;
        let taken: Option<(String,)> =
            sqlx::query_as("SELECT user_id FROM users WHERE user_id = $1")
                .bind(user_id.as_str())
                .fetch_optional(txn.conn())
                .await?;
        if taken.is_some() {
            return Err(Error::UserInUse);
        }
        sqlx::query("INSERT INTO users (user_id, password_hash, created_ts, deactivated) VALUES ($1, $2, $3, 0)")
            .bind(user_id.as_str())
            .bind(hash)
            .bind(now)
            .execute(txn.conn())
            .await?;
        // A new user is shown by their localpart until they choose a name.
        sqlx::query(
            "INSERT INTO profiles (user_id, displayname, avatar_url) VALUES ($1, $2, NULL)",
        )
        .bind(user_id.as_str())
        .bind(user_id.localpart())
        .execute(txn.conn())
        .await?;
        let login = if account.inhibit_login {
            None
        } else {
            let position = txn.next_position().0;
            Some(create_login(txn.conn(), &user_id, account.device, now, position).await?)
        };
        txn.commit().await?;
        info!(user = %user_id, "registered");
        Ok(Registered { user_id, login })
    }

    async fn fresh_user_id(&self) -> Result<OwnedUserId> {
        for _ in 0..8 {
            let localpart = ids::random_string(12).to_lowercase();
            let user = self.user_id_for(&localpart)?;
            if !self.exists(&user).await? {
                return Ok(user);
            }
        }
        Err(Error::Internal("no free random user id".into()))
    }

    /// Whether `password` is the current password of an active `user`.
    pub async fn check_password(&self, user: &UserId, password: &str) -> Result<bool> {
        let row: Option<(Option<String>, i64)> =
            sqlx::query_as("SELECT password_hash, deactivated FROM users WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_optional(self.storage.pool())
                .await?;
        match row {
            Some((Some(hash), 0)) => self.hasher.verify(password.to_owned(), hash).await,
            _ => Ok(false),
        }
    }

    /// Logs in with a password (`user` is a localpart or a user ID), creating or taking over
    /// the device ([`Error::InvalidCredentials`] for a wrong user or password).
    pub async fn login_password(
        &self,
        user: &str,
        password: &str,
        device: NewDevice,
    ) -> Result<Login> {
        let user = self
            .resolve_user(user)
            .map_err(|_| Error::InvalidCredentials)?;
        if !self.check_password(&user, password).await? {
            return Err(Error::InvalidCredentials);
        }
        let mut txn = self.storage.write().await?;
        let position = txn.next_position().0;
        let login = create_login(txn.conn(), &user, device, ids::now_ms(), position).await?;
        txn.commit().await?;
        // Logging in as an existing device replaced its old token.
        self.tokens.forget_all();
        Ok(login)
    }

    /// Logs out the session's device: its token, the device and its keys go.
    pub async fn logout(&self, session: &Session) -> Result<()> {
        self.delete_devices(&session.user_id, std::slice::from_ref(&session.device_id))
            .await
    }

    /// Logs out every device of `user`.
    pub async fn logout_all(&self, user: &UserId) -> Result<()> {
        let devices: Vec<OwnedDeviceId> = self
            .devices(user)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        self.delete_devices(user, &devices).await
    }

    /// The devices of `user`.
    pub async fn devices(&self, user: &UserId) -> Result<Vec<Device>> {
        let rows: Vec<DeviceRow> = sqlx::query_as(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices \
             WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user.as_str())
        .fetch_all(self.storage.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, ts, ip)| Device {
                device_id: id.into(),
                display_name: name,
                last_seen_ts: ts,
                last_seen_ip: ip,
            })
            .collect())
    }

    /// One device of `user` ([`Error::NotFound`] when it has no such device).
    pub async fn device(&self, user: &UserId, device: &DeviceId) -> Result<Device> {
        let row: Option<(Option<String>, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT display_name, last_seen_ts, last_seen_ip FROM devices \
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user.as_str())
        .bind(device.as_str())
        .fetch_optional(self.storage.pool())
        .await?;
        let (name, ts, ip) = row.ok_or_else(|| Error::NotFound("Unknown device".into()))?;
        Ok(Device {
            device_id: device.to_owned(),
            display_name: name,
            last_seen_ts: ts,
            last_seen_ip: ip,
        })
    }

    /// Renames a device; the change is a device-list change (others see device names).
    pub async fn set_device_display_name(
        &self,
        user: &UserId,
        device: &DeviceId,
        name: Option<&str>,
    ) -> Result<()> {
        let mut txn = self.storage.write().await?;
        let done = sqlx::query(
            "UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3",
        )
        .bind(name.map(str::to_owned))
        .bind(user.as_str())
        .bind(device.as_str())
        .execute(txn.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound("Unknown device".into()));
        }
        let position = txn.next_position().0;
        record_device_change(txn.conn(), user, position).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Deletes devices of `user` with their tokens, keys and inboxes; unknown IDs are skipped.
    pub async fn delete_devices(&self, user: &UserId, devices: &[OwnedDeviceId]) -> Result<()> {
        if devices.is_empty() {
            return Ok(());
        }
        let mut txn = self.storage.write().await?;
        for device in devices {
            delete_device(txn.conn(), user, device).await?;
        }
        let position = txn.next_position().0;
        record_device_change(txn.conn(), user, position).await?;
        txn.commit().await?;
        self.tokens.forget_all();
        Ok(())
    }

    /// Sets a new password; with `logout_others`, every device but `keep` is logged out.
    pub async fn change_password(
        &self,
        user: &UserId,
        new_password: &str,
        logout_others: bool,
        keep: Option<&DeviceId>,
    ) -> Result<()> {
        let hash = self.hasher.hash(new_password.to_owned()).await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
            .bind(hash)
            .bind(user.as_str())
            .execute(self.storage.pool())
            .await?;
        if logout_others {
            let others: Vec<OwnedDeviceId> = self
                .devices(user)
                .await?
                .into_iter()
                .map(|d| d.device_id)
                .filter(|d| Some(d.as_ref()) != keep)
                .collect();
            self.delete_devices(user, &others).await?;
        }
        Ok(())
    }

    /// Deactivates `user`'s credentials and keys: no password, no devices, no cross-signing
    /// keys or key backups; the user ID stays taken. [`deactivate_account`] does this and also
    /// takes the user out of rooms and the user directory.
    pub async fn deactivate(&self, user: &UserId) -> Result<()> {
        sqlx::query("UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1")
            .bind(user.as_str())
            .execute(self.storage.pool())
            .await?;
        for table in [
            "cross_signing_keys",
            "backup_keys",
            "backup_versions",
            "pushers",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                .bind(user.as_str())
                .execute(self.storage.pool())
                .await?;
        }
        self.logout_all(user).await?;
        info!(%user, "deactivated");
        Ok(())
    }

    /// The flows for acting on `user`'s own account: the password, or nothing to check when
    /// the account has no password.
    pub async fn password_flows(&self, user: &UserId) -> Result<UiaFlows> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT password_hash FROM users WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_optional(self.storage.pool())
                .await?;
        Ok(match row {
            Some((Some(_),)) => UiaFlows::single(AuthType::Password),
            _ => UiaFlows::single(AuthType::Dummy),
        })
    }

    /// Runs user-interactive auth for an action on `user`'s own account
    /// ([`Accounts::password_flows`]).
    pub async fn confirm_owner(&self, user: &UserId, auth: Option<&AuthData>) -> Result<()> {
        let flows = self.password_flows(user).await?;
        self.check_uia(Some(user), &flows, auth).await
    }

    /// The notifier's current position (for tests and callers that wait for a change).
    pub fn current_position(&self) -> crate::StreamPosition {
        self.notifier.current()
    }
}

/// Deactivates `user` entirely: credentials, devices and keys go ([`Accounts::deactivate`]),
/// the profile is erased, and the user leaves every room they are joined to, invited to or
/// knocking on, which also takes them out of the user directory.
///
/// Credentials go first, so the user cannot act while their rooms are left. A room that cannot
/// be left (one this node no longer knows, say) is logged and skipped: with every token gone
/// the user could not retry, so the deactivation itself still succeeds.
pub async fn deactivate_account(hs: &crate::Homeserver, user: &UserId) -> Result<()> {
    hs.accounts.deactivate(user).await?;
    hs.userdata.erase_profile(user).await?;
    let log = hs.rooms.membership_log(user, i64::MAX).await?;
    let mut rooms: Vec<_> = crate::rooms::streams::memberships_as_of(&log, i64::MAX)
        .into_values()
        .filter(|m| matches!(m.membership.as_str(), "join" | "invite" | "knock"))
        .map(|m| m.room)
        .collect();
    rooms.sort();
    for room in rooms {
        if let Err(e) = hs.rooms.leave(&room, user, None).await {
            tracing::warn!(%room, %user, error = %e, "deactivated user could not leave");
        }
    }
    info!(%user, "left every room after deactivation");
    Ok(())
}

/// Creates (or takes over) a device with a fresh token, inside a write transaction, and
/// records the device-list change at `position`.
async fn create_login(
    conn: &mut AnyConnection,
    user: &UserId,
    device: NewDevice,
    now: i64,
    position: i64,
) -> Result<Login> {
    let device_id: OwnedDeviceId = device.device_id.unwrap_or_else(|| ids::device_id().into());
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT device_id FROM devices WHERE user_id = $1 AND device_id = $2")
            .bind(user.as_str())
            .bind(device_id.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    if existing.is_some() {
        // Logging in again as an existing device replaces its token and keeps its keys.
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user.as_str())
            .bind(device_id.as_str())
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE devices SET last_seen_ts = $1, last_seen_ip = $2 \
             WHERE user_id = $3 AND device_id = $4",
        )
        .bind(now)
        .bind(device.ip)
        .bind(user.as_str())
        .bind(device_id.as_str())
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.as_str())
        .bind(device_id.as_str())
        .bind(device.display_name)
        .bind(now)
        .bind(device.ip)
        .execute(&mut *conn)
        .await?;
    }
    let access_token = format!("grv_{}", ids::random_string(40));
    sqlx::query("INSERT INTO access_tokens (token_hash, user_id, device_id) VALUES ($1, $2, $3)")
        .bind(ids::token_hash(&access_token))
        .bind(user.as_str())
        .bind(device_id.as_str())
        .execute(&mut *conn)
        .await?;
    record_device_change(conn, user, position).await?;
    Ok(Login {
        user_id: user.to_owned(),
        device_id,
        access_token,
    })
}

/// Removes one device and everything hanging off it.
async fn delete_device(conn: &mut AnyConnection, user: &UserId, device: &DeviceId) -> Result<()> {
    for table in [
        "access_tokens",
        "devices",
        "device_keys",
        "one_time_keys",
        "fallback_keys",
        "to_device_messages",
        "to_device_txns",
    ] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"
        ))
        .bind(user.as_str())
        .bind(device.as_str())
        .execute(&mut *conn)
        .await?;
    }
    // Signatures others made on this device's keys go with it.
    sqlx::query("DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2")
        .bind(user.as_str())
        .bind(device.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records that `user`'s devices or keys changed at `position`.
pub(crate) async fn record_device_change(
    conn: &mut AnyConnection,
    user: &UserId,
    position: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO device_list_changes (position, user_id) VALUES ($1, $2)")
        .bind(position)
        .bind(user.as_str())
        .execute(conn)
        .await?;
    Ok(())
}
