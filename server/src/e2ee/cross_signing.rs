//! Cross-signing keys (master, self-signing, user-signing) and uploaded signatures, which are
//! verified before they are stored.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ed25519_dalek::{Signature, VerifyingKey};
use ruma::{CanonicalJsonValue, OwnedUserId, UserId};
use serde_json::{Value, json};

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
        self.stored_key(
            "SELECT key_json FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2",
            user,
            key_type,
        )
        .await
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

    /// Verifies and stores the signatures `signer` made on keys. `signed` is user → key ID (a
    /// device ID or a cross-signing public key) → the signed object. Returns the failures, as
    /// user → key ID → error object; a failed signature is not stored.
    ///
    /// What may sign what, as the spec has it: the signer's own devices are signed by their
    /// self-signing key; their own master key by one of their devices; another user's master
    /// key by the signer's user-signing key. The signed object must be the stored key (apart
    /// from `signatures` and `unsigned`) and each signature must verify.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        signed: &serde_json::Map<String, Value>,
    ) -> Result<serde_json::Map<String, Value>> {
        let mut failures = serde_json::Map::new();
        let mut accepted: Vec<Accepted> = Vec::new();
        for (target_user, keys) in signed {
            let Some(keys) = keys.as_object() else {
                continue;
            };
            for (key_id, object) in keys {
                match self
                    .check_signatures(signer, target_user, key_id, object)
                    .await?
                {
                    Ok(mut good) => accepted.append(&mut good),
                    Err(failure) => {
                        let entry = failures
                            .entry(target_user.clone())
                            .or_insert_with(|| Value::Object(Default::default()));
                        if let Value::Object(entry) = entry {
                            entry.insert(key_id.clone(), failure.to_json());
                        }
                    }
                }
            }
        }
        if accepted.is_empty() {
            return Ok(failures);
        }
        let mut txn = self.storage.write().await?;
        let mut changed: Vec<&UserId> = Vec::new();
        for sig in &accepted {
            sqlx::query(
                "DELETE FROM key_signatures WHERE target_user_id = $1 \
                 AND target_key_id = $2 AND signer_user_id = $3 AND signer_key_id = $4",
            )
            .bind(sig.target_user.as_str())
            .bind(&sig.target_key)
            .bind(signer.as_str())
            .bind(&sig.signer_key)
            .execute(txn.conn())
            .await?;
            sqlx::query(
                "INSERT INTO key_signatures (target_user_id, target_key_id, \
                 signer_user_id, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(sig.target_user.as_str())
            .bind(&sig.target_key)
            .bind(signer.as_str())
            .bind(&sig.signer_key)
            .bind(&sig.signature)
            .execute(txn.conn())
            .await?;
            if !changed.contains(&&*sig.target_user) {
                changed.push(&sig.target_user);
            }
        }
        let position = txn.next_position().0;
        for user in changed {
            record_device_change(txn.conn(), user, position).await?;
        }
        txn.commit().await?;
        Ok(failures)
    }

    /// Checks the signatures `signer` put on one key: the signatures to store, or why none is.
    async fn check_signatures(
        &self,
        signer: &UserId,
        target_user: &str,
        key_id: &str,
        object: &Value,
    ) -> Result<std::result::Result<Vec<Accepted>, Refused>> {
        let Ok(target) = UserId::parse(target_user) else {
            return Ok(Err(Refused::NotFound("not a user ID".into())));
        };
        let Some(uploaded) = object
            .get("signatures")
            .and_then(|s| s.get(signer.as_str()))
            .and_then(Value::as_object)
            .filter(|s| !s.is_empty())
        else {
            return Ok(Err(Refused::Invalid("no signature by the uploader".into())));
        };
        // Which stored key is signed, and which public keys may sign it (key ID → public key).
        let (stored, signers): (Value, Vec<(String, String)>) = if target.as_str()
            == signer.as_str()
        {
            let master = self.cross_signing_key(signer, "master").await?;
            if let Some(master) = master.filter(|m| public_key_of(m).as_deref() == Some(key_id)) {
                // The master key, signed by one of the user's devices.
                (master, self.device_signing_keys(signer).await?)
            } else if let Some(device) = self.device_keys_of(signer, key_id).await? {
                let Some(self_signing) = self.cross_signing_key(signer, "self_signing").await?
                else {
                    return Ok(Err(Refused::Invalid("no self-signing key".into())));
                };
                (device, signing_key(&self_signing).into_iter().collect())
            } else {
                return Ok(Err(Refused::NotFound(format!("unknown key {key_id}"))));
            }
        } else {
            let master = self.cross_signing_key(&target, "master").await?;
            let Some(master) = master.filter(|m| public_key_of(m).as_deref() == Some(key_id))
            else {
                return Ok(Err(Refused::NotFound(format!(
                    "{key_id} is not the master key of {target}"
                ))));
            };
            let Some(user_signing) = self.cross_signing_key(signer, "user_signing").await? else {
                return Ok(Err(Refused::Invalid("no user-signing key".into())));
            };
            (master, signing_key(&user_signing).into_iter().collect())
        };
        if signable(object) != signable(&stored) {
            return Ok(Err(Refused::Invalid(
                "the signed object is not the stored key".into(),
            )));
        }
        let message = canonical(&signable(&stored))?;
        let mut good = Vec::new();
        for (signer_key, public) in &signers {
            let Some(signature) = uploaded.get(signer_key).and_then(Value::as_str) else {
                continue;
            };
            if !verifies(public, &message, signature) {
                return Ok(Err(Refused::Invalid(format!(
                    "the signature by {signer_key} does not verify"
                ))));
            }
            good.push(Accepted {
                target_user: target.clone(),
                target_key: key_id.to_owned(),
                signer_key: signer_key.clone(),
                signature: signature.to_owned(),
            });
        }
        if good.is_empty() {
            return Ok(Err(Refused::Invalid(
                "no signature by a key allowed to sign this key".into(),
            )));
        }
        Ok(Ok(good))
    }

    /// The stored device keys of one device.
    async fn device_keys_of(&self, user: &UserId, device: &str) -> Result<Option<Value>> {
        self.stored_key(
            "SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2",
            user,
            device,
        )
        .await
    }

    /// The key JSON `sql` selects for `user` and a key name.
    async fn stored_key(&self, sql: &str, user: &UserId, name: &str) -> Result<Option<Value>> {
        let row: Option<(String,)> = sqlx::query_as(sql)
            .bind(user.as_str())
            .bind(name)
            .fetch_optional(self.storage.pool())
            .await?;
        row.map(|(k,)| serde_json::from_str(&k).map_err(Error::from))
            .transpose()
    }

    /// The ed25519 keys of a user's devices, as (`ed25519:<device>`, public key).
    async fn device_signing_keys(&self, user: &UserId) -> Result<Vec<(String, String)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT device_id, key_json FROM device_keys WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_all(self.storage.pool())
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(device, json)| {
                let keys: Value = serde_json::from_str(&json).ok()?;
                let key_id = format!("ed25519:{device}");
                let public = keys.get("keys")?.get(&key_id)?.as_str()?.to_owned();
                Some((key_id, public))
            })
            .collect())
    }
}

/// A verified signature, ready to store.
struct Accepted {
    target_user: OwnedUserId,
    target_key: String,
    signer_key: String,
    signature: String,
}

/// Why the signatures on one key were refused.
enum Refused {
    /// The signed key is unknown.
    NotFound(String),
    /// The signature is missing, made by a key not allowed to sign, or does not verify.
    Invalid(String),
}

impl Refused {
    fn to_json(&self) -> Value {
        match self {
            Refused::NotFound(why) => json!({ "errcode": "M_NOT_FOUND", "error": why }),
            Refused::Invalid(why) => json!({ "errcode": "M_INVALID_SIGNATURE", "error": why }),
        }
    }
}

/// The key ID (`ed25519:<public key>`) and public key of a cross-signing key.
fn signing_key(key: &Value) -> Option<(String, String)> {
    let public = public_key_of(key)?;
    Some((format!("ed25519:{public}"), public))
}

/// What a signature covers: the object without `signatures` and `unsigned`.
fn signable(object: &Value) -> Value {
    let mut object = object.clone();
    if let Value::Object(map) = &mut object {
        map.remove("signatures");
        map.remove("unsigned");
    }
    object
}

/// The canonical JSON text of a value.
fn canonical(value: &Value) -> Result<String> {
    let value = CanonicalJsonValue::try_from(value.clone())
        .map_err(|e| Error::InvalidParam(format!("key is not canonical JSON: {e}")))?;
    Ok(value.to_string())
}

/// Whether `signature` (unpadded base64) is `public`'s (unpadded base64) ed25519 signature of
/// `message`.
fn verifies(public: &str, message: &str, signature: &str) -> bool {
    let decode = |text: &str| STANDARD_NO_PAD.decode(text.trim_end_matches('=')).ok();
    let Some(public) = decode(public).and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&public) else {
        return false;
    };
    let Some(signature) = decode(signature).and_then(|b| Signature::from_slice(&b).ok()) else {
        return false;
    };
    key.verify_strict(message.as_bytes(), &signature).is_ok()
}
