//! Device keys, one-time keys and fallback keys: upload, query and claim.

use std::collections::BTreeMap;

use ruma::{DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId, UInt, UserId};
use serde_json::{Map, Value, json};

use super::{E2ee, signatures_for};
use crate::{Error, Result, accounts::record_device_change};

/// One-time keys a device may hold unclaimed; more are refused.
const MAX_ONE_TIME_KEYS: i64 = 1000;

/// What `POST /keys/query` answers, as JSON maps.
#[derive(Debug, Default)]
pub struct KeysQuery {
    /// user → device → signed device keys.
    pub device_keys: Map<String, Value>,
    /// user → master key.
    pub master_keys: Map<String, Value>,
    /// user → self-signing key.
    pub self_signing_keys: Map<String, Value>,
    /// The requester's own user-signing key, if asked for.
    pub user_signing_keys: Map<String, Value>,
}

impl E2ee {
    /// Stores a device's keys. `device_keys` must name this user and device; one-time keys
    /// already present with other content are refused; fallback keys replace the previous
    /// one of their algorithm. Returns the unclaimed one-time key counts.
    pub async fn upload_keys(
        &self,
        user: &UserId,
        device: &DeviceId,
        device_keys: Option<&Value>,
        one_time_keys: &BTreeMap<String, Value>,
        fallback_keys: &BTreeMap<String, Value>,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        if let Some(keys) = device_keys {
            let named_user = keys.get("user_id").and_then(Value::as_str);
            let named_device = keys.get("device_id").and_then(Value::as_str);
            if named_user != Some(user.as_str()) || named_device != Some(device.as_str()) {
                return Err(Error::InvalidParam(
                    "device_keys must name the uploading user and device".into(),
                ));
            }
        }
        let mut txn = self.storage.write().await?;
        if let Some(keys) = device_keys {
            let text = serde_json::to_string(keys)?;
            let old: Option<(String,)> = sqlx::query_as(
                "SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2",
            )
            .bind(user.as_str())
            .bind(device.as_str())
            .fetch_optional(txn.conn())
            .await?;
            if old.as_ref().map(|(o,)| o.as_str()) != Some(text.as_str()) {
                sqlx::query("DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2")
                    .bind(user.as_str())
                    .bind(device.as_str())
                    .execute(txn.conn())
                    .await?;
                sqlx::query(
                    "INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)",
                )
                .bind(user.as_str())
                .bind(device.as_str())
                .bind(text)
                .execute(txn.conn())
                .await?;
                let position = txn.next_position().0;
                record_device_change(txn.conn(), user, position).await?;
            }
        }
        let held: (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user.as_str())
        .bind(device.as_str())
        .fetch_one(txn.conn())
        .await?;
        if held.0 + i64::try_from(one_time_keys.len()).unwrap_or(i64::MAX) > MAX_ONE_TIME_KEYS {
            return Err(Error::LimitExceeded("too many one-time keys".into()));
        }
        for (key_id, key) in one_time_keys {
            let (algorithm, _) = split_key_id(key_id)?;
            let text = serde_json::to_string(key)?;
            let old: Option<(String,)> = sqlx::query_as(
                "SELECT key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 \
                 AND algorithm = $3 AND key_id = $4",
            )
            .bind(user.as_str())
            .bind(device.as_str())
            .bind(algorithm)
            .bind(key_id)
            .fetch_optional(txn.conn())
            .await?;
            match old {
                Some((o,)) if o == text => {}
                Some(_) => {
                    return Err(Error::InvalidParam(format!(
                        "one-time key {key_id} already exists with other content"
                    )));
                }
                None => {
                    sqlx::query(
                        "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, \
                         key_json) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(user.as_str())
                    .bind(device.as_str())
                    .bind(algorithm)
                    .bind(key_id)
                    .bind(text)
                    .execute(txn.conn())
                    .await?;
                }
            }
        }
        for (key_id, key) in fallback_keys {
            let (algorithm, _) = split_key_id(key_id)?;
            sqlx::query(
                "DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = $2 \
                 AND algorithm = $3",
            )
            .bind(user.as_str())
            .bind(device.as_str())
            .bind(algorithm)
            .execute(txn.conn())
            .await?;
            sqlx::query(
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, \
                 used) VALUES ($1, $2, $3, $4, $5, 0)",
            )
            .bind(user.as_str())
            .bind(device.as_str())
            .bind(algorithm)
            .bind(key_id)
            .bind(serde_json::to_string(key)?)
            .execute(txn.conn())
            .await?;
        }
        txn.commit().await?;
        self.counts.forget();
        Ok(self.key_counts(user, device).await?.0)
    }

    /// Keys of the asked users (all devices when the list is empty), with the signatures
    /// `requester` may see.
    pub async fn query_keys(
        &self,
        requester: &UserId,
        users: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<KeysQuery> {
        let mut out = KeysQuery::default();
        for (user, wanted) in users {
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT device_id, key_json FROM device_keys WHERE user_id = $1")
                    .bind(user.as_str())
                    .fetch_all(self.storage.pool())
                    .await?;
            let names: Vec<(String, Option<String>)> =
                sqlx::query_as("SELECT device_id, display_name FROM devices WHERE user_id = $1")
                    .bind(user.as_str())
                    .fetch_all(self.storage.pool())
                    .await?;
            let mut devices = Map::new();
            for (device, text) in rows {
                if !wanted.is_empty() && !wanted.iter().any(|d| d.as_str() == device) {
                    continue;
                }
                let mut keys: Value = serde_json::from_str(&text)?;
                self.merge_signatures(requester, user, &device, &mut keys)
                    .await?;
                if let Some((_, Some(name))) = names.iter().find(|(d, _)| *d == device)
                    && let Value::Object(map) = &mut keys
                {
                    map.insert("unsigned".into(), json!({ "device_display_name": name }));
                }
                devices.insert(device, keys);
            }
            out.device_keys
                .insert(user.to_string(), Value::Object(devices));
            for (key_type, target) in [
                ("master", &mut out.master_keys),
                ("self_signing", &mut out.self_signing_keys),
                ("user_signing", &mut out.user_signing_keys),
            ] {
                if key_type == "user_signing" && user != requester {
                    continue;
                }
                if let Some(mut key) = self.cross_signing_key(user, key_type).await? {
                    if let Some(public) = public_key_of(&key) {
                        self.merge_signatures(requester, user, &public, &mut key)
                            .await?;
                    }
                    target.insert(user.to_string(), key);
                }
            }
        }
        Ok(out)
    }

    /// Adds the stored signatures on `(user, key_id)` that `requester` may see to `object`.
    async fn merge_signatures(
        &self,
        requester: &UserId,
        user: &UserId,
        key_id: &str,
        object: &mut Value,
    ) -> Result<()> {
        let sigs = signatures_for(self.storage.pool(), user, key_id).await?;
        for (signer, signer_key, signature) in sigs {
            // A signature by someone else's user-signing key is for that someone only.
            if signer != user.as_str() && signer != requester.as_str() {
                continue;
            }
            let Value::Object(map) = object else { continue };
            let all = map.entry("signatures").or_insert_with(|| json!({}));
            if let Value::Object(all) = all {
                let by_signer = all.entry(signer).or_insert_with(|| json!({}));
                if let Value::Object(by_signer) = by_signer {
                    by_signer.insert(signer_key, Value::String(signature));
                }
            }
        }
        Ok(())
    }

    /// Claims one key per asked device: a one-time key of the algorithm, else its fallback key
    /// (marked used). Returns user → device → key ID → key.
    pub async fn claim_keys(
        &self,
        claims: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    ) -> Result<Map<String, Value>> {
        let mut out = Map::new();
        let mut txn = self.storage.write().await?;
        for (user, devices) in claims {
            let mut by_device = Map::new();
            for (device, algorithm) in devices {
                let one: Option<(String, String)> = sqlx::query_as(
                    "SELECT key_id, key_json FROM one_time_keys WHERE user_id = $1 \
                     AND device_id = $2 AND algorithm = $3 ORDER BY key_id LIMIT 1",
                )
                .bind(user.as_str())
                .bind(device.as_str())
                .bind(algorithm)
                .fetch_optional(txn.conn())
                .await?;
                let claimed = if let Some((key_id, key)) = one {
                    sqlx::query(
                        "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 \
                         AND algorithm = $3 AND key_id = $4",
                    )
                    .bind(user.as_str())
                    .bind(device.as_str())
                    .bind(algorithm)
                    .bind(&key_id)
                    .execute(txn.conn())
                    .await?;
                    Some((key_id, key))
                } else {
                    let fallback: Option<(String, String)> = sqlx::query_as(
                        "SELECT key_id, key_json FROM fallback_keys WHERE user_id = $1 \
                         AND device_id = $2 AND algorithm = $3",
                    )
                    .bind(user.as_str())
                    .bind(device.as_str())
                    .bind(algorithm)
                    .fetch_optional(txn.conn())
                    .await?;
                    if fallback.is_some() {
                        sqlx::query(
                            "UPDATE fallback_keys SET used = 1 WHERE user_id = $1 \
                             AND device_id = $2 AND algorithm = $3",
                        )
                        .bind(user.as_str())
                        .bind(device.as_str())
                        .bind(algorithm)
                        .execute(txn.conn())
                        .await?;
                    }
                    fallback
                };
                if let Some((key_id, key)) = claimed {
                    let key: Value = serde_json::from_str(&key)?;
                    by_device.insert(device.to_string(), json!({ key_id: key }));
                }
            }
            if !by_device.is_empty() {
                out.insert(user.to_string(), Value::Object(by_device));
            }
        }
        txn.commit().await?;
        self.counts.forget();
        Ok(out)
    }
}

/// Splits `algorithm:id`.
fn split_key_id(key_id: &str) -> Result<(&str, &str)> {
    key_id
        .split_once(':')
        .filter(|(a, i)| !a.is_empty() && !i.is_empty())
        .ok_or_else(|| Error::InvalidParam(format!("key id {key_id} is not algorithm:id")))
}

/// The public key of a cross-signing key object (its one `ed25519:<key>` entry).
pub(super) fn public_key_of(key: &Value) -> Option<String> {
    key.get("keys")?
        .as_object()?
        .keys()
        .find_map(|k| k.strip_prefix("ed25519:"))
        .map(str::to_owned)
}
