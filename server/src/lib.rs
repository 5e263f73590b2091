//! The Grove homeserver core: storage, the room event DAG, event authorization, state
//! resolution, users and devices, end-to-end encryption key storage, and the data behind sync.
//!
//! This crate knows no HTTP and no overlay. It takes already-parsed requests (ruma types and
//! plain Rust values) and returns results; the client and federation APIs map those onto the
//! wire. Event authorization and state resolution are synchronous functions over data the
//! caller has loaded; SQL lives in the storage modules only.
//!
//! The entry point is [`Homeserver::open`], which connects storage, runs migrations and
//! returns the set of components that the API crates use.

pub mod accounts;
pub mod config;
pub mod e2ee;
pub mod error;
pub mod federation;
pub mod federation_queue;
pub mod home;
pub mod keys;
pub mod media;
pub mod notifier;
pub mod rooms;
pub mod server_keys;
pub mod sliding;
pub mod storage;
pub mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod userdata;

use std::sync::Arc;

pub use config::ServerConfig;
pub use error::{Error, Result};
pub use keys::NodeKey;
pub use notifier::{Notifier, StreamPosition};
pub use storage::Storage;

/// The components of one running homeserver, each shareable across tasks.
///
/// Handlers take the component they need; no component reaches another through this struct.
#[derive(Clone)]
pub struct Homeserver {
    /// The node's configuration as the server core sees it.
    pub config: Arc<ServerConfig>,
    /// The node's signing key and server name.
    pub key: Arc<NodeKey>,
    /// The database.
    pub storage: Storage,
    /// Stream positions and the wake-ups of waiting syncs.
    pub notifier: Notifier,
    /// Users, devices, access tokens, registration and user-interactive auth.
    pub accounts: accounts::Accounts,
    /// Rooms: events, the DAG, authorization, state, timelines, aliases and the directory.
    pub rooms: rooms::Rooms,
    /// Device keys, one-time keys, cross-signing, to-device messages and key backup.
    pub e2ee: e2ee::E2ee,
    /// Per-user data: profiles, account data, tags, push rules, pushers, filters, presence,
    /// receipts and typing.
    pub userdata: userdata::UserData,
    /// Uploaded media, copies of other servers' media, and thumbnails.
    pub media: media::Media,
    /// Simplified sliding sync's connections, in memory.
    pub sliding: sliding::Connections,
    /// Federation's outgoing queues.
    pub federation_queue: federation_queue::FederationQueue,
    /// Federation, once the root package installs it (remote joins, invites and aliases).
    pub remote: federation::RemoteHook,
}

impl Homeserver {
    /// Connects to the database named by `config.database_url`, runs the migrations and builds
    /// every component.
    pub async fn open(config: ServerConfig, key: NodeKey) -> Result<Self> {
        let storage = Storage::connect(&config.database_url).await?;
        let notifier = storage.notifier();
        let config = Arc::new(config);
        let key = Arc::new(key);
        let accounts = accounts::Accounts::new(storage.clone(), notifier.clone(), config.clone());
        let rooms = rooms::Rooms::new(
            storage.clone(),
            notifier.clone(),
            config.clone(),
            key.clone(),
        )
        .await?;
        let e2ee = e2ee::E2ee::new(storage.clone(), config.max_to_device_inbox);
        let userdata = userdata::UserData::new(storage.clone(), notifier.clone(), config.clone());
        let federation_queue = federation_queue::FederationQueue::new(storage.clone());
        let remote = federation::RemoteHook::default();
        let media = media::Media::new(storage.clone(), config.clone(), remote.clone());
        media.prepare().await?;
        Ok(Self {
            sliding: sliding::Connections::default(),
            media,
            federation_queue,
            remote,
            config,
            key,
            storage,
            notifier,
            accounts,
            rooms,
            e2ee,
            userdata,
        })
    }

    /// Waits for in-flight writes and closes the database.
    pub async fn close(&self) {
        self.storage.close().await;
    }
}
