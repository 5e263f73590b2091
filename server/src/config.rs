//! The part of the node's configuration that the server core reads.

use std::path::PathBuf;

use ruma::{OwnedServerName, RoomVersionId};

/// Who may register an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Nobody may register through the client API.
    Closed,
    /// Anyone may register (user-interactive auth with `m.login.dummy`).
    Open,
    /// Registration requires one of the configured tokens (`m.login.registration_token`).
    Token,
}

/// Settings of the homeserver core.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The Matrix server name (by default the node key's hex form).
    pub server_name: OwnedServerName,
    /// `sqlite://path` or `postgres://...`.
    pub database_url: String,
    /// Who may register.
    pub registration: Registration,
    /// Tokens accepted by `m.login.registration_token`.
    pub registration_tokens: Vec<String>,
    /// Room version of rooms created without an explicit one.
    pub default_room_version: RoomVersionId,
    /// TURN servers handed to clients by `voip/turnServer`, if any.
    pub turn_uris: Vec<String>,
    /// Shared secret for TURN credentials (REST API scheme), if any.
    pub turn_shared_secret: Option<String>,
    /// Lifetime of TURN credentials, in seconds.
    pub turn_ttl_secs: u64,
    /// The most undelivered to-device messages one device may hold; senders past it get
    /// `M_LIMIT_EXCEEDED` and nothing of their request is stored.
    pub max_to_device_inbox: usize,
    /// The directory holding media files; without one the node keeps no media and its media
    /// endpoints answer `M_FORBIDDEN`.
    pub media_dir: Option<PathBuf>,
    /// The largest media file accepted, uploaded or fetched from another server, in bytes.
    pub max_upload_bytes: u64,
    /// How much one remote server may take from this node's users per minute.
    pub remote_limits: RemoteLimits,
    /// Rate limits of logins and registrations.
    pub rate_limits: RateLimits,
}

/// Per-origin allowances of requests from other servers, each per minute (a burst of the
/// whole allowance, then an even refill); past one the request is answered
/// `M_LIMIT_EXCEEDED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteLimits {
    /// One-time (or fallback) keys claimed, counted per device.
    pub key_claims_per_minute: u32,
    /// Invites of this node's users.
    pub invites_per_minute: u32,
}

impl Default for RemoteLimits {
    fn default() -> Self {
        Self {
            key_claims_per_minute: 60,
            invites_per_minute: 20,
        }
    }
}

/// Token buckets for attempts that cost the server (argon2) or that guess passwords: each key
/// may make `*_burst` attempts at once and regains `*_per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Failed logins one account (or one non-loopback address) may make in a burst.
    pub login_burst: u32,
    /// Failed logins regained per second, per account or address.
    pub login_per_second: f64,
    /// Registration requests one address may make in a burst (each registration takes two).
    pub register_burst: u32,
    /// Registration requests regained per second, per address.
    pub register_per_second: f64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            login_burst: 10,
            login_per_second: 0.5,
            register_burst: 60,
            register_per_second: 1.0,
        }
    }
}

/// The largest media file accepted unless configured otherwise: 50 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 50 * 1024 * 1024;

impl ServerConfig {
    /// A configuration with the defaults for the given server name and database.
    pub fn new(server_name: OwnedServerName, database_url: impl Into<String>) -> Self {
        Self {
            server_name,
            database_url: database_url.into(),
            registration: Registration::Open,
            registration_tokens: Vec::new(),
            default_room_version: RoomVersionId::V12,
            turn_uris: Vec::new(),
            turn_shared_secret: None,
            turn_ttl_secs: 86_400,
            max_to_device_inbox: 10_000,
            media_dir: None,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            remote_limits: RemoteLimits::default(),
            rate_limits: RateLimits::default(),
        }
    }
}
