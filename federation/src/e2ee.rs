//! End-to-end encryption across servers.
//!
//! - `POST /_matrix/federation/v1/user/keys/query`, `POST .../v1/user/keys/claim`,
//!   `GET .../v1/user/devices/{userId}`: keys of this node's users, for other servers.
//! - EDUs received: `m.direct_to_device` (into the local inboxes, deduplicated by message ID),
//!   `m.device_list_update` and `m.signing_key_update` (recorded as a key change of the remote
//!   user, so local clients sharing a room refetch the keys).
//! - [`FederatedKeys`]: the [`RemoteKeys`] operations the client API calls for users of other
//!   servers.
//! - [`announce_key_changes`]: tells the servers sharing a room with a local user when that
//!   user's devices or keys change.

use std::{
    collections::BTreeMap,
    sync::{Arc, Weak},
    time::Duration,
};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    routing::{get, post},
};
use grove_server::{Error, Result, StreamPosition, e2ee::RemoteKeys, federation::BoxFuture};
use ruma::{OwnedDeviceId, OwnedUserId, ServerName, UserId};
use serde_json::{Map, Value, json};
use tracing::debug;

use crate::{Ctx, error::FedError, routes::Origin};

/// Users named in one keys query or claim, at most.
const MAX_USERS: usize = 1000;
/// Devices named for one user in one query or claim, at most.
const MAX_DEVICES: usize = 1000;
/// How long the key-change announcer sleeps when nothing wakes it.
const ANNOUNCE_IDLE: Duration = Duration::from_secs(30);

type Ctxt = State<Arc<Ctx>>;
type Answer = std::result::Result<Json<Value>, FedError>;

/// The routes of this module (behind the router's authentication layer).
pub(crate) fn routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/_matrix/federation/v1/user/keys/query", post(query_keys))
        .route("/_matrix/federation/v1/user/keys/claim", post(claim_keys))
        .route(
            "/_matrix/federation/v1/user/devices/{user_id}",
            get(user_devices),
        )
}

fn body_object(body: &[u8]) -> std::result::Result<Map<String, Value>, FedError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FedError::bad_json("expected a JSON object")),
        Err(e) => Err(FedError::bad_json(format!("not JSON: {e}"))),
    }
}

/// A user of this node named in a request, or `None` for anyone else.
fn local_user(ctx: &Ctx, text: &str) -> Option<OwnedUserId> {
    UserId::parse(text)
        .ok()
        .filter(|u| u.server_name() == ctx.hs.config.server_name)
}

/// `POST /_matrix/federation/v1/user/keys/query`
async fn query_keys(State(ctx): Ctxt, body: Bytes) -> Answer {
    let body = body_object(&body)?;
    let Some(users) = body.get("device_keys").and_then(Value::as_object) else {
        return Err(FedError::bad_json("device_keys must be an object"));
    };
    if users.len() > MAX_USERS {
        return Err(FedError::bad_json("too many users in one query"));
    }
    let mut device_keys = Map::new();
    let mut master_keys = Map::new();
    let mut self_signing_keys = Map::new();
    for (user, devices) in users {
        let Some(user) = local_user(&ctx, user) else {
            continue;
        };
        let devices: Vec<OwnedDeviceId> = devices
            .as_array()
            .into_iter()
            .flatten()
            .take(MAX_DEVICES)
            .filter_map(Value::as_str)
            .map(OwnedDeviceId::from)
            .collect();
        // Asked as the user themself: only their own signatures go to other servers.
        let wanted = BTreeMap::from([(user.clone(), devices)]);
        let found = ctx.hs.e2ee.query_keys(&user, &wanted).await?;
        device_keys.extend(found.device_keys);
        master_keys.extend(found.master_keys);
        self_signing_keys.extend(found.self_signing_keys);
    }
    Ok(Json(json!({
        "device_keys": device_keys,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
    })))
}

/// `POST /_matrix/federation/v1/user/keys/claim`
async fn claim_keys(State(ctx): Ctxt, Extension(origin): Extension<Origin>, body: Bytes) -> Answer {
    let body = body_object(&body)?;
    let Some(users) = body.get("one_time_keys").and_then(Value::as_object) else {
        return Err(FedError::bad_json("one_time_keys must be an object"));
    };
    if users.len() > MAX_USERS {
        return Err(FedError::bad_json("too many users in one claim"));
    }
    let mut claims: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>> = BTreeMap::new();
    for (user, devices) in users {
        let Some(user) = local_user(&ctx, user) else {
            continue;
        };
        let devices = devices
            .as_object()
            .into_iter()
            .flatten()
            .take(MAX_DEVICES)
            .filter_map(|(d, a)| Some((OwnedDeviceId::from(d.as_str()), a.as_str()?.to_owned())))
            .collect();
        claims.insert(user, devices);
    }
    // Each claimed device takes one key: a server draining a user's keys is held back.
    let devices: usize = claims.values().map(BTreeMap::len).sum();
    let cost = u32::try_from(devices).unwrap_or(u32::MAX);
    if let Err(wait) = ctx
        .key_claims
        .take(&origin.0, cost, std::time::Instant::now())
    {
        ctx.metrics.rate_limited(crate::metrics::Limited::KeyClaim);
        return Err(FedError::limited(
            "too many key claims from your server",
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        ));
    }
    let keys = ctx.hs.e2ee.claim_keys(&claims).await?;
    Ok(Json(json!({ "one_time_keys": keys })))
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`
async fn user_devices(
    State(ctx): Ctxt,
    Extension(_origin): Extension<Origin>,
    Path(user): Path<String>,
) -> Answer {
    let Some(user) = local_user(&ctx, &user) else {
        return Err(FedError::not_found("not a user of this server"));
    };
    let wanted = BTreeMap::from([(user.clone(), Vec::new())]);
    let found = ctx.hs.e2ee.query_keys(&user, &wanted).await?;
    let mut answer = json!({
        "user_id": user,
        "stream_id": ctx.hs.notifier.current().0,
        "devices": device_list(found.device_keys.get(user.as_str())),
    });
    if let Some(master) = found.master_keys.get(user.as_str()) {
        answer["master_key"] = master.clone();
    }
    if let Some(self_signing) = found.self_signing_keys.get(user.as_str()) {
        answer["self_signing_key"] = self_signing.clone();
    }
    Ok(Json(answer))
}

/// The `devices` list of `user/devices` from a device → keys map.
fn device_list(devices: Option<&Value>) -> Vec<Value> {
    devices
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(device, keys)| {
            let mut entry = json!({ "device_id": device, "keys": keys });
            if let Some(name) = keys["unsigned"]["device_display_name"].as_str() {
                entry["device_display_name"] = json!(name);
            }
            entry
        })
        .collect()
}

/// Handles the EDUs of this module; others are ignored.
pub(crate) async fn handle_edu(ctx: &Ctx, origin: &ServerName, edu: &Value) {
    let content = &edu["content"];
    match edu["edu_type"].as_str() {
        Some("m.direct_to_device") => {
            if let Err(e) = ctx
                .hs
                .e2ee
                .receive_to_device(&ctx.hs.config.server_name, origin, content)
                .await
            {
                debug!(%origin, error = %e, "to-device EDU not delivered");
            }
        }
        Some("m.device_list_update" | "m.signing_key_update") => {
            let Some(user) = content["user_id"]
                .as_str()
                .and_then(|u| UserId::parse(u).ok())
            else {
                return;
            };
            if user.server_name() != origin {
                return;
            }
            // Only a user someone here shares a room with is worth a change.
            let ours = &ctx.hs.config.server_name;
            let shared = ctx
                .hs
                .rooms
                .users_sharing_rooms_with(&user)
                .await
                .is_ok_and(|users| users.iter().any(|u| u.server_name() == ours));
            if !shared {
                return;
            }
            if let Err(e) = ctx.hs.e2ee.remote_keys_changed(&user).await {
                debug!(%origin, error = %e, "device list EDU not recorded");
            }
        }
        _ => {}
    }
}

/// Watches the stream for key changes of local users and sends `m.device_list_update` (one per
/// device with keys) and `m.signing_key_update` EDUs to every other server sharing a room with
/// them. Changes made while federation was not running are not announced.
pub(crate) async fn announce_key_changes(ctx: Weak<Ctx>) {
    crate::follow_stream(
        ctx,
        ANNOUNCE_IDLE,
        grove_server::storage::Change::DeviceLists,
        async |ctx, from, upto| {
            let users = ctx
                .hs
                .e2ee
                .users_with_key_changes(from, upto)
                .await
                .map_err(|e| format!("reading key changes: {e}"))?;
            for user in users {
                if user.server_name() == ctx.hs.config.server_name {
                    announce(ctx, &user, upto).await;
                }
            }
            Ok(())
        },
    )
    .await
}

/// Sends the current keys of `user` to the servers sharing a room with them.
async fn announce(ctx: &Arc<Ctx>, user: &UserId, position: StreamPosition) {
    let servers = ctx.servers_sharing_with(user).await;
    if servers.is_empty() {
        return;
    }
    let wanted = BTreeMap::from([(user.to_owned(), Vec::new())]);
    let found = match ctx.hs.e2ee.query_keys(user, &wanted).await {
        Ok(f) => f,
        Err(e) => {
            debug!(%user, error = %e, "reading keys to announce");
            return;
        }
    };
    let mut edus: Vec<Value> = device_list(found.device_keys.get(user.as_str()))
        .into_iter()
        .map(|device| {
            let mut content = json!({
                "user_id": user,
                "device_id": device["device_id"],
                "stream_id": position.0,
                "prev_id": [],
                "deleted": false,
                "keys": device["keys"],
            });
            if let Some(name) = device.get("device_display_name") {
                content["device_display_name"] = name.clone();
            }
            json!({ "edu_type": "m.device_list_update", "content": content })
        })
        .collect();
    if let Some(master) = found.master_keys.get(user.as_str()) {
        let mut content = json!({ "user_id": user, "master_key": master });
        if let Some(self_signing) = found.self_signing_keys.get(user.as_str()) {
            content["self_signing_key"] = self_signing.clone();
        }
        edus.push(json!({ "edu_type": "m.signing_key_update", "content": content }));
    }
    if edus.is_empty() {
        // A device without keys yet (or a removed one): a bare update still says "refetch".
        edus.push(json!({
            "edu_type": "m.device_list_update",
            "content": { "user_id": user, "device_id": "", "stream_id": position.0,
                "prev_id": [], "deleted": true },
        }));
    }
    for server in servers {
        ctx.sender.queue_edus(&server, edus.clone()).await;
    }
}

/// Federation's key operations, as the client API reaches them.
pub struct FederatedKeys {
    // Weak: the homeserver holds this, and the context holds the homeserver.
    ctx: Weak<Ctx>,
}

impl FederatedKeys {
    /// Key operations over `ctx`.
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        Self {
            ctx: Arc::downgrade(ctx),
        }
    }

    async fn post(
        &self,
        server: &ServerName,
        path: &str,
        body: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let ctx = self
            .ctx
            .upgrade()
            .ok_or_else(|| Error::NotEnabled("federation has stopped".into()))?;
        let request = ctx
            .client
            .request(server, http::Method::POST, path, Some(&body));
        match tokio::time::timeout(timeout, request).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(Error::NotFound(format!("{server} did not answer in time"))),
        }
    }
}

impl RemoteKeys for FederatedKeys {
    fn query_keys<'a>(
        &'a self,
        server: &'a ServerName,
        body: Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Value>> {
        Box::pin(self.post(
            server,
            "/_matrix/federation/v1/user/keys/query",
            body,
            timeout,
        ))
    }

    fn claim_keys<'a>(
        &'a self,
        server: &'a ServerName,
        body: Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Value>> {
        Box::pin(self.post(
            server,
            "/_matrix/federation/v1/user/keys/claim",
            body,
            timeout,
        ))
    }

    fn send_to_device<'a>(&'a self, server: &'a ServerName, content: Value) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(ctx) = self.ctx.upgrade() else {
                return;
            };
            let edu = json!({ "edu_type": "m.direct_to_device", "content": content });
            ctx.sender.queue_edus(server, vec![edu]).await;
        })
    }
}
