//! What end-to-end encryption asks of other servers: their users' keys, one-time key claims and
//! to-device delivery. The server core defines the trait; federation implements it and the
//! root package installs it, so the client API reaches other servers without knowing any
//! transport.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use ruma::ServerName;
use serde_json::Value;

use crate::{Result, federation::BoxFuture};

/// Key operations that need another server.
pub trait RemoteKeys: Send + Sync {
    /// Asks `server` for its users' device and cross-signing keys (`body` is the federation
    /// `user/keys/query` request); the answer is the server's JSON, within `timeout`.
    fn query_keys<'a>(
        &'a self,
        server: &'a ServerName,
        body: Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Value>>;

    /// Claims one-time keys of `server`'s users (`body` is the federation `user/keys/claim`
    /// request), within `timeout`.
    fn claim_keys<'a>(
        &'a self,
        server: &'a ServerName,
        body: Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Value>>;

    /// Queues an `m.direct_to_device` EDU with `content` for `server`; once this returns the
    /// EDU is stored and is sent even after a restart.
    fn send_to_device<'a>(&'a self, server: &'a ServerName, content: Value) -> BoxFuture<'a, ()>;
}

/// The slot federation fills once it runs; empty on a node without it.
#[derive(Clone, Default)]
pub struct RemoteKeysHook(Arc<OnceLock<Arc<dyn RemoteKeys>>>);

impl RemoteKeysHook {
    /// Installs federation's key operations; a second call is ignored.
    pub fn install(&self, remote: Arc<dyn RemoteKeys>) {
        let _ = self.0.set(remote);
    }

    /// Federation's key operations, when installed.
    pub fn get(&self) -> Option<&Arc<dyn RemoteKeys>> {
        self.0.get()
    }
}

impl std::fmt::Debug for RemoteKeysHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeysHook")
            .field("installed", &self.0.get().is_some())
            .finish()
    }
}
