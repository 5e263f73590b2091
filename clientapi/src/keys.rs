//! End-to-end encryption keys and to-device messages.
//!
//! - `POST /_matrix/client/v3/keys/upload`, `/keys/query`, `/keys/claim`
//! - `GET /_matrix/client/v3/keys/changes`
//! - `POST /_matrix/client/v3/keys/device_signing/upload` (user-interactive auth when it
//!   replaces existing keys; also under `/unstable/`), `POST /_matrix/client/v3/keys/signatures/upload`
//! - `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
//! - key backup: see [`backup`]

mod backup;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post, put},
};
use grove_server::{
    StreamPosition,
    e2ee::{CrossSigningUpload, RemoteKeys, Target},
};
use ruma::{
    OwnedServerName, OwnedUserId, ServerName, UserId,
    api::client::{
        keys::{
            claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures,
            upload_signing_keys,
        },
        to_device::send_event_to_device,
    },
    serde::Raw,
    to_device::DeviceIdOrAllDevices,
};
use serde_json::{Map, Value, json};

use crate::{AppState, error::ApiError, extract::Ruma};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/keys/upload", post(upload_keys))
        .route("/_matrix/client/v3/keys/query", post(get_keys))
        .route("/_matrix/client/v3/keys/claim", post(claim_keys))
        .route("/_matrix/client/v3/keys/changes", get(get_key_changes))
        .route(
            "/_matrix/client/v3/keys/device_signing/upload",
            post(upload_signing_keys),
        )
        // Clients from before the endpoint was stable still call it here.
        .route(
            "/_matrix/client/unstable/keys/device_signing/upload",
            post(upload_signing_keys),
        )
        .route(
            "/_matrix/client/v3/keys/signatures/upload",
            post(upload_signatures),
        )
        .route(
            "/_matrix/client/v3/sendToDevice/{event_type}/{txn_id}",
            put(send_to_device),
        )
        .merge(backup::routes())
}

/// The JSON of a raw value, as an untyped value.
fn value_of<T>(raw: &Raw<T>) -> Result<Value, ApiError> {
    serde_json::from_str(raw.json().get()).map_err(|e| ApiError::bad_json(e.to_string()))
}

fn counts_json(counts: &BTreeMap<ruma::OneTimeKeyAlgorithm, ruma::UInt>) -> Map<String, Value> {
    counts
        .iter()
        .map(|(a, c)| (a.to_string(), json!(u64::from(*c))))
        .collect()
}

async fn upload_keys(
    State(state): State<AppState>,
    req: Ruma<upload_keys::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let device_keys = req.body.device_keys.as_ref().map(value_of).transpose()?;
    let one_time: BTreeMap<String, Value> = req
        .body
        .one_time_keys
        .iter()
        .map(|(id, k)| Ok((id.to_string(), value_of(k)?)))
        .collect::<Result<_, ApiError>>()?;
    let fallback: BTreeMap<String, Value> = req
        .body
        .fallback_keys
        .iter()
        .map(|(id, k)| Ok((id.to_string(), value_of(k)?)))
        .collect::<Result<_, ApiError>>()?;
    let counts = state
        .hs
        .e2ee
        .upload_keys(
            &session.user_id,
            &session.device_id,
            device_keys.as_ref(),
            &one_time,
            &fallback,
        )
        .await?;
    Ok(Json(json!({ "one_time_key_counts": counts_json(&counts) })))
}

async fn get_keys(
    State(state): State<AppState>,
    req: Ruma<get_keys::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let ours = state.hs.config.server_name.clone();
    let (local, remote) = split_by_server(&req.body.device_keys, &ours);
    let result = state.hs.e2ee.query_keys(&session.user_id, &local).await?;
    let mut device_keys = result.device_keys;
    let mut master_keys = result.master_keys;
    let mut self_signing_keys = result.self_signing_keys;
    let mut failures = Map::new();
    let timeout = remote_timeout(req.body.timeout);
    let asked = remote.clone();
    let answers = ask_servers(&state, remote, |hook, server, users| {
        let body = json!({ "device_keys": users });
        hook.query_keys(server, body, timeout)
    })
    .await;
    for (server, answer) in answers {
        let users: Vec<&UserId> = asked
            .get(&server)
            .map(|users| users.keys().map(|u| &**u).collect())
            .unwrap_or_default();
        let answer = match answer {
            Ok(answer) => {
                // Kept for when that node is offline: users asked with all their devices.
                let whole: Vec<&UserId> = asked
                    .get(&server)
                    .map(|users| {
                        users
                            .iter()
                            .filter(|(_, devices)| devices.is_empty())
                            .map(|(u, _)| &**u)
                            .collect()
                    })
                    .unwrap_or_default();
                if let Err(e) = state
                    .hs
                    .e2ee
                    .cache_remote_keys(&server, &whole, &answer)
                    .await
                {
                    tracing::warn!(%server, error = %e, "caching remote keys");
                }
                answer
            }
            Err(()) => {
                // The node is away: answer with what it said last time, and report it as
                // failed only when that does not cover every user asked.
                let (cached, complete) = state.hs.e2ee.cached_remote_keys(&users).await?;
                if !complete {
                    failures.insert(server.to_string(), json!({}));
                }
                cached
            }
        };
        for (field, target) in [
            ("device_keys", &mut device_keys),
            ("master_keys", &mut master_keys),
            ("self_signing_keys", &mut self_signing_keys),
        ] {
            target.extend(of_server(&answer[field], &server));
        }
    }
    Ok(Json(json!({
        "device_keys": device_keys,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
        "user_signing_keys": result.user_signing_keys,
        "failures": failures,
    })))
}

/// The longest a client may make us wait for other servers' keys.
const MAX_REMOTE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long we wait for other servers' keys when the client does not say.
const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(10);

fn remote_timeout(asked: Option<Duration>) -> Duration {
    asked
        .unwrap_or(DEFAULT_REMOTE_TIMEOUT)
        .min(MAX_REMOTE_TIMEOUT)
}

/// Splits a request map into this server's users and the others' users by server.
fn split_by_server<V: Clone>(
    users: &BTreeMap<OwnedUserId, V>,
    ours: &ServerName,
) -> (
    BTreeMap<OwnedUserId, V>,
    BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, V>>,
) {
    let mut local = BTreeMap::new();
    let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, V>> = BTreeMap::new();
    for (user, value) in users {
        if user.server_name() == ours {
            local.insert(user.clone(), value.clone());
        } else {
            remote
                .entry(user.server_name().to_owned())
                .or_default()
                .insert(user.clone(), value.clone());
        }
    }
    (local, remote)
}

/// Asks every server at once through federation's key operations; a server is answered
/// `Err(())` when federation is not running or the request failed or timed out.
async fn ask_servers<V, F>(
    state: &AppState,
    remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, V>>,
    ask: F,
) -> Vec<(OwnedServerName, Result<Value, ()>)>
where
    F: for<'a> Fn(
        &'a Arc<dyn RemoteKeys>,
        &'a ServerName,
        &BTreeMap<OwnedUserId, V>,
    ) -> grove_server::federation::BoxFuture<'a, grove_server::Result<Value>>,
{
    let Some(hook) = state.hs.e2ee.remote().get() else {
        return remote.into_keys().map(|s| (s, Err(()))).collect();
    };
    let asks = remote.iter().map(|(server, users)| {
        let request = ask(hook, server, users);
        async move {
            let answer = request.await.map_err(|e| {
                tracing::debug!(%server, error = %e, "keys request to another server failed");
            });
            (server.clone(), answer)
        }
    });
    futures_util::future::join_all(asks).await
}

/// The entries of a `user → …` answer map that belong to users of `server`: a server speaks
/// only for its own users.
fn of_server(map: &Value, server: &ServerName) -> Map<String, Value> {
    map.as_object()
        .into_iter()
        .flatten()
        .filter(|(user, _)| UserId::parse(user.as_str()).is_ok_and(|u| u.server_name() == server))
        .map(|(u, v)| (u.clone(), v.clone()))
        .collect()
}

async fn claim_keys(
    State(state): State<AppState>,
    req: Ruma<claim_keys::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    req.session()?;
    let claims: BTreeMap<OwnedUserId, BTreeMap<ruma::OwnedDeviceId, String>> = req
        .body
        .one_time_keys
        .iter()
        .map(|(user, devices)| {
            let devices = devices
                .iter()
                .map(|(d, a)| (d.clone(), a.to_string()))
                .collect();
            (user.clone(), devices)
        })
        .collect();
    let ours = state.hs.config.server_name.clone();
    let (local, remote) = split_by_server(&claims, &ours);
    let mut keys = state.hs.e2ee.claim_keys(&local).await?;
    let mut failures = Map::new();
    let timeout = remote_timeout(req.body.timeout);
    let answers = ask_servers(&state, remote, |hook, server, users| {
        let body = json!({ "one_time_keys": users });
        hook.claim_keys(server, body, timeout)
    })
    .await;
    for (server, answer) in answers {
        match answer {
            Ok(answer) => keys.extend(of_server(&answer["one_time_keys"], &server)),
            Err(()) => {
                failures.insert(server.to_string(), json!({}));
            }
        }
    }
    Ok(Json(json!({ "one_time_keys": keys, "failures": failures })))
}

fn position(token: &str) -> Result<StreamPosition, ApiError> {
    // Sync tokens are decimal positions; accept a leading `s` some clients keep from others.
    token
        .trim_start_matches('s')
        .parse::<i64>()
        .map(StreamPosition)
        .map_err(|_| ApiError::invalid_param("Invalid stream token"))
}

async fn get_key_changes(
    State(state): State<AppState>,
    req: Ruma<get_key_changes::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let from = position(&req.body.from)?;
    let to = position(&req.body.to)?.min(state.hs.notifier.current());
    let lists = grove_server::sync::key_changes(&state.hs, &session.user_id, from, to).await?;
    Ok(Json(
        json!({ "changed": lists.changed, "left": lists.left }),
    ))
}

async fn upload_signing_keys(
    State(state): State<AppState>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let upload = CrossSigningUpload {
        master: req.body.master_key.as_ref().map(value_of).transpose()?,
        self_signing: req
            .body
            .self_signing_key
            .as_ref()
            .map(value_of)
            .transpose()?,
        user_signing: req
            .body
            .user_signing_key
            .as_ref()
            .map(value_of)
            .transpose()?,
    };
    let e2ee = &state.hs.e2ee;
    if e2ee
        .cross_signing_upload_replaces(&session.user_id, &upload)
        .await?
    {
        let accounts = &state.hs.accounts;
        accounts
            .confirm_owner(&session.user_id, req.body.auth.as_ref())
            .await?;
    }
    e2ee.upload_cross_signing(&session.user_id, &upload).await?;
    Ok(Json(json!({})))
}

async fn upload_signatures(
    State(state): State<AppState>,
    req: Ruma<upload_signatures::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let signed = match serde_json::to_value(&req.body.signed_keys) {
        Ok(Value::Object(map)) => map,
        _ => return Err(ApiError::bad_json("Expected an object of signed keys")),
    };
    let failures = state
        .hs
        .e2ee
        .upload_signatures(&session.user_id, &signed)
        .await?;
    Ok(Json(json!({ "failures": failures })))
}

async fn send_to_device(
    State(state): State<AppState>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let mut messages: BTreeMap<OwnedUserId, Vec<(Target, Value)>> = BTreeMap::new();
    for (user, devices) in &req.body.messages {
        let list = messages.entry(user.clone()).or_default();
        for (device, content) in devices {
            let target = match device {
                DeviceIdOrAllDevices::AllDevices => Target::AllDevices,
                DeviceIdOrAllDevices::DeviceId(d) => Target::Device(d.to_string()),
            };
            list.push((target, value_of(content)?));
        }
    }
    state
        .hs
        .e2ee
        .send_to_device(
            &session.user_id,
            &session.device_id,
            &req.body.event_type.to_string(),
            req.body.txn_id.as_str(),
            &messages,
        )
        .await?;
    Ok(Json(json!({})))
}
