//! Server keys. A 64-hex server name is self-certifying: its verify key is the name itself, so
//! no key server is asked; when the home has a replica document (see [`crate::homes`]), the
//! keys it certifies sign for the name instead, and the peers it lists speak for it. Any
//! other (DNS) name's keys come from its key server
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

use crate::{
    client::Client,
    homes::{self, HomeError, Homes},
};

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

/// How long after a peer failed to show a document listing it as a replica of a home the
/// peer's key server is not asked again.
const ADMIT_REFETCH_AFTER: Duration = Duration::from_secs(10);

/// Peers whose failed admission is remembered, at most.
const MAX_ADMIT_FAILURES: usize = 1024;

/// The key set of one self-certifying server under `key_id`.
fn key_set(server: &str, key_id: &str) -> Option<PublicKeySet> {
    let name = ServerName::parse(server).ok()?;
    let key = node_key(&name)?;
    let mut set = PublicKeySet::new();
    set.insert(key_id.to_owned(), Base64::new(key.as_bytes().to_vec()));
    Some(set)
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

/// How far ahead a key document is trusted at most, whatever its `valid_until_ts` says (the
/// spec's cap for room versions 5 and later).
const MAX_KEY_VALIDITY_MS: u64 = 7 * 24 * 3600 * 1000;

/// One key of a DNS-named server and the last moment it may have signed anything.
#[derive(Debug, Clone)]
struct VerifyKey {
    key: Base64,
    /// A current key's `valid_until_ts` (capped), an old key's `expired_ts`.
    until_ms: u64,
}

/// The keys one DNS-named server published, and until when they hold.
#[derive(Debug, Clone)]
struct ServerKeys {
    /// Key ID to key: the current keys and the old ones.
    keys: BTreeMap<String, VerifyKey>,
    /// `valid_until_ts` (capped), in milliseconds since the epoch: until then the document is
    /// used without asking again.
    valid_until_ms: u64,
}

impl ServerKeys {
    /// The key `key_id` if it may have signed at `at_ms`.
    fn key_at(&self, key_id: &str, at_ms: u64) -> Option<PublicKeySet> {
        let key = self.keys.get(key_id).filter(|k| at_ms <= k.until_ms)?;
        let mut set = PublicKeySet::new();
        set.insert(key_id.to_owned(), key.key.clone());
        Some(set)
    }

    /// Whether the document may be used without asking again.
    fn fresh(&self) -> bool {
        self.valid_until_ms > now_ms()
    }
}

/// The keys of DNS-named servers, fetched from their key servers and kept in memory and in the
/// database; hex names
/// are answered from the name alone.
///
/// A key is used for what it may have signed: a current key up to the document's
/// `valid_until_ts` (at most seven days ahead), an old key (`old_verify_keys`) up to its
/// `expired_ts`. Requests are checked at the present moment, events at their
/// `origin_server_ts`. A document past its `valid_until_ts` is asked for again (at most once
/// in [`REFETCH_AFTER`]); until a newer one comes, its keys still check older events.
pub struct KeyRing {
    client: Client,
    /// The replica documents of hex-named homes.
    homes: Arc<Homes>,
    /// Peers whose key server lately showed no document listing them, and when.
    admit_failures: Mutex<HashMap<(OwnedServerName, NodeKey), Instant>>,
    /// Where fetched keys are kept across restarts.
    storage: grove_server::Storage,
    known: Mutex<HashMap<OwnedServerName, ServerKeys>>,
    /// One fetch at a time per server: callers arriving meanwhile wait for its outcome.
    fetching: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
}

impl KeyRing {
    /// A key ring fetching with `client`, hex names' keys read from `homes`' documents.
    pub fn new(client: Client, storage: grove_server::Storage, homes: Arc<Homes>) -> Self {
        Self {
            client,
            homes,
            admit_failures: Mutex::default(),
            storage,
            known: Mutex::default(),
            fetching: Mutex::default(),
        }
    }

    /// The key `key_id` of `server` if it is valid now (see [`KeyRing::key_at`]).
    pub async fn server_keys(&self, server: &ServerName, key_id: &str) -> Option<PublicKeySet> {
        self.key_at(server, key_id, now_ms()).await
    }

    /// The key `key_id` of `server` if it may have signed at `at_ms`: from the name if it is
    /// hex, else from memory while the document is fresh, else as stored at an earlier fetch
    /// while fresh, else from its key server (and, failing that, from the stale document).
    pub async fn key_at(
        &self,
        server: &ServerName,
        key_id: &str,
        at_ms: u64,
    ) -> Option<PublicKeySet> {
        if is_hex_name(server) {
            return self.hex_key(server, key_id, at_ms).await;
        }
        if let Some(set) = self.cached(server, key_id, at_ms, true) {
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
        if let Some(set) = self.cached(server, key_id, at_ms, true) {
            return Some(set);
        }
        if let Some(keys) = self.stored(server).await
            && keys.key_at(key_id, at_ms).is_some()
        {
            self.remember(server, keys);
            return self.cached(server, key_id, at_ms, true);
        }
        if last_failure.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return self.cached(server, key_id, at_ms, false);
        }
        match self.fetch(server).await {
            Ok(keys) => {
                let stored = grove_server::server_keys::StoredKeys {
                    keys: keys
                        .keys
                        .iter()
                        .filter(|(_, k)| k.until_ms == keys.valid_until_ms)
                        .map(|(id, k)| (id.clone(), k.key.encode()))
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
        let found = self.cached(server, key_id, at_ms, false);
        *last_failure = if found.is_some() {
            None
        } else {
            Some(Instant::now())
        };
        found
    }

    /// The replica documents of homes.
    pub fn homes(&self) -> &Arc<Homes> {
        &self.homes
    }

    /// The key `key_id` of the hex-named `server` for something signed at `at_ms`: what its
    /// replica document certifies when one is held, else the name itself.
    async fn hex_key(&self, server: &ServerName, key_id: &str, at_ms: u64) -> Option<PublicKeySet> {
        let Some(doc) = self.homes.document(server).await else {
            return key_set(server.as_str(), key_id);
        };
        let key = match homes::certified_key(&doc, key_id, at_ms) {
            Some(key) => key,
            // What a home whose key is a listed replica's node key signed under a key ID its
            // document does not name (before replica key IDs, say) is the name's own.
            None if !homes::names_key_id(&doc, key_id)
                && doc.replica(server.as_str()).is_some() =>
            {
                return key_set(server.as_str(), key_id);
            }
            None => return None,
        };
        let mut set = PublicKeySet::new();
        set.insert(key_id.to_owned(), key);
        Some(set)
    }

    /// Whether overlay peer `peer` may speak for the hex-named `home`: it is the home's own
    /// key, or the newest document of the home lists it. A held document that does not list
    /// the peer (or none) is checked against the one the peer's key server serves, at most
    /// once in [`ADMIT_REFETCH_AFTER`] per peer and home; refusals are counted.
    pub async fn admit(&self, home: &ServerName, peer: &NodeKey) -> Result<(), HomeError> {
        if node_key(home).as_ref() == Some(peer) {
            return Ok(());
        }
        let hex = peer.to_hex();
        if let Some(doc) = self.homes.document(home).await
            && doc.replica(&hex).is_some()
        {
            return Ok(());
        }
        let not_replica = || HomeError::NotReplica {
            home: home.to_owned(),
            peer: hex.clone(),
        };
        let slot = (home.to_owned(), *peer);
        let recently = match self.admit_failures.lock() {
            Ok(failures) => failures
                .get(&slot)
                .is_some_and(|at| at.elapsed() < ADMIT_REFETCH_AFTER),
            Err(_) => false,
        };
        if recently {
            let error = not_replica();
            self.homes.refused(&error);
            return Err(error);
        }
        let outcome = match self.fetch_document(home, peer).await {
            Ok(doc) if doc.replica(&hex).is_some() => Ok(()),
            Ok(_) => Err(not_replica()),
            Err(e) => Err(e),
        };
        if let Ok(mut failures) = self.admit_failures.lock() {
            match &outcome {
                Ok(()) => {
                    failures.remove(&slot);
                }
                Err(_) => {
                    if failures.len() >= MAX_ADMIT_FAILURES {
                        failures.retain(|_, at| at.elapsed() < ADMIT_REFETCH_AFTER);
                        if failures.len() >= MAX_ADMIT_FAILURES {
                            failures.clear();
                        }
                    }
                    failures.insert(slot, Instant::now());
                }
            }
        }
        if let Err(e @ HomeError::NotReplica { .. }) = &outcome {
            self.homes.refused(e);
        }
        outcome
    }

    /// The document of `home` that `peer`'s key server serves, offered to the held ones (the
    /// newest is answered; an older one is refused and counted).
    async fn fetch_document(
        &self,
        home: &ServerName,
        peer: &NodeKey,
    ) -> Result<Arc<grove_server::home::ReplicaDocument>, HomeError> {
        let fetch_error = |reason: String| HomeError::Fetch {
            home: home.to_owned(),
            peer: peer.to_hex(),
            reason,
        };
        let keys = self
            .client
            .get_public_at(
                *peer,
                home,
                "/_matrix/key/v2/server",
                MAX_KEY_DOCUMENT_BYTES,
            )
            .await
            .map_err(|e| fetch_error(e.to_string()))?;
        let value = keys
            .get(crate::routes::REPLICA_DOCUMENT_FIELD)
            .ok_or_else(|| fetch_error("its key server serves no replica document".into()))?;
        match self.homes.offer(home, value).await {
            Ok(doc) => Ok(doc),
            // The peer's is older than the one held: the held one decides.
            Err(HomeError::Document(grove_server::home::DocumentError::NotNewer { .. })) => self
                .homes
                .document(home)
                .await
                .ok_or_else(|| fetch_error("no document held".into())),
            Err(e) => Err(e),
        }
    }

    /// Keeps `keys` of `server` in memory.
    fn remember(&self, server: &ServerName, keys: ServerKeys) {
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= MAX_KNOWN_SERVERS {
                known.retain(|_, k| k.fresh());
                if known.len() >= MAX_KNOWN_SERVERS {
                    known.clear();
                }
            }
            known.insert(server.to_owned(), keys);
        }
    }

    /// The keys stored for `server` at an earlier fetch, while still fresh.
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
            .filter_map(|(id, key)| {
                let key = Base64::parse(key).ok()?;
                Some((
                    id.clone(),
                    VerifyKey {
                        key,
                        until_ms: stored.valid_until_ms,
                    },
                ))
            })
            .collect();
        Some(ServerKeys {
            keys,
            valid_until_ms: stored.valid_until_ms,
        })
    }

    /// The key from memory, if it may have signed at `at_ms` (and, when `fresh_only`, if the
    /// document need not be asked for again).
    fn cached(
        &self,
        server: &ServerName,
        key_id: &str,
        at_ms: u64,
        fresh_only: bool,
    ) -> Option<PublicKeySet> {
        let known = self.known.lock().ok()?;
        let keys = known.get(server)?;
        if fresh_only && !keys.fresh() {
            return None;
        }
        keys.key_at(key_id, at_ms)
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

    /// The key map to check an `X-Matrix` header from the hex-named `home` that came over
    /// `peer`'s overlay session: the key the home's document lists for `peer` itself, under
    /// its key ID. Another replica's key, or a revoked one, does not sign for this session: a
    /// replica speaks for the home with its own key only. A peer that is the home key itself
    /// signs with the name, under a key ID the document gives no other key.
    pub async fn peer_request_keys(
        &self,
        home: &ServerName,
        key_id: &str,
        peer: &NodeKey,
    ) -> Option<PublicKeyMap> {
        let doc = self.homes.document(home).await;
        let listed = doc.as_deref().and_then(|d| d.replica(&peer.to_hex()));
        let set = match listed {
            Some(replica) if replica.key_id == key_id => {
                let mut set = PublicKeySet::new();
                set.insert(key_id.to_owned(), Base64::parse(&replica.key).ok()?);
                set
            }
            _ if node_key(home).as_ref() == Some(peer)
                && !doc
                    .as_deref()
                    .is_some_and(|d| homes::names_key_id(d, key_id)) =>
            {
                key_set(home.as_str(), key_id)?
            }
            _ => return None,
        };
        let mut map = PublicKeyMap::new();
        map.insert(home.to_string(), set);
        Some(map)
    }

    /// Checks the signatures an event needs (its sender's server, and others the room version
    /// asks for) and its content hash. Hex signers' keys are their names; DNS signers' keys
    /// are fetched first when not known, and (in every supported room version) count only
    /// if they were valid at the event's `origin_server_ts`.
    pub async fn check_event(
        &self,
        object: &CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<(), EventCheckError> {
        let at_ms = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) if rules.enforce_key_validity => {
                u64::try_from(i64::from(*ts)).unwrap_or(0)
            }
            _ => 0,
        };
        // A home's revoked keys are refused for anything stamped after their `expired_ts`,
        // whatever the room version says of key validity.
        let stamped_ms = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
            _ => u64::MAX,
        };
        let mut unknown_homes = Vec::new();
        let map = self
            .event_keys(object, at_ms, stamped_ms, Some(&mut unknown_homes))
            .await;
        let checked = verify_with(&map, object, rules);
        if !matches!(checked, Err(EventCheckError::Signature(_))) || unknown_homes.is_empty() {
            return checked;
        }
        // An event relayed from a home this node never met (a join's answer, backfill,
        // missing events): its replicas sign with keys only the home's document names. The
        // document is looked up on the ring (at most once per home in a while) and the
        // event checked again with what it certifies.
        let mut found = false;
        for home in &unknown_homes {
            found |= self
                .homes
                .look_up(self.client.overlay(), home)
                .await
                .is_some();
        }
        if !found {
            return checked;
        }
        let map = self.event_keys(object, at_ms, stamped_ms, None).await;
        verify_with(&map, object, rules)
    }

    /// The keys of every server that signed `object`, DNS servers' at `at_ms`, homes' at
    /// `stamped_ms`. Hex signers with no document held are added to `unknown_homes`.
    async fn event_keys(
        &self,
        object: &CanonicalJsonObject,
        at_ms: u64,
        stamped_ms: u64,
        mut unknown_homes: Option<&mut Vec<OwnedServerName>>,
    ) -> PublicKeyMap {
        let mut map = PublicKeyMap::new();
        let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") else {
            return map;
        };
        for (server, sigs) in signatures {
            let (Ok(name), CanonicalJsonValue::Object(sigs)) = (ServerName::parse(server), sigs)
            else {
                continue;
            };
            let hex = is_hex_name(&name);
            if hex
                && let Some(unknown) = unknown_homes.as_deref_mut()
                && self.homes.document(&name).await.is_none()
            {
                unknown.push(name.to_owned());
            }
            for key_id in sigs.keys() {
                let set = if hex {
                    self.hex_key(&name, key_id, stamped_ms).await
                } else {
                    self.key_at(&name, key_id, at_ms).await
                };
                if let Some(set) = set {
                    map.entry(server.clone()).or_default().extend(set);
                    if !hex {
                        break;
                    }
                }
            }
        }
        map
    }
}

fn now_ms() -> u64 {
    u64::from(MilliSecondsSinceUnixEpoch::now().get())
}

/// The keys in `server`'s key document, when the document is `server`'s and signed by every
/// current key it lists. A document past its `valid_until_ts` is taken (its keys still check
/// what they signed before then) but is not fresh.
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
    }
    .min(now_ms.saturating_add(MAX_KEY_VALIDITY_MS));
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
        keys.insert(
            key_id.clone(),
            VerifyKey {
                key,
                until_ms: valid_until_ms,
            },
        );
    }
    if keys.is_empty() {
        return Err("the key document lists no key".into());
    }
    // Old keys are vouched for by the current ones' signatures over the whole document; a
    // malformed entry costs that entry only. A current key is never shadowed by an old entry.
    if let Some(CanonicalJsonValue::Object(old)) = object.get("old_verify_keys") {
        for (key_id, entry) in old {
            let CanonicalJsonValue::Object(entry) = entry else {
                continue;
            };
            let (Some(CanonicalJsonValue::String(encoded)), Some(CanonicalJsonValue::Integer(ts))) =
                (entry.get("key"), entry.get("expired_ts"))
            else {
                continue;
            };
            let (Ok(key), Ok(expired)) = (Base64::parse(encoded), u64::try_from(i64::from(*ts)))
            else {
                continue;
            };
            keys.entry(key_id.clone()).or_insert(VerifyKey {
                key,
                until_ms: expired.min(valid_until_ms),
            });
        }
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
            keys.keys
                .get(&key.key_id())
                .map(|k| k.key.as_bytes().to_vec()),
            Some(key.public_bytes().to_vec())
        );
        assert!(keys.key_at(&key.key_id(), now + 1000).is_some());
        // Expired: still good for what it signed before, but not after.
        let stale = verify_key_document(&name, doc.clone(), now + 1000).expect("stale document");
        assert!(stale.key_at(&key.key_id(), now).is_some());
        assert!(stale.key_at(&key.key_id(), now + 1001).is_none());
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
