//! Cross-signing keys (master, self-signing, user-signing) and uploaded signatures.

use ruma::UserId;
use serde_json::Value;

use super::{E2ee, device_keys::public_key_of};
use crate::{Error, Result, accounts::record_device_change};

/// The three cross-signing keys of an upload; absent ones are left as they are.
#[derive(Debug, Clone, Default)]
pub struct CrossSigningUpload {
    /// The master key.
    pub master: Option<Value>,
    /// The self-signing key.
    pub self_signing: Option<Value>,
    /// The user-signing key.
    pub user_signing: Option<Value>,
}

impl CrossSigningUpload {
    fn keys(&self) -> [(&'static str, Option<&Value>); 3] {
        [
            ("master", self.master.as_ref()),
            ("self_signing", self.self_signing.as_ref()),
            ("user_signing", self.user_signing.as_ref()),
        ]
    }
}

impl E2ee {
    /// A stored cross-signing key (`master`, `self_signing` or `user_signing`).
    pub async fn cross_signing_key(&self, user: &UserId, key_type: &str) -> Result<Option<Value>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT key_json FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2",
        )
        .bind(user.as_str())
        .bind(key_type)
        .fetch_optional(self.storage.pool())
        .await?;
        row.map(|(k,)| serde_json::from_str(&k).map_err(Error::from))
            .transpose()
    }

    /// Whether the upload would replace a stored key with a different one: only such an
    /// upload needs user-interactive auth (the first upload and repeats do not).
    pub async fn cross_signing_upload_replaces(
        &self,
        user: &UserId,
        upload: &CrossSigningUpload,
    ) -> Result<bool> {
        for (key_type, new) in upload.keys() {
            let Some(new) = new else { continue };
            if let Some(old) = self.cross_signing_key(user, key_type).await?
                && &old != new
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores cross-signing keys after checking each names `user` and its usage.
    pub async fn upload_cross_signing(
        &self,
        user: &UserId,
        upload: &CrossSigningUpload,
    ) -> Result<()> {
        for (key_type, key) in upload.keys() {
            let Some(key) = key else { continue };
            if key.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
                return Err(Error::InvalidParam(format!(
                    "{key_type} key names another user"
                )));
            }
            let usage_ok = key
                .get("usage")
                .and_then(Value::as_array)
                .is_some_and(|u| u.iter().any(|x| x.as_str() == Some(key_type)));
            if !usage_ok || public_key_of(key).is_none() {
                return Err(Error::InvalidParam(format!(
                    "{key_type} key needs usage [{key_type}] and one ed25519 key"
                )));
            }
        }
        let has_master =
            upload.master.is_some() || self.cross_signing_key(user, "master").await?.is_some();
        if !has_master {
            return Err(Error::InvalidParam(
                "upload a master key before the other cross-signing keys".into(),
            ));
        }
        let mut txn = self.storage.write().await?;
        for (key_type, key) in upload.keys() {
            let Some(key) = key else { continue };
            sqlx::query("DELETE FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2")
                .bind(user.as_str())
                .bind(key_type)
                .execute(txn.conn())
                .await?;
            sqlx::query(
                "INSERT INTO cross_signing_keys (user_id, key_type, key_json) \
                 VALUES ($1, $2, $3)",
            )
            .bind(user.as_str())
            .bind(key_type)
            .bind(serde_json::to_string(key)?)
            .execute(txn.conn())
            .await?;
        }
        let position = txn.next_position().0;
        record_device_change(txn.conn(), user, position).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Stores the signatures `signer` made on other keys. `signed` is user → key ID (a device
    /// ID or a cross-signing public key) → the signed object. Returns the failures, as
    /// user → key ID → error object.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        signed: &serde_json::Map<String, Value>,
    ) -> Result<serde_json::Map<String, Value>> {
        let mut failures = serde_json::Map::new();
        let mut txn = self.storage.write().await?;
        let mut changed = Vec::new();
        for (target_user, keys) in signed {
            let Some(keys) = keys.as_object() else {
                continue;
            };
            for (key_id, object) in keys {
                let sigs = object
                    .get("signatures")
                    .and_then(|s| s.get(signer.as_str()))
                    .and_then(Value::as_object);
                let Some(sigs) = sigs.filter(|s| !s.is_empty()) else {
                    let entry = failures
                        .entry(target_user.clone())
                        .or_insert_with(|| Value::Object(Default::default()));
                    if let Value::Object(entry) = entry {
                        entry.insert(
                            key_id.clone(),
                            serde_json::json!({ "errcode": "M_INVALID_SIGNATURE",
                                "error": "No signature by the uploader" }),
                        );
                    }
                    continue;
                };
                for (signer_key, signature) in sigs {
                    let Some(signature) = signature.as_str() else {
                        continue;
                    };
                    sqlx::query(
                        "DELETE FROM key_signatures WHERE target_user_id = $1 \
                         AND target_key_id = $2 AND signer_user_id = $3 AND signer_key_id = $4",
                    )
                    .bind(target_user)
                    .bind(key_id)
                    .bind(signer.as_str())
                    .bind(signer_key)
                    .execute(txn.conn())
                    .await?;
                    sqlx::query(
                        "INSERT INTO key_signatures (target_user_id, target_key_id, \
                         signer_user_id, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(target_user)
                    .bind(key_id)
                    .bind(signer.as_str())
                    .bind(signer_key)
                    .bind(signature)
                    .execute(txn.conn())
                    .await?;
                }
                if let Ok(user) = UserId::parse(target_user.as_str())
                    && !changed.contains(&user)
                {
                    changed.push(user);
                }
            }
        }
        if !changed.is_empty() {
            let position = txn.next_position().0;
            for user in &changed {
                record_device_change(txn.conn(), user, position).await?;
            }
        }
        txn.commit().await?;
        Ok(failures)
    }
}
