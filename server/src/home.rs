//! The home: the ed25519 key that owns a 64-hex server name, and the replica documents it
//! signs.
//!
//! A home key signs documents, never events. A [`ReplicaDocument`] lists the nodes that serve
//! the home (their overlay node keys) and the key each of them signs events and requests with,
//! and the replica keys it no longer vouches for (`revoked`, with the moment they stopped).
//! Documents are versioned: a node keeps the newest version it holds of each home
//! ([`store`] refuses anything not newer), and a new version is always above both the one it
//! replaces and the clock in milliseconds ([`next_version`]), so a home recovered from its key
//! alone still outranks every document issued before.
//!
//! The signature covers [`DOCUMENT_CONTEXT`] followed by the canonical JSON of every field but
//! `signature`: the context keeps a document signature from ever passing for the signature of
//! an event, a request or anything else the home key could be asked to sign.
//!
//! A [`ReplicaDocument`] value is always a checked one: it is made by [`ReplicaDocument::parse`]
//! (which verifies) or by a method that signs, never by filling in fields.

use std::{collections::HashSet, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;
use ruma::{CanonicalJsonValue, OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};

use crate::{Error, NodeKey, Result, Storage};

/// What a document signature covers before the document's canonical JSON.
pub const DOCUMENT_CONTEXT: &[u8] = b"grove replica document v1\0";
/// The most replicas one document lists.
pub const MAX_REPLICAS: usize = 64;
/// The most revoked keys one document lists; revoking past it forgets the oldest.
pub const MAX_REVOKED: usize = 32;
/// The largest document accepted, in bytes of JSON.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024;
/// The largest integer canonical JSON carries (2^53 − 1).
const MAX_JSON_INT: u64 = (1 << 53) - 1;

/// Why a replica document was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The document is longer than [`MAX_DOCUMENT_BYTES`].
    #[error("replica document of {0} bytes is larger than {MAX_DOCUMENT_BYTES}")]
    TooLarge(usize),
    /// The document is not the expected JSON, or a field is out of range.
    #[error("malformed replica document: {0}")]
    Malformed(String),
    /// A node key, key ID or public key appears twice.
    #[error("replica document lists {0} twice")]
    Duplicate(String),
    /// The signature is not the home key's over this document.
    #[error("replica document not signed by its home key")]
    BadSignature,
    /// The document is for another home than the one asked about.
    #[error("replica document is for {found}, not {expected}")]
    OtherHome {
        /// The home asked about.
        expected: String,
        /// The home the document names.
        found: String,
    },
    /// A document of this version or a newer one is already held.
    #[error("replica document version {got} is not newer than the held version {held}")]
    NotNewer {
        /// The version held.
        held: u64,
        /// The version offered.
        got: u64,
    },
    /// The node key to revoke is not a replica of the home.
    #[error("node key {0} is not a replica of this home")]
    UnknownReplica(String),
    /// Revoking would leave the home served by nobody.
    #[error("node key {0} is the home's last replica")]
    LastReplica(String),
}

/// The key that owns a home: its public key in hex is the server name.
pub struct HomeKey {
    signing: SigningKey,
}

impl HomeKey {
    /// A home key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// A fresh random home key.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// Reads the key stored at `path` (64 hex characters of seed), `None` when there is no
    /// file.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        Ok(crate::keys::read_seed(path)?.map(Self::from_seed))
    }

    /// Stores the key at `path`, readable by the owner only; an existing file is an error.
    pub fn store(&self, path: &Path) -> Result<()> {
        crate::keys::write_private(path, &hex::encode(self.seed()))
            .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))
    }

    /// The 32-byte seed, for export.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public key bytes.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The server name this key owns: its public key as 64 lower-case hex characters.
    pub fn server_name(&self) -> OwnedServerName {
        server_name_of(&self.public_bytes())
    }
}

impl std::fmt::Debug for HomeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeKey")
            .field("public", &hex::encode(self.public_bytes()))
            .finish_non_exhaustive()
    }
}

/// The server name of a home or node public key.
fn server_name_of(public: &[u8; 32]) -> OwnedServerName {
    // 64 hex characters are always a valid DNS-style server name.
    ServerName::parse(hex::encode(public)).expect("hex is a valid server name")
}

/// One node serving the home, and the key it signs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    /// The node's overlay key, 64 lower-case hex characters.
    pub node_key: String,
    /// The ID of its signing key, `ed25519:<short id>`.
    pub key_id: String,
    /// Its signing public key, unpadded base64.
    pub key: String,
}

impl Replica {
    /// The entry of the node holding `node`, which signs with `node` itself.
    pub fn for_node(node: &NodeKey) -> Self {
        Self {
            node_key: node.hex(),
            key_id: node.key_id(),
            key: STANDARD_NO_PAD.encode(node.public_bytes()),
        }
    }
}

/// A replica key the home no longer vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedKey {
    /// The key's ID, `ed25519:<short id>`.
    pub key_id: String,
    /// The public key, unpadded base64.
    pub key: String,
    /// When it stopped being vouched for, in milliseconds since the epoch: anything it signs
    /// stamped later is refused.
    pub expired_ts: u64,
}

/// The fields the signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    server_name: String,
    version: u64,
    issued_ts: u64,
    replicas: Vec<Replica>,
    revoked: Vec<RevokedKey>,
}

/// The document on the wire: the body's fields and the signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    server_name: String,
    version: u64,
    issued_ts: u64,
    replicas: Vec<Replica>,
    revoked: Vec<RevokedKey>,
    signature: String,
}

impl Wire {
    fn new(body: Body, signature: String) -> Self {
        Self {
            server_name: body.server_name,
            version: body.version,
            issued_ts: body.issued_ts,
            replicas: body.replicas,
            revoked: body.revoked,
            signature,
        }
    }

    fn split(self) -> (Body, String) {
        let body = Body {
            server_name: self.server_name,
            version: self.version,
            issued_ts: self.issued_ts,
            replicas: self.replicas,
            revoked: self.revoked,
        };
        (body, self.signature)
    }
}

/// A checked replica document: signed by its home key, within bounds, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaDocument {
    body: Body,
    signature: String,
}

impl ReplicaDocument {
    /// The first document of `home`, with `replica` as its only replica.
    pub fn first(home: &HomeKey, replica: Replica, now_ms: u64) -> Result<Self, DocumentError> {
        let body = Body {
            server_name: home.server_name().to_string(),
            version: next_version(None, now_ms),
            issued_ts: now_ms,
            replicas: vec![replica],
            revoked: Vec::new(),
        };
        Self::sign(home, body)
    }

    /// The next document: this one with `replica` added (a replica with the same node key is
    /// replaced).
    pub fn with_replica(
        &self,
        home: &HomeKey,
        replica: Replica,
        now_ms: u64,
    ) -> Result<Self, DocumentError> {
        let mut body = self.next_body(home, now_ms)?;
        body.replicas.retain(|r| r.node_key != replica.node_key);
        body.replicas.push(replica);
        Self::sign(home, body)
    }

    /// The next document: this one without the replica whose node key is `node_key` (hex),
    /// its signing key listed as revoked from `now_ms`.
    pub fn without_replica(
        &self,
        home: &HomeKey,
        node_key: &str,
        now_ms: u64,
    ) -> Result<Self, DocumentError> {
        let node_key = node_key.trim().to_ascii_lowercase();
        let mut body = self.next_body(home, now_ms)?;
        let Some(at) = body.replicas.iter().position(|r| r.node_key == node_key) else {
            return Err(DocumentError::UnknownReplica(node_key));
        };
        if body.replicas.len() == 1 {
            return Err(DocumentError::LastReplica(node_key));
        }
        let gone = body.replicas.remove(at);
        body.revoked.push(RevokedKey {
            key_id: gone.key_id,
            key: gone.key,
            expired_ts: now_ms,
        });
        if body.revoked.len() > MAX_REVOKED {
            // The oldest go first: a key forgotten here is no longer certified at all, so
            // what it signs is refused all the same.
            body.revoked.sort_by_key(|r| r.expired_ts);
            let extra = body.revoked.len() - MAX_REVOKED;
            body.revoked.drain(..extra);
        }
        Self::sign(home, body)
    }

    /// This document's body for the next version, checked to be `home`'s.
    fn next_body(&self, home: &HomeKey, now_ms: u64) -> Result<Body, DocumentError> {
        let name = home.server_name();
        if self.body.server_name != name.as_str() {
            return Err(DocumentError::OtherHome {
                expected: name.to_string(),
                found: self.body.server_name.clone(),
            });
        }
        let mut body = self.body.clone();
        body.version = next_version(Some(self.body.version), now_ms);
        body.issued_ts = now_ms;
        Ok(body)
    }

    /// Signs `body` with `home` and checks the result as any received document is checked.
    fn sign(home: &HomeKey, body: Body) -> Result<Self, DocumentError> {
        let message = signed_bytes(&body)?;
        let signature = STANDARD_NO_PAD.encode(home.signing.sign(&message).to_bytes());
        let doc = Self { body, signature };
        let encoded = doc.to_json_string();
        Self::parse(encoded.as_bytes())
    }

    /// Parses and checks a document: size, shape, bounds, no duplicates, and the signature of
    /// the key its server name stands for.
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(DocumentError::TooLarge(bytes.len()));
        }
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| DocumentError::Malformed(e.to_string()))?;
        Self::check(wire)
    }

    /// Parses and checks a document given as JSON (see [`ReplicaDocument::parse`]).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, DocumentError> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| DocumentError::Malformed(e.to_string()))?;
        Self::parse(&bytes)
    }

    fn check(wire: Wire) -> Result<Self, DocumentError> {
        let (body, signature) = wire.split();
        let home = public_key_hex(&body.server_name)
            .ok_or_else(|| DocumentError::Malformed("server_name is not a home key".into()))?;
        if body.version == 0 || body.version > MAX_JSON_INT || body.issued_ts > MAX_JSON_INT {
            return Err(DocumentError::Malformed(
                "version or issued_ts out of range".into(),
            ));
        }
        if body.replicas.is_empty() || body.replicas.len() > MAX_REPLICAS {
            return Err(DocumentError::Malformed(format!(
                "{} replicas (1 to {MAX_REPLICAS})",
                body.replicas.len()
            )));
        }
        if body.revoked.len() > MAX_REVOKED {
            return Err(DocumentError::Malformed(format!(
                "{} revoked keys (at most {MAX_REVOKED})",
                body.revoked.len()
            )));
        }
        let mut node_keys = HashSet::new();
        let mut key_ids = HashSet::new();
        let mut keys = HashSet::new();
        for replica in &body.replicas {
            public_key_hex(&replica.node_key).ok_or_else(|| {
                DocumentError::Malformed(format!("node key {:?}", replica.node_key))
            })?;
            if !node_keys.insert(replica.node_key.as_str()) {
                return Err(DocumentError::Duplicate(format!(
                    "node key {}",
                    replica.node_key
                )));
            }
        }
        let listed = body
            .replicas
            .iter()
            .map(|r| (&r.key_id, &r.key, None))
            .chain(
                body.revoked
                    .iter()
                    .map(|r| (&r.key_id, &r.key, Some(r.expired_ts))),
            );
        for (key_id, key, expired) in listed {
            check_key_id(key_id)?;
            public_key_base64(key)
                .ok_or_else(|| DocumentError::Malformed(format!("key of {key_id}")))?;
            if expired.is_some_and(|ts| ts > MAX_JSON_INT) {
                return Err(DocumentError::Malformed(format!("expired_ts of {key_id}")));
            }
            if !key_ids.insert(key_id.as_str()) {
                return Err(DocumentError::Duplicate(format!("key ID {key_id}")));
            }
            if !keys.insert(key.as_str()) {
                return Err(DocumentError::Duplicate(format!("key {key}")));
            }
        }
        let signature = STANDARD_NO_PAD
            .decode(signature.as_bytes())
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .map(|bytes| Signature::from_bytes(&bytes))
            .ok_or(DocumentError::BadSignature)?;
        let message = signed_bytes(&body)?;
        home.verify_strict(&message, &signature)
            .map_err(|_| DocumentError::BadSignature)?;
        Ok(Self {
            body,
            signature: STANDARD_NO_PAD.encode(signature.to_bytes()),
        })
    }

    /// `Ok` when this document may replace a held one of version `held`.
    pub fn newer_than(&self, held: Option<u64>) -> Result<(), DocumentError> {
        match held {
            Some(held) if held >= self.body.version => Err(DocumentError::NotNewer {
                held,
                got: self.body.version,
            }),
            _ => Ok(()),
        }
    }

    /// The home's server name.
    pub fn server_name(&self) -> &str {
        &self.body.server_name
    }

    /// The version, higher for every newer document.
    pub fn version(&self) -> u64 {
        self.body.version
    }

    /// When the home key signed it, in milliseconds since the epoch.
    pub fn issued_ts(&self) -> u64 {
        self.body.issued_ts
    }

    /// The nodes serving the home.
    pub fn replicas(&self) -> &[Replica] {
        &self.body.replicas
    }

    /// The replica keys no longer vouched for.
    pub fn revoked(&self) -> &[RevokedKey] {
        &self.body.revoked
    }

    /// The replica entry of the node whose key is `node_key` (hex).
    pub fn replica(&self, node_key: &str) -> Option<&Replica> {
        self.body.replicas.iter().find(|r| r.node_key == node_key)
    }

    /// The document as JSON, signature included.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(Wire::new(self.body.clone(), self.signature.clone()))
            .unwrap_or(serde_json::Value::Null)
    }

    /// The document as JSON text, signature included.
    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }
}

/// The version of a document replacing one of version `held` at `now_ms`: above both.
pub fn next_version(held: Option<u64>, now_ms: u64) -> u64 {
    held.map_or(1, |v| v.saturating_add(1))
        .max(now_ms)
        .min(MAX_JSON_INT)
}

/// What the home key signs for `body`: the context, then the canonical JSON.
fn signed_bytes(body: &Body) -> Result<Vec<u8>, DocumentError> {
    let value = serde_json::to_value(body).map_err(|e| DocumentError::Malformed(e.to_string()))?;
    let canonical = CanonicalJsonValue::try_from(value)
        .map_err(|e| DocumentError::Malformed(format!("not canonical JSON: {e}")))?;
    let mut message = DOCUMENT_CONTEXT.to_vec();
    message.extend_from_slice(canonical.to_string().as_bytes());
    Ok(message)
}

/// The ed25519 key a 64 lower-case hex string stands for.
fn public_key_hex(text: &str) -> Option<VerifyingKey> {
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let bytes: [u8; 32] = hex::decode(text).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// The ed25519 key an unpadded base64 string stands for.
fn public_key_base64(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = STANDARD_NO_PAD.decode(text).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// A key ID as Matrix allows them: `ed25519:` and 1 to 32 of `[A-Za-z0-9_]`.
fn check_key_id(key_id: &str) -> Result<(), DocumentError> {
    let ok = key_id.strip_prefix("ed25519:").is_some_and(|version| {
        (1..=32).contains(&version.len())
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    if ok {
        Ok(())
    } else {
        Err(DocumentError::Malformed(format!("key ID {key_id:?}")))
    }
}

/// The newest document held for `server`, if any.
pub async fn load(storage: &Storage, server: &ServerName) -> Result<Option<ReplicaDocument>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT document FROM replica_documents WHERE server_name = $1")
            .bind(server.as_str())
            .fetch_optional(storage.pool())
            .await?;
    let Some((text,)) = row else {
        return Ok(None);
    };
    ReplicaDocument::parse(text.as_bytes())
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("stored replica document of {server}: {e}")))
}

/// Keeps `doc` as its home's newest document. `Ok(false)` when a document of the same or a
/// newer version is held already (it stays).
pub async fn store(storage: &Storage, doc: &ReplicaDocument) -> Result<bool> {
    let version = i64::try_from(doc.version())
        .map_err(|_| Error::Internal("replica document version out of range".into()))?;
    let mut txn = storage.write().await?;
    // One statement decides: concurrent stores of two versions keep the newer either way.
    let done = sqlx::query(
        "INSERT INTO replica_documents (server_name, version, document) VALUES ($1, $2, $3) \
         ON CONFLICT (server_name) DO UPDATE SET version = excluded.version, \
         document = excluded.document WHERE replica_documents.version < excluded.version",
    )
    .bind(doc.server_name())
    .bind(version)
    .bind(doc.to_json_string())
    .execute(txn.conn())
    .await?;
    txn.commit().await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests;
