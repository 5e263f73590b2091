//! Server keys. A 64-hex server name is self-certifying: its verify key is the name itself, so
//! no key server is asked. Any other (DNS) name's keys come from its key server
//! (`GET /_matrix/key/v2/server` over HTTPS), checked against the document's own signature and
//! kept (in memory, and in the database across restarts) until their `valid_until_ts`. The `X-Matrix` request checks and event
//! signature checks are built on both.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use grove_overlay::tls::keys::NodeKey;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedServerName,
    ServerName,
    room_version_rules::RoomVersionRules,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet, Verified, verify_event, verify_json},
};
use tracing::debug;

use crate::client::Client;

/// The key ID every Grove node signs with.
pub const KEY_ID: &str = "ed25519:grove";

/// Whether a server name is 64 lower-case hex: an overlay key, never a DNS name (a DNS label
/// is at most 63 characters).
pub fn is_hex_name(server: &ServerName) -> bool {
    let name = server.as_str();
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The overlay key (and ed25519 verify key) a server name stands for, if it is 64 hex.
pub fn node_key(server: &ServerName) -> Option<NodeKey> {
    if !is_hex_name(server) {
        return None;
    }
    NodeKey::from_hex(server.as_str())
}

/// The key set of one self-certifying server under `key_id`.
fn key_set(server: &str, key_id: &str) -> Option<PublicKeySet> {
    let name = ServerName::parse(server).ok()?;
    let key = node_key(&name)?;
    let mut set = PublicKeySet::new();
    set.insert(key_id.to_owned(), Base64::new(key.as_bytes().to_vec()));
    Some(set)
}

/// Keys for every self-certifying server that signed `object`, under the key IDs it used.
fn keys_of_signers(object: &CanonicalJsonObject) -> PublicKeyMap {
    let mut map = PublicKeyMap::new();
    if let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") {
        for (server, sigs) in signatures {
            let CanonicalJsonValue::Object(sigs) = sigs else {
                continue;
            };
            for key_id in sigs.keys() {
                if let Some(set) = key_set(server, key_id) {
                    map.entry(server.clone()).or_default().extend(set);
                }
            }
        }
    }
    map
}

/// Why an event's signatures or hashes were refused.
#[derive(Debug, thiserror::Error)]
pub enum EventCheckError {
    /// A required signature is missing or wrong.
    #[error("bad signature: {0}")]
    Signature(String),
    /// The content hash does not match.
    #[error("content hash mismatch")]
    Hash,
}

/// Checks `object`'s signatures against `map` and its content hash.
fn verify_with(
    map: &PublicKeyMap,
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<(), EventCheckError> {
    match verify_event(map, object, rules) {
        Ok(Verified::All) => Ok(()),
        Ok(Verified::Signatures) => Err(EventCheckError::Hash),
        Err(e) => Err(EventCheckError::Signature(e.to_string())),
    }
}

/// The key map to check an `X-Matrix` header from a self-certifying `origin` under `key_id`.
pub fn request_keys(origin: &ServerName, key_id: &str) -> Option<PublicKeyMap> {
    let set = key_set(origin.as_str(), key_id)?;
    let mut map = PublicKeyMap::new();
    map.insert(origin.to_string(), set);
    Some(map)
}

/// How long after a failed or fruitless key fetch a server is not asked again.
const REFETCH_AFTER: Duration = Duration::from_secs(10);

/// Servers with a fetch slot remembered, at most (beyond that, idle ones are forgotten).
const MAX_FETCH_SLOTS: usize = 1024;
/// Servers whose keys are kept, at most; past that expired ones go, then all.
const MAX_KNOWN_SERVERS: usize = 4096;

/// The largest key document read.
const MAX_KEY_DOCUMENT_BYTES: usize = 64 * 1024;

/// The keys one DNS-named server published, and until when they hold.
#[derive(Debug, Clone)]
struct ServerKeys {
    /// Key ID to public key.
    keys: BTreeMap<String, Base64>,
    /// `valid_until_ts`, in milliseconds since the epoch.
    valid_until_ms: u64,
}

/// The keys of DNS-named servers, fetched from their key servers and kept in memory and in the
/// database; hex names
/// are answered from the name alone.
pub struct KeyRing {
    client: Client,
    /// Where fetched keys are kept across restarts.
    storage: grove_server::Storage,
    known: Mutex<HashMap<OwnedServerName, ServerKeys>>,
    /// One fetch at a time per server: callers arriving meanwhile wait for its outcome.
    fetching: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
}

impl KeyRing {
    /// A key ring fetching with `client`.
    pub fn new(client: Client, storage: grove_server::Storage) -> Self {
        Self {
            client,
            storage,
            known: Mutex::default(),
            fetching: Mutex::default(),
        }
    }

    /// The keys of `server` when they include `key_id`: from the name if it is hex, else from
    /// memory while valid, else as stored at an earlier fetch while valid, else from its key
    /// server.
    pub async fn server_keys(&self, server: &ServerName, key_id: &str) -> Option<PublicKeySet> {
        if is_hex_name(server) {
            return key_set(server.as_str(), key_id);
        }
        if let Some(set) = self.cached(server, key_id) {
            return Some(set);
        }
        let slot = {
            let mut fetching = self.fetching.lock().ok()?;
            // Any request names its origin: forget idle slots rather than grow without bound.
            if fetching.len() >= MAX_FETCH_SLOTS {
                fetching.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            fetching.entry(server.to_owned()).or_default().clone()
        };
        // Holds the time of the last fruitless fetch.
        let mut last_failure = slot.lock().await;
        // Another caller may have fetched while this one waited.
        if let Some(set) = self.cached(server, key_id) {
            return Some(set);
        }
        if let Some(keys) = self.stored(server).await {
            self.remember(server, keys);
            if let Some(set) = self.cached(server, key_id) {
                return Some(set);
            }
        }
        if last_failure.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return None;
        }
        match self.fetch(server).await {
            Ok(keys) => {
                let stored = grove_server::server_keys::StoredKeys {
                    keys: keys
                        .keys
                        .iter()
                        .map(|(id, key)| (id.clone(), key.encode()))
                        .collect(),
                    valid_until_ms: keys.valid_until_ms,
                };
                if let Err(e) =
                    grove_server::server_keys::store(&self.storage, server, &stored).await
                {
                    debug!(%server, error = %e, "server keys not stored");
                }
                self.remember(server, keys);
            }
            Err(e) => debug!(%server, error = %e, "fetching server keys"),
        }
        let found = self.cached(server, key_id);
        *last_failure = if found.is_some() {
            None
        } else {
            Some(Instant::now())
        };
        found
    }

    /// Keeps `keys` of `server` in memory.
    fn remember(&self, server: &ServerName, keys: ServerKeys) {
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= MAX_KNOWN_SERVERS {
                let now = now_ms();
                known.retain(|_, k| k.valid_until_ms > now);
                if known.len() >= MAX_KNOWN_SERVERS {
                    known.clear();
                }
            }
            known.insert(server.to_owned(), keys);
        }
    }

    /// The keys stored for `server` at an earlier fetch, while still valid.
    async fn stored(&self, server: &ServerName) -> Option<ServerKeys> {
        let stored = match grove_server::server_keys::load(&self.storage, server).await {
            Ok(stored) => stored?,
            Err(e) => {
                debug!(%server, error = %e, "stored server keys not read");
                return None;
            }
        };
        if stored.valid_until_ms <= now_ms() {
            return None;
        }
        let keys = stored
            .keys
            .iter()
            .filter_map(|(id, key)| Base64::parse(key).ok().map(|k| (id.clone(), k)))
            .collect();
        Some(ServerKeys {
            keys,
            valid_until_ms: stored.valid_until_ms,
        })
    }

    fn cached(&self, server: &ServerName, key_id: &str) -> Option<PublicKeySet> {
        let known = self.known.lock().ok()?;
        let keys = known.get(server)?;
        if keys.valid_until_ms <= now_ms() || !keys.keys.contains_key(key_id) {
            return None;
        }
        Some(
            keys.keys
                .iter()
                .map(|(id, key)| (id.clone(), key.clone()))
                .collect(),
        )
    }

    async fn fetch(&self, server: &ServerName) -> Result<ServerKeys, String> {
        let doc = self
            .client
            .get_public(server, "/_matrix/key/v2/server", MAX_KEY_DOCUMENT_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        verify_key_document(server, doc, now_ms())
    }

    /// The key map to check an `X-Matrix` header from `origin` under `key_id`.
    pub async fn request_keys(&self, origin: &ServerName, key_id: &str) -> Option<PublicKeyMap> {
        let set = self.server_keys(origin, key_id).await?;
        let mut map = PublicKeyMap::new();
        map.insert(origin.to_string(), set);
        Some(map)
    }

    /// Checks the signatures an event needs (its sender's server, and others the room version
    /// asks for) and its content hash. Hex signers' keys are their names; DNS signers' keys
    /// are fetched first when not known.
    pub async fn check_event(
        &self,
        object: &CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<(), EventCheckError> {
        let mut map = keys_of_signers(object);
        if let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") {
            for (server, sigs) in signatures {
                let (Ok(name), CanonicalJsonValue::Object(sigs)) =
                    (ServerName::parse(server), sigs)
                else {
                    continue;
                };
                if is_hex_name(&name) {
                    continue;
                }
                for key_id in sigs.keys() {
                    if let Some(set) = self.server_keys(&name, key_id).await {
                        map.entry(server.clone()).or_default().extend(set);
                        break;
                    }
                }
            }
        }
        verify_with(&map, object, rules)
    }
}

fn now_ms() -> u64 {
    u64::from(MilliSecondsSinceUnixEpoch::now().get())
}

/// The keys in `server`'s key document, when the document is `server`'s, still valid at
/// `now_ms`, and signed by every key it lists.
fn verify_key_document(
    server: &ServerName,
    doc: serde_json::Value,
    now_ms: u64,
) -> Result<ServerKeys, String> {
    let Ok(CanonicalJsonValue::Object(object)) = CanonicalJsonValue::try_from(doc) else {
        return Err("the key document is not a canonical JSON object".into());
    };
    match object.get("server_name") {
        Some(CanonicalJsonValue::String(name)) if name == server.as_str() => {}
        _ => return Err("the key document names another server".into()),
    }
    let valid_until_ms = match object.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
        _ => return Err("the key document has no valid_until_ts".into()),
    };
    if valid_until_ms <= now_ms {
        return Err("the key document has expired".into());
    }
    let Some(CanonicalJsonValue::Object(verify_keys)) = object.get("verify_keys") else {
        return Err("the key document has no verify_keys".into());
    };
    let signatures = match object.get("signatures") {
        Some(CanonicalJsonValue::Object(all)) => match all.get(server.as_str()) {
            Some(CanonicalJsonValue::Object(own)) => own,
            _ => return Err("the key document is not signed by its server".into()),
        },
        _ => return Err("the key document is not signed".into()),
    };
    let mut keys = BTreeMap::new();
    for (key_id, entry) in verify_keys {
        let Some(CanonicalJsonValue::String(encoded)) = (match entry {
            CanonicalJsonValue::Object(entry) => entry.get("key"),
            _ => None,
        }) else {
            return Err(format!("verify key {key_id} has no key"));
        };
        let key = Base64::parse(encoded).map_err(|e| format!("verify key {key_id}: {e}"))?;
        let Some(signature) = signatures.get(key_id) else {
            return Err(format!("the key document is not signed with {key_id}"));
        };
        // Checked one key at a time, against its own signature only: each listed key must
        // have signed the document.
        let mut single = object.clone();
        let mut own = CanonicalJsonObject::new();
        own.insert(key_id.clone(), signature.clone());
        let mut by_server = CanonicalJsonObject::new();
        by_server.insert(server.to_string(), CanonicalJsonValue::Object(own));
        single.insert("signatures".into(), CanonicalJsonValue::Object(by_server));
        let mut set = PublicKeySet::new();
        set.insert(key_id.clone(), key.clone());
        let mut map = PublicKeyMap::new();
        map.insert(server.to_string(), set);
        verify_json(&map, &single).map_err(|e| format!("signature by {key_id}: {e}"))?;
        keys.insert(key_id.clone(), key);
    }
    if keys.is_empty() {
        return Err("the key document lists no key".into());
    }
    Ok(ServerKeys {
        keys,
        valid_until_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signed_document(name: &str, valid_until: u64) -> (grove_server::NodeKey, serde_json::Value) {
        let key = grove_server::NodeKey::generate().expect("key");
        let doc = json!({
            "server_name": name,
            "valid_until_ts": valid_until,
            "verify_keys": { key.key_id(): { "key": Base64::<ruma::serde::base64::Standard, _>::new(key.public_bytes().to_vec()).encode() } },
            "old_verify_keys": {},
        });
        let Ok(CanonicalJsonValue::Object(mut object)) = CanonicalJsonValue::try_from(doc) else {
            panic!("object");
        };
        ruma::signatures::sign_json(name, key.key_pair(), &mut object).expect("signed");
        (key, serde_json::to_value(object).expect("json"))
    }

    #[test]
    fn a_key_document_is_taken_only_when_it_is_the_servers_own_and_valid() {
        let name = ServerName::parse("example.org").expect("name");
        let now = 1_000_000;
        let (key, doc) = signed_document("example.org", now + 1000);
        let keys = verify_key_document(&name, doc.clone(), now).expect("valid document");
        assert_eq!(
            keys.keys.get(&key.key_id()).map(|k| k.as_bytes().to_vec()),
            Some(key.public_bytes().to_vec())
        );
        // Expired.
        assert!(verify_key_document(&name, doc.clone(), now + 1000).is_err());
        // Another server's document.
        let other = ServerName::parse("example.com").expect("name");
        assert!(verify_key_document(&other, doc.clone(), now).is_err());
        // Tampered with after signing.
        let mut tampered = doc.clone();
        tampered["valid_until_ts"] = json!(now + 2000);
        assert!(verify_key_document(&name, tampered, now).is_err());
        // A key swapped in that did not sign.
        let (_, forged) = signed_document("example.org", now + 1000);
        let mut swapped = doc;
        swapped["verify_keys"] = forged["verify_keys"].clone();
        assert!(verify_key_document(&name, swapped, now).is_err());
    }
}
