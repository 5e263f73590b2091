//! A hostile server hosting a room that a Grove user joins. The host is no Grove node: it is an
//! axum router behind Grove's own TLS listener, named `localhost:<port>` with a certificate
//! from the test's CA, answering every federation request as the test scripts it. Its events
//! are built and signed here (ruma signatures, under key IDs the test picks), so it can lie in
//! ways a real server would not: state from other rooms, unsigned events, contradictory state,
//! forged history, deep and wide DAGs, rotated and expired keys.
//!
//! The victim is a real Grove node federating over TLS (`federation_tls::start_tls_node`).

mod history;
mod keys;
mod send_join;
mod wide;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{OriginalUri, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
};
use grove_federation::{client::Client, tls};
use grove_server::rooms::builder;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedServerName,
    RoomVersionId, ServerName,
    room_version_rules::RoomVersionRules,
    serde::{Base64, base64::Standard},
    signatures::Ed25519KeyPair,
};
use serde_json::{Value, json};

use crate::support::{TestNode, TestUser, enc};
use crate::{federation_tls::start_tls_node, tls_ca::TestCa};

/// A request the host received.
#[derive(Debug, Clone)]
pub(crate) struct Asked {
    /// The path and query.
    pub(crate) path: String,
    /// The JSON body (`Null` when none).
    pub(crate) body: Value,
}

/// What the host answers to one request.
pub(crate) struct Reply {
    /// The status.
    pub(crate) status: u16,
    /// The JSON body.
    pub(crate) body: Value,
    /// How long the host waits before answering.
    pub(crate) delay: Duration,
}

impl Reply {
    /// A 200 with `body`.
    pub(crate) fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body,
            delay: Duration::ZERO,
        }
    }
}

/// The test's answer for requests it scripts, given the honest host's answer body; `None`
/// leaves the honest answer.
type Script = Arc<dyn Fn(&Asked, &Room, &Value) -> Option<Reply> + Send + Sync>;

/// A signing key of the host, under a key ID of the test's choice.
#[derive(Clone)]
pub(crate) struct HostKey {
    /// The key ID (`ed25519:<version>`).
    pub(crate) id: String,
    seed: [u8; 32],
}

impl HostKey {
    /// A fresh key under `ed25519:<version>`.
    pub(crate) fn generate(version: &str) -> HostKey {
        let seed = grove_server::NodeKey::generate().expect("key").seed();
        HostKey {
            id: format!("ed25519:{version}"),
            seed,
        }
    }

    /// The key pair (from a PKCS#8 v1 document around the seed).
    pub(crate) fn pair(&self) -> Ed25519KeyPair {
        let mut der = hex_bytes("302e020100300506032b657004220420");
        der.extend_from_slice(&self.seed);
        let version = self.id.trim_start_matches("ed25519:").to_owned();
        Ed25519KeyPair::from_der(&der, version).expect("key parsed")
    }

    /// The public key, unpadded base64.
    pub(crate) fn public(&self) -> String {
        Base64::<Standard, _>::new(self.pair().public_key().to_vec()).encode()
    }
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The room the host holds: its events in order, its state, its head.
pub(crate) struct Room {
    /// The host's name.
    pub(crate) server: OwnedServerName,
    /// The room ID.
    pub(crate) id: String,
    /// The room version's rules.
    pub(crate) rules: RoomVersionRules,
    /// Every event, oldest first, by ID.
    pub(crate) events: Vec<(String, Value)>,
    /// State key to event ID.
    pub(crate) state: BTreeMap<(String, String), String>,
    /// The newest event.
    pub(crate) head: String,
    /// The head's depth.
    pub(crate) depth: u64,
}

impl Room {
    /// The event with ID `id`.
    pub(crate) fn event(&self, id: &str) -> Option<&Value> {
        self.events.iter().find(|(e, _)| e == id).map(|(_, v)| v)
    }

    /// The current state events.
    pub(crate) fn state_events(&self) -> Vec<Value> {
        self.state
            .values()
            .filter_map(|id| self.event(id).cloned())
            .collect()
    }

    /// Every event, oldest first.
    pub(crate) fn all_events(&self) -> Vec<Value> {
        self.events.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The auth events an event of `kind`/`state_key` by `sender` needs, from the state.
    fn auth_for(&self, kind: &str, state_key: Option<&str>, sender: &str) -> Vec<String> {
        let mut keys = vec![
            ("m.room.create".to_owned(), String::new()),
            ("m.room.power_levels".to_owned(), String::new()),
            ("m.room.member".to_owned(), sender.to_owned()),
        ];
        if kind == "m.room.member" {
            keys.push(("m.room.join_rules".to_owned(), String::new()));
            if let Some(key) = state_key {
                keys.push(("m.room.member".to_owned(), key.to_owned()));
            }
        }
        let mut out: Vec<String> = keys
            .iter()
            .filter_map(|k| self.state.get(k).cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// An unsigned event of `kind` by `sender` over the head, as the host would build it.
    pub(crate) fn template(
        &self,
        kind: &str,
        state_key: Option<&str>,
        sender: &str,
        content: Value,
    ) -> CanonicalJsonObject {
        let prev: Vec<String> = if self.head.is_empty() {
            Vec::new()
        } else {
            vec![self.head.clone()]
        };
        let mut event = json!({
            "type": kind,
            "room_id": self.id,
            "sender": sender,
            "content": content,
            "origin_server_ts": MilliSecondsSinceUnixEpoch::now().get(),
            "depth": self.depth + 1,
            "prev_events": prev,
            "auth_events": self.auth_for(kind, state_key, sender),
        });
        if let Some(key) = state_key {
            event["state_key"] = key.into();
        }
        canonical(event)
    }

    /// Takes a signed event into the room: it becomes the head (and state, for a state event).
    pub(crate) fn push(&mut self, id: String, event: Value) {
        if let Some(key) = event["state_key"].as_str() {
            let kind = event["type"].as_str().unwrap_or_default().to_owned();
            self.state.insert((kind, key.to_owned()), id.clone());
        }
        self.depth = event["depth"].as_u64().unwrap_or(self.depth + 1);
        self.head = id.clone();
        self.events.push((id, event));
    }
}

/// The host's mutable parts.
struct Inner {
    /// Keys in the key document, the first one signing events.
    keys: Vec<HostKey>,
    /// Keys listed as old, with their `expired_ts`.
    old_keys: Vec<(String, String, u64)>,
    /// The key requests are signed with (`ed25519:grove`), always listed.
    request_key: HostKey,
    /// The document's `valid_until_ts`.
    valid_until: u64,
    room: Room,
    script: Option<Script>,
    asked: Vec<Asked>,
}

/// The hostile host and the victim node that trusts its CA.
pub(crate) struct Host {
    /// The host's server name (`localhost:<port>`).
    pub(crate) name: OwnedServerName,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
    request_key: HostKey,
    /// The victim.
    pub(crate) victim: TestNode,
    /// A user of the victim.
    pub(crate) alice: TestUser,
    ca: TestCa,
}

/// The host's user who created the room.
pub(crate) fn mallory(host: &ServerName) -> String {
    format!("@mallory:{host}")
}

impl Host {
    /// A host holding a public v10 room made by mallory, and a victim on SQLite.
    pub(crate) async fn new() -> Host {
        Self::with_key(HostKey::generate("grove")).await
    }

    /// As [`Host::new`], the host signing with `key`.
    pub(crate) async fn with_key(key: HostKey) -> Host {
        let request_key = if key.id == "ed25519:grove" {
            key.clone()
        } else {
            HostKey::generate("grove")
        };
        let ca = TestCa::new("host");
        let victim = start_tls_node(grove_server::storage::Backend::Sqlite, &ca, &ca).await;
        let alice = victim.register("alice").await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let name = ServerName::parse(format!("localhost:{port}")).expect("host name");
        let rules = builder::rules_for(&RoomVersionId::V10).expect("rules");
        let room = Room {
            server: name.clone(),
            id: format!("!hosted:{name}"),
            rules,
            events: Vec::new(),
            state: BTreeMap::new(),
            head: String::new(),
            depth: 0,
        };
        let inner = Arc::new(Mutex::new(Inner {
            keys: vec![key],
            request_key: request_key.clone(),
            old_keys: Vec::new(),
            valid_until: now_ms() + 24 * 3600 * 1000,
            room,
            script: None,
            asked: Vec::new(),
        }));
        let (chain, key_path) = ca.leaf(&format!("host-{port}"));
        let settings = tls::TlsSettings::from_pem_files(
            SocketAddr::from(([127, 0, 0, 1], port)),
            &chain,
            &key_path,
            &[] as &[std::path::PathBuf],
        )
        .expect("TLS settings");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&settings).expect("TLS"));
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .expect("host listens");
        let router = Router::new().fallback(answer).with_state(inner.clone());
        let task = tokio::spawn(grove_federation::inbound::serve_tls(
            listener,
            acceptor,
            router,
            grove_clientapi::serve::ServeConfig::default(),
            grove_federation::metrics::Metrics::new(),
        ));
        let host = Host {
            name,
            inner,
            task,
            request_key,
            victim,
            alice,
            ca,
        };
        let creator = mallory(&host.name);
        host.add(
            "m.room.create",
            Some(""),
            &creator,
            json!({ "creator": creator, "room_version": "10" }),
        );
        host.add(
            "m.room.member",
            Some(&creator),
            &creator,
            json!({ "membership": "join" }),
        );
        host.add(
            "m.room.power_levels",
            Some(""),
            &creator,
            json!({ "users": { creator.clone(): 100 } }),
        );
        host.add(
            "m.room.join_rules",
            Some(""),
            &creator,
            json!({ "join_rule": "public" }),
        );
        host.add(
            "m.room.history_visibility",
            Some(""),
            &creator,
            json!({ "history_visibility": "shared" }),
        );
        host
    }

    /// The room's ID.
    pub(crate) fn room_id(&self) -> String {
        self.with_room(|r| r.id.clone())
    }

    /// Runs `f` over the host's room.
    pub(crate) fn with_room<T>(&self, f: impl FnOnce(&mut Room) -> T) -> T {
        let mut inner = self.inner.lock().expect("host lock");
        f(&mut inner.room)
    }

    /// Builds, signs and takes into the room an event; its ID and JSON.
    pub(crate) fn add(
        &self,
        kind: &str,
        state_key: Option<&str>,
        sender: &str,
        content: Value,
    ) -> (String, Value) {
        let object = self.with_room(|r| r.template(kind, state_key, sender, content));
        let (id, event) = self.sign(object);
        self.with_room(|r| r.push(id.clone(), event.clone()));
        (id, event)
    }

    /// Hashes and signs `object` with the host's signing key; its ID and JSON.
    pub(crate) fn sign(&self, object: CanonicalJsonObject) -> (String, Value) {
        let key = self
            .inner
            .lock()
            .expect("host lock")
            .keys
            .first()
            .expect("a key")
            .clone();
        self.sign_with(&key, object)
    }

    /// Hashes and signs `object` with `key`; its ID and JSON.
    pub(crate) fn sign_with(
        &self,
        key: &HostKey,
        mut object: CanonicalJsonObject,
    ) -> (String, Value) {
        let inner = self.inner.lock().expect("host lock");
        let key = key.pair();
        ruma::signatures::hash_and_sign_event(
            self.name.as_str(),
            &key,
            &mut object,
            &inner.room.rules.redaction,
        )
        .expect("signed");
        let id = builder::event_id_of(&object, &inner.room.rules).expect("event ID");
        (
            id.to_string(),
            serde_json::to_value(CanonicalJsonValue::Object(object)).expect("JSON"),
        )
    }

    /// Sets the test's script; requests it does not answer get the honest answer.
    pub(crate) fn script(
        &self,
        script: impl Fn(&Asked, &Room, &Value) -> Option<Reply> + Send + Sync + 'static,
    ) {
        self.inner.lock().expect("host lock").script = Some(Arc::new(script));
    }

    /// Changes the host's keys: `keys` listed as current (the first signing), `old` as old
    /// with their `expired_ts`, the document valid until `valid_until`.
    pub(crate) fn set_keys(&self, keys: Vec<HostKey>, old: Vec<(&HostKey, u64)>, valid_until: u64) {
        let mut inner = self.inner.lock().expect("host lock");
        inner.old_keys = old
            .into_iter()
            .map(|(k, ts)| (k.id.clone(), k.public(), ts))
            .collect();
        inner.keys = keys;
        inner.valid_until = valid_until;
    }

    /// The requests received whose path starts with `prefix`.
    pub(crate) fn asked(&self, prefix: &str) -> Vec<Asked> {
        self.inner
            .lock()
            .expect("host lock")
            .asked
            .iter()
            .filter(|a| a.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Alice's join of the room through the host: the status and body the client sees.
    pub(crate) async fn join(&self) -> (StatusCode, Value) {
        let room = self.room_id();
        let (status, body) = self
            .victim
            .post(
                &format!("/_matrix/client/v3/join/{}?via={}", enc(&room), self.name),
                Some(&self.alice.token),
                json!({}),
            )
            .await;
        (StatusCode::from_u16(status.as_u16()).expect("status"), body)
    }

    /// Whether the victim holds the room at all.
    pub(crate) async fn victim_knows_room(&self) -> bool {
        let room = ruma::RoomId::parse(self.room_id()).expect("room ID");
        self.victim
            .node()
            .homeserver()
            .rooms
            .is_known(&room)
            .await
            .expect("read")
    }

    /// Whether the victim stored event `id`.
    pub(crate) async fn victim_has(&self, id: &str) -> bool {
        self.victim
            .node()
            .homeserver()
            .rooms
            .pdu(id)
            .await
            .expect("read")
            .is_some()
    }

    /// A federation client signing as the host, trusting the test's CA.
    pub(crate) fn client(&self) -> Client {
        let pem = std::fs::read(self.ca.ca_pem()).expect("CA PEM");
        let roots = tls::certificates_from_pem(&pem).expect("CA certificates");
        // Requests are signed under `ed25519:grove`, the key ID of a Grove node key.
        let key = grove_server::NodeKey::from_seed(self.request_key.seed).expect("node key");
        Client::new(
            self.victim.node().overlay().expect("overlay").clone(),
            Arc::new(key),
            self.name.clone(),
        )
        .with_tls(tls::client_config(&roots).expect("client config"))
    }

    /// Sends `pdus` to the victim in one transaction as the host; the answer's `pdus`.
    pub(crate) async fn send(&self, txn: &str, pdus: Vec<Value>) -> Value {
        let victim = ServerName::parse(self.victim.server_name()).expect("victim name");
        let body = json!({ "origin": self.name, "origin_server_ts": now_ms(), "pdus": pdus });
        let answer = self
            .client()
            .request(
                &victim,
                Method::PUT,
                &format!("/_matrix/federation/v1/send/{txn}"),
                Some(&body),
            )
            .await
            .expect("transaction answered");
        answer["pdus"].clone()
    }

    /// Stops the host and the victim.
    pub(crate) async fn stop(self) {
        self.task.abort();
        if let Some(n) = self.victim.node {
            n.shutdown().await;
        }
    }
}

fn now_ms() -> u64 {
    u64::from(MilliSecondsSinceUnixEpoch::now().get())
}

/// `value` as a canonical JSON object.
pub(crate) fn canonical(value: Value) -> CanonicalJsonObject {
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(o)) => o,
        other => panic!("not an object: {other:?}"),
    }
}

/// Every request: the script's answer if it has one, else the honest host's.
async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let asked = Asked {
        path: uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let reply = {
        let Ok(mut inner) = inner.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        inner.asked.push(asked.clone());
        let honest = honest(&asked, &inner);
        let scripted = inner
            .script
            .clone()
            .and_then(|s| s(&asked, &inner.room, &honest.body));
        match scripted {
            Some(reply) => reply,
            None => {
                if asked.path.starts_with(SEND_JOIN) {
                    // The joiner's event becomes the room's head, as on a real resident.
                    let id = asked
                        .path
                        .split('?')
                        .next()
                        .and_then(|p| p.rsplit('/').next());
                    if let Some(id) = id.map(|i| i.replace("%24", "$"))
                        && inner.room.event(&id).is_none()
                    {
                        inner.room.push(id, asked.body.clone());
                    }
                }
                honest
            }
        }
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(reply.body)).into_response()
}

/// The path prefix of `send_join`.
pub(crate) const SEND_JOIN: &str = "/_matrix/federation/v2/send_join/";

/// An honest `send_join` answer: the current state, its auth chain (every state event the
/// room ever had) and the join.
pub(crate) fn send_join_answer(asked: &Asked, room: &Room) -> Value {
    let chain: Vec<Value> = room
        .all_events()
        .into_iter()
        .filter(|e| e["state_key"].is_string())
        .collect();
    json!({
        "origin": room.server,
        "state": room.state_events(),
        "auth_chain": chain,
        "event": asked.body,
    })
}

/// What an honest host would answer.
fn honest(asked: &Asked, inner: &Inner) -> Reply {
    let path = asked.path.as_str();
    if path.starts_with("/_matrix/key/v2/server") {
        return Reply::ok(key_document(inner));
    }
    let room = &inner.room;
    if path.starts_with(SEND_JOIN) {
        return Reply::ok(send_join_answer(asked, room));
    }
    if path.starts_with("/_matrix/federation/v1/get_missing_events/") {
        let limit = asked.body["limit"].as_u64().unwrap_or(10) as usize;
        let ids = |field: &str| -> Vec<String> {
            asked.body[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        let from: Vec<String> = ids("latest_events")
            .iter()
            .filter_map(|id| room.event(id))
            .flat_map(|e| strings(&e["prev_events"]))
            .collect();
        let events = walk_back(room, from, &ids("earliest_events"), limit);
        return Reply::ok(json!({ "events": events }));
    }
    if path.starts_with("/_matrix/federation/v1/backfill/") {
        let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let mut from = Vec::new();
        let mut limit = 10;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("v", v)) => from.push(v.replace("%24", "$")),
                Some(("limit", l)) => limit = l.parse().unwrap_or(10),
                _ => {}
            }
        }
        let events = walk_back(room, from, &[], limit);
        return Reply::ok(
            json!({ "origin": room.server, "origin_server_ts": now_ms(), "pdus": events }),
        );
    }
    if path.starts_with("/_matrix/federation/v1/make_join/") {
        let user = path
            .split('?')
            .next()
            .and_then(|p| p.rsplit('/').next())
            .map(|u| u.replace("%40", "@").replace("%3A", ":"))
            .unwrap_or_default();
        let template = room.template(
            "m.room.member",
            Some(&user),
            &user,
            json!({ "membership": "join" }),
        );
        return Reply::ok(json!({ "room_version": "10", "event": template }));
    }
    if path.starts_with("/_matrix/federation/v1/event/") {
        let id = path
            .rsplit('/')
            .next()
            .map(|i| i.replace("%24", "$"))
            .unwrap_or_default();
        return match room.event(&id) {
            Some(e) => Reply::ok(
                json!({ "origin": room.server, "origin_server_ts": now_ms(), "pdus": [e] }),
            ),
            None => Reply {
                status: 404,
                body: json!({ "errcode": "M_NOT_FOUND", "error": "no such event" }),
                delay: Duration::ZERO,
            },
        };
    }
    if path.starts_with("/_matrix/federation/v1/state_ids/") {
        let state: Vec<&String> = room.state.values().collect();
        return Reply::ok(json!({ "pdu_ids": state, "auth_chain_ids": state }));
    }
    if path.starts_with("/_matrix/federation/v1/send/") {
        return Reply::ok(json!({ "pdus": {} }));
    }
    Reply {
        status: 404,
        body: json!({ "errcode": "M_UNRECOGNIZED", "error": "not scripted" }),
        delay: Duration::ZERO,
    }
}

/// The strings of a JSON array.
pub(crate) fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Events of `room` from `from` back along `prev_events`, not past `stop`, at most `limit`,
/// oldest first.
fn walk_back(room: &Room, mut from: Vec<String>, stop: &[String], limit: usize) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    while let Some(id) = from.pop() {
        if out.len() >= limit || stop.contains(&id) || !seen.insert(id.clone()) {
            continue;
        }
        if let Some(event) = room.event(&id) {
            from.extend(strings(&event["prev_events"]));
            out.push(event.clone());
        }
    }
    out.sort_by_key(|e| e["depth"].as_u64());
    out
}

/// The host's key document, signed by every current key.
fn key_document(inner: &Inner) -> Value {
    let mut verify = serde_json::Map::new();
    for key in inner.keys.iter().chain([&inner.request_key]) {
        verify.insert(key.id.clone(), json!({ "key": key.public() }));
    }
    let mut old = serde_json::Map::new();
    for (id, public, expired) in &inner.old_keys {
        old.insert(id.clone(), json!({ "key": public, "expired_ts": expired }));
    }
    let mut object = canonical(json!({
        "server_name": inner.room.server,
        "valid_until_ts": inner.valid_until,
        "verify_keys": verify,
        "old_verify_keys": old,
    }));
    for key in inner.keys.iter().chain([&inner.request_key]) {
        ruma::signatures::sign_json(inner.room.server.as_str(), &key.pair(), &mut object)
            .expect("signed");
    }
    serde_json::to_value(CanonicalJsonValue::Object(object)).expect("JSON")
}
