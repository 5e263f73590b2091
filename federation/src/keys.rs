//! Self-certifying server names: the verify key of a 64-hex server name is the name itself, so
//! no key server is asked. Also the `X-Matrix` request signatures and event signature checks
//! built on that.

use grove_overlay::tls::keys::NodeKey;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, ServerName,
    room_version_rules::RoomVersionRules,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet, Verified, verify_event},
};

/// The key ID every Grove node signs with.
pub const KEY_ID: &str = "ed25519:grove";

/// The overlay key (and ed25519 verify key) a server name stands for, if it is 64 hex.
pub fn node_key(server: &ServerName) -> Option<NodeKey> {
    let name = server.as_str();
    if name.len() != 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    NodeKey::from_hex(name)
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

/// Checks the signatures an event needs (its sender's server, and others the room version
/// asks for) against the keys in the signers' names, and its content hash.
pub fn check_event(
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<(), EventCheckError> {
    let map = keys_of_signers(object);
    match verify_event(&map, object, rules) {
        Ok(Verified::All) => Ok(()),
        Ok(Verified::Signatures) => Err(EventCheckError::Hash),
        Err(e) => Err(EventCheckError::Signature(e.to_string())),
    }
}

/// The key map to check an `X-Matrix` header from `origin` under `key_id`.
pub fn request_keys(origin: &ServerName, key_id: &str) -> Option<PublicKeyMap> {
    let set = key_set(origin.as_str(), key_id)?;
    let mut map = PublicKeyMap::new();
    map.insert(origin.to_string(), set);
    Some(map)
}
