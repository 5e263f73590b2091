//! What the client API asks of federation, as a trait the root package installs: joining and
//! inviting across servers, resolving remote aliases, and reading other servers' public room
//! directories and spaces. The server core defines it so that the
//! client API needs no dependency on the federation crate, and stays free of any transport.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
};

use ruma::{OwnedRoomId, OwnedServerName, RoomAliasId, RoomId, RoomOrAliasId, ServerName, UserId};

use crate::{
    Result,
    rooms::{
        directory::{PublicRoomsPage, PublicRoomsQuery},
        hierarchy::RemoteSpace,
    },
};

/// A boxed future, for the object-safe [`Remote`] trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A room ID with servers that are in the room.
pub type RoomAndServers = (OwnedRoomId, Vec<OwnedServerName>);

/// A media file as another server answered it.
#[derive(Debug, Clone)]
pub struct RemoteMedia {
    /// Its type and file name, as the origin gave them.
    pub meta: crate::media::NewMedia,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Membership, directory and media operations that need another server.
pub trait Remote: Send + Sync {
    /// Joins `user` to a room this node does not know, through one of `via` (or the alias's
    /// server); returns the room ID.
    fn join<'a>(
        &'a self,
        user: &'a UserId,
        room: &'a RoomOrAliasId,
        via: &'a [OwnedServerName],
    ) -> BoxFuture<'a, Result<OwnedRoomId>>;

    /// Invites a user of another server to a room this node is in.
    fn invite<'a>(
        &'a self,
        room: &'a RoomId,
        sender: &'a UserId,
        target: &'a UserId,
        reason: Option<&'a str>,
        is_direct: bool,
    ) -> BoxFuture<'a, Result<()>>;

    /// Refuses an invite to (or leaves) a room this node is not in, through the inviting
    /// server.
    fn leave<'a>(
        &'a self,
        room: &'a RoomId,
        user: &'a UserId,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>>;

    /// The profile of a user of another server (`None` when that server has no such user).
    fn profile<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<crate::userdata::Profile>>>;

    /// Tells the other servers in the room of an ephemeral change (`m.typing`, `m.receipt`),
    /// through their outgoing queues (receipts survive restarts, typing does not).
    fn ephemeral(&self, room: &RoomId, edu_type: &str, content: serde_json::Value);

    /// Asks the alias's server which room it names and which servers are in it.
    fn resolve_alias<'a>(
        &'a self,
        alias: &'a RoomAliasId,
    ) -> BoxFuture<'a, Result<Option<RoomAndServers>>>;

    /// Downloads a media file from its origin server: `NotFound` when that server has no such
    /// file or cannot be reached, `TooLarge` past `max_bytes`.
    fn download_media<'a>(
        &'a self,
        origin: &'a ServerName,
        media_id: &'a str,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<RemoteMedia>>;
    /// A page of `server`'s public room directory.
    fn public_rooms<'a>(
        &'a self,
        server: &'a ServerName,
        query: &'a PublicRoomsQuery,
    ) -> BoxFuture<'a, Result<PublicRoomsPage>>;

    /// What one of `via` (or the room ID's server) says of a space this node does not know;
    /// `None` when none of them knows it or lets this server see it.
    fn hierarchy<'a>(
        &'a self,
        room: &'a RoomId,
        via: &'a [OwnedServerName],
        suggested_only: bool,
    ) -> BoxFuture<'a, Result<Option<RemoteSpace>>>;

    /// Fetches up to `limit` events of the room older than anything this node holds of it
    /// from the other servers in it, and places them under its timeline; returns how many
    /// were placed (0 when the history is complete or no server could give more).
    fn backfill<'a>(&'a self, room: &'a RoomId, limit: usize) -> BoxFuture<'a, Result<usize>>;
}

/// The slot the root package fills with federation once it runs; empty on a node without it.
#[derive(Clone, Default)]
pub struct RemoteHook(Arc<OnceLock<Arc<dyn Remote>>>);

impl RemoteHook {
    /// Installs federation; a second call is ignored.
    pub fn install(&self, remote: Arc<dyn Remote>) {
        let _ = self.0.set(remote);
    }

    /// Federation, when installed.
    pub fn get(&self) -> Option<&Arc<dyn Remote>> {
        self.0.get()
    }
}

impl std::fmt::Debug for RemoteHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteHook")
            .field("installed", &self.0.get().is_some())
            .finish()
    }
}
