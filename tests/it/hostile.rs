//! A hostile server: a real node whose key the test holds, so the test can sign requests and
//! events as that server and say whatever it likes in them (depths, hashes, contents, ACL-
//! denied requests, floods). The victim is a real Grove node; the two talk federation over the
//! overlay on loopback. Events are built by the hostile node's own core over its view of the
//! room, then altered and signed again with its key.

mod acl;
mod depth;
mod hashes;
mod invites;
mod limits;
mod make_join;
mod sizes;
mod visibility;

use grove_federation::{client::Client, error::RequestError};
use grove_server::{rooms::EventTemplate, storage::Backend};
use reqwest::StatusCode;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, RoomId, UserId};
use serde_json::{Value, json};

use crate::support::{TestNode, TestUser, enc, eventually};

/// A victim node with a user, and a hostile node with a user, peered on loopback.
pub(crate) struct Scene {
    /// The node under attack.
    pub(crate) victim: TestNode,
    /// A user of the victim.
    pub(crate) alice: TestUser,
    /// The hostile node (a real node: the test signs as it).
    pub(crate) evil: TestNode,
    /// A user of the hostile node.
    pub(crate) mallory: TestUser,
    /// Federation requests signed as the hostile server.
    pub(crate) client: Client,
    /// The victim's server name.
    pub(crate) victim_name: OwnedServerName,
}

impl Scene {
    /// A victim on `backend` and a hostile node (on SQLite) that peers with it.
    pub(crate) async fn new(backend: Backend) -> Scene {
        let victim = TestNode::start_federated(backend, Vec::new()).await;
        let evil = TestNode::start_federated(Backend::Sqlite, vec![victim.peer_address()]).await;
        let alice = victim.register("alice").await;
        let mallory = evil.register("mallory").await;
        let client = Client::new(
            evil.node().overlay().expect("overlay").clone(),
            evil.node().homeserver().key.clone(),
            evil.node().server_name().to_owned(),
        );
        let victim_name = victim.node().server_name().to_owned();
        Scene {
            victim,
            alice,
            evil,
            mallory,
            client,
            victim_name,
        }
    }

    /// The hostile server's name.
    pub(crate) fn evil_name(&self) -> String {
        self.evil.server_name()
    }

    /// A public room of alice's on the victim that mallory has joined through it.
    pub(crate) async fn shared_room(&self, extra: Value) -> String {
        let mut body = json!({ "preset": "public_chat" });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let room = self.victim.create_room(&self.alice, body).await;
        self.evil
            .join_via(&self.mallory, &room, &self.victim.server_name())
            .await;
        room
    }

    /// A signed federation request as the hostile server; `Err` carries the status and the
    /// Matrix error body.
    pub(crate) async fn ask(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, (u16, Value)> {
        // Only the transport is retried (the overlay may still be finding the victim); an
        // answer, refusal or not, is returned at once.
        eventually(&format!("{method} {path} answered"), async || {
            match self
                .client
                .request(&self.victim_name, method.clone(), path, body)
                .await
            {
                Ok(v) => Ok(Ok(v)),
                Err(RequestError::Remote { status, body }) => Ok(Err((
                    status,
                    serde_json::from_str(&body).unwrap_or(Value::String(body)),
                ))),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Sends `pdus` and `edus` in one transaction as the hostile server; the answer's `pdus`.
    pub(crate) async fn send_txn(&self, txn: &str, pdus: Vec<Value>, edus: Vec<Value>) -> Value {
        let body = json!({
            "origin": self.evil_name(),
            "origin_server_ts": 1,
            "pdus": pdus,
            "edus": edus,
        });
        let path = format!("/_matrix/federation/v1/send/{txn}");
        match self.ask(http::Method::PUT, &path, Some(&body)).await {
            Ok(answer) => answer["pdus"].clone(),
            Err((status, body)) => panic!("transaction {txn}: {status} {body}"),
        }
    }

    /// An event of `template` by `sender` (a user of the hostile server) over the hostile
    /// node's head of `room`, altered by `edit` and then hashed and signed as the hostile
    /// server. Returns the event and its ID.
    pub(crate) async fn forge(
        &self,
        room: &str,
        sender: &str,
        template: &EventTemplate,
        edit: impl FnOnce(&mut CanonicalJsonObject),
    ) -> (Value, String) {
        let hs = self.evil.node().homeserver();
        let room = RoomId::parse(room).expect("room ID");
        let sender = UserId::parse(sender).expect("user ID");
        let prev = hs.rooms.extremities(&room).await.expect("extremities");
        let mut object = hs
            .rooms
            .build_over(&room, &sender, template, &prev)
            .await
            .expect("event built");
        edit(&mut object);
        self.sign(&room, object).await
    }

    /// Hashes and signs `object` as the hostile server; the event and its ID.
    pub(crate) async fn sign(
        &self,
        room: &RoomId,
        mut object: CanonicalJsonObject,
    ) -> (Value, String) {
        let hs = self.evil.node().homeserver();
        let version = hs.rooms.room_version(room).await.expect("version");
        let rules = grove_server::rooms::builder::rules_for(&version).expect("rules");
        ruma::signatures::hash_and_sign_event(
            hs.config.server_name.as_str(),
            hs.key.key_pair(),
            &mut object,
            &rules.redaction,
        )
        .expect("signed");
        let id = grove_server::rooms::builder::event_id_of(&object, &rules).expect("event ID");
        let value = serde_json::to_value(CanonicalJsonValue::Object(object)).expect("JSON");
        (value, id.to_string())
    }

    /// The victim's stored copy of an event, as JSON, if it has one.
    pub(crate) async fn stored(&self, id: &str) -> Option<Value> {
        self.victim
            .node()
            .homeserver()
            .rooms
            .pdu(id)
            .await
            .expect("read")
            .map(|p| serde_json::from_str(&p.json).expect("stored JSON"))
    }

    /// The room path segment of `room`.
    pub(crate) fn seg(room: &str) -> String {
        enc(room)
    }

    /// Stops both nodes.
    pub(crate) async fn stop(self) {
        for node in [self.victim, self.evil] {
            if let Some(n) = node.node {
                n.shutdown().await;
            }
        }
    }
}

/// Asserts a refusal with `status` and `errcode`.
#[track_caller]
pub(crate) fn assert_refused(
    answer: Result<Value, (u16, Value)>,
    status: StatusCode,
    errcode: &str,
) {
    match answer {
        Ok(v) => panic!("expected {status} {errcode}, got 200 {v}"),
        Err((got, body)) => {
            assert_eq!(got, status.as_u16(), "{body}");
            assert_eq!(body["errcode"], errcode, "{body}");
        }
    }
}
