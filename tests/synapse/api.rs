//! One client vocabulary for both servers: every verb is the client-server API over real HTTP,
//! so a test reads the same whichever side a user lives on.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestNode, TestUser, enc, eventually, message_bodies};

const V3: &str = "/_matrix/client/v3";

/// A client of one homeserver's client API.
pub(crate) struct Api {
    base: String,
    server_name: String,
    http: reqwest::Client,
}

impl Api {
    /// A client of the client API at `base` of the server named `server_name`.
    pub(crate) fn new(base: &str, server_name: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            server_name: server_name.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A client of a Grove test node.
    pub(crate) fn of(node: &TestNode) -> Api {
        Api::new(&node.url(), &node.server_name())
    }

    /// The server's name.
    pub(crate) fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Sends a request under `/_matrix/client/v3` and returns the status and the JSON body
    /// (`Null` if not JSON).
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        user: Option<&TestUser>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{V3}{path}", self.base));
        if let Some(user) = user {
            req = req.bearer_auth(&user.token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body read");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// GET as `user`.
    pub(crate) async fn get(&self, path: &str, user: &TestUser) -> (StatusCode, Value) {
        self.request(Method::GET, path, Some(user), None).await
    }

    /// POST `body` as `user`; the answer must be 200.
    pub(crate) async fn post_ok(&self, path: &str, user: &TestUser, body: Value) -> Value {
        let (status, answer) = self
            .request(Method::POST, path, Some(user), Some(body))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{} POST {path}: {answer}",
            self.server_name
        );
        answer
    }

    /// PUT `body` as `user`; the answer must be 200.
    pub(crate) async fn put_ok(&self, path: &str, user: &TestUser, body: Value) -> Value {
        let (status, answer) = self
            .request(Method::PUT, path, Some(user), Some(body))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{} PUT {path}: {answer}",
            self.server_name
        );
        answer
    }

    /// Registers `localpart` with a password through user-interactive auth (`m.login.dummy`).
    pub(crate) async fn register(&self, localpart: &str) -> TestUser {
        let body = json!({ "username": localpart, "password": "correct horse battery" });
        let (status, first) = self
            .request(Method::POST, "/register", None, Some(body.clone()))
            .await;
        let done = if status == StatusCode::UNAUTHORIZED {
            let session = first["session"].as_str().expect("uia session").to_owned();
            let mut body = body;
            body["auth"] = json!({ "type": "m.login.dummy", "session": session });
            let (status, done) = self
                .request(Method::POST, "/register", None, Some(body))
                .await;
            assert_eq!(status, StatusCode::OK, "register {localpart}: {done}");
            done
        } else {
            assert_eq!(status, StatusCode::OK, "register {localpart}: {first}");
            first
        };
        TestUser {
            user_id: done["user_id"].as_str().expect("user_id").to_owned(),
            token: done["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            device_id: done["device_id"].as_str().expect("device_id").to_owned(),
        }
    }

    /// Creates a room (`body` is the `createRoom` request) and returns its ID.
    pub(crate) async fn create_room(&self, user: &TestUser, body: Value) -> String {
        let created = self.post_ok("/createRoom", user, body).await;
        created["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Sends a text message under a fresh transaction ID and returns its event ID.
    pub(crate) async fn send_text(&self, user: &TestUser, room: &str, body: &str) -> String {
        let txn: u64 = rand::random();
        let sent = self
            .put_ok(
                &format!("/rooms/{}/send/m.room.message/t{txn}", enc(room)),
                user,
                json!({ "msgtype": "m.text", "body": body }),
            )
            .await;
        sent["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Asks to join `room` through the server `via`, once.
    pub(crate) async fn join(&self, user: &TestUser, room: &str, via: &str) -> (StatusCode, Value) {
        self.request(
            Method::POST,
            &format!("/join/{}?via={via}", enc(room)),
            Some(user),
            Some(json!({})),
        )
        .await
    }

    /// Joins `room` through `via`; the join must succeed at the first try.
    pub(crate) async fn join_ok(&self, user: &TestUser, room: &str, via: &str) {
        let (status, body) = self.join(user, room, via).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{} joins {room} on {} through {via}: {body}",
            user.user_id,
            self.server_name
        );
    }

    /// Changes `target`'s membership as `user`: `action` is `leave`, `kick` or `ban`.
    pub(crate) async fn membership(
        &self,
        user: &TestUser,
        room: &str,
        action: &str,
        target: Option<&str>,
    ) {
        let body = match target {
            Some(target) => json!({ "user_id": target, "reason": "interop" }),
            None => json!({}),
        };
        self.post_ok(&format!("/rooms/{}/{action}", enc(room)), user, body)
            .await;
    }

    /// Redacts `event` in `room` as `user` and returns the redaction's event ID.
    pub(crate) async fn redact(&self, user: &TestUser, room: &str, event: &str) -> String {
        let txn: u64 = rand::random();
        let sent = self
            .put_ok(
                &format!("/rooms/{}/redact/{}/r{txn}", enc(room), enc(event)),
                user,
                json!({ "reason": "interop" }),
            )
            .await;
        sent["event_id"].as_str().expect("event_id").to_owned()
    }

    /// `GET /rooms/{room}/event/{id}` as `user`.
    pub(crate) async fn event(&self, user: &TestUser, room: &str, id: &str) -> (StatusCode, Value) {
        self.get(&format!("/rooms/{}/event/{}", enc(room), enc(id)), user)
            .await
    }

    /// The room's events from the newest back, up to `limit`, as `user` sees them.
    pub(crate) async fn messages(&self, user: &TestUser, room: &str, limit: u32) -> Vec<Value> {
        let (status, body) = self
            .get(
                &format!("/rooms/{}/messages?dir=b&limit={limit}", enc(room)),
                user,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{} /messages: {body}",
            self.server_name
        );
        body["chunk"].as_array().cloned().unwrap_or_default()
    }

    /// A `/sync` of `user`: initial, or from `since` without waiting.
    pub(crate) async fn sync_now(&self, user: &TestUser, since: Option<&str>) -> Value {
        let path = match since {
            Some(since) => format!("/sync?since={}&timeout=0", enc(since)),
            None => "/sync".to_owned(),
        };
        let (status, body) = self.get(&path, user).await;
        assert_eq!(status, StatusCode::OK, "{} sync: {body}", self.server_name);
        body
    }

    /// `target`'s membership of `room` in the room state `user` sees (empty when none).
    pub(crate) async fn membership_of(&self, user: &TestUser, room: &str, target: &str) -> String {
        let (status, body) = self
            .get(
                &format!("/rooms/{}/state/m.room.member/{}", enc(room), enc(target)),
                user,
            )
            .await;
        if status != StatusCode::OK {
            return String::new();
        }
        body["membership"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits until `target`'s membership of `room` is `expected` in `user`'s view.
    pub(crate) async fn wait_membership(
        &self,
        user: &TestUser,
        room: &str,
        target: &str,
        expected: &str,
    ) {
        eventually(
            &format!("{target} {expected} on {}", self.server_name),
            async || {
                let now = self.membership_of(user, room, target).await;
                if now == expected {
                    Ok(())
                } else {
                    Err(format!("membership {now:?}"))
                }
            },
        )
        .await
    }

    /// Waits until `user`'s `/sync` shows every message in `bodies` in `room`'s timeline.
    pub(crate) async fn wait_messages(&self, user: &TestUser, room: &str, bodies: &[&str]) {
        eventually(
            &format!(
                "{bodies:?} in {}'s sync on {}",
                user.user_id, self.server_name
            ),
            async || {
                let sync = self.sync_now(user, None).await;
                let seen = message_bodies(&sync["rooms"]["join"][room]["timeline"]["events"]);
                if bodies.iter().all(|b| seen.iter().any(|s| s == b)) {
                    Ok(())
                } else {
                    Err(format!("seen {seen:?}"))
                }
            },
        )
        .await
    }
}
