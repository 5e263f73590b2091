//! The few client-server calls the bench makes, over one keep-alive connection pool.

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A logged-in user of the measured node.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Sends one request and returns the JSON body of a 2xx answer, or an error naming the call.
async fn call(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut req = http.request(method.clone(), url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .with_context(|| format!("{method} {url}: reading the answer"))?;
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

fn expect_ok(what: &str, status: StatusCode, body: &Value) -> anyhow::Result<()> {
    if !status.is_success() {
        bail!("{what}: {status} {body}");
    }
    Ok(())
}

/// Percent-encodes a path segment (room IDs carry `!` and `:`, transaction IDs anything).
fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Registers `localpart` with user-interactive auth (`m.login.dummy`).
pub(crate) async fn register(
    http: &reqwest::Client,
    base: &str,
    localpart: &str,
) -> anyhow::Result<Session> {
    register_with(
        http,
        base,
        json!({ "username": localpart, "password": "grove bench password" }),
    )
    .await
}

/// Registers `localpart` without a password, so no password hash is computed (for the many
/// members of a large room, whose registration is set-up rather than what is measured).
pub(crate) async fn register_without_password(
    http: &reqwest::Client,
    base: &str,
    localpart: &str,
) -> anyhow::Result<Session> {
    register_with(http, base, json!({ "username": localpart })).await
}

async fn register_with(
    http: &reqwest::Client,
    base: &str,
    mut body: Value,
) -> anyhow::Result<Session> {
    let url = format!("{base}/_matrix/client/v3/register");
    // Registrations past the node's burst are refused for a while; wait as told and retry.
    let (status, first) = loop {
        let (status, first) = call(http, Method::POST, &url, None, Some(&body)).await?;
        if status != StatusCode::TOO_MANY_REQUESTS {
            break (status, first);
        }
        let wait = first
            .get("retry_after_ms")
            .and_then(Value::as_u64)
            .unwrap_or(1_000);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    };
    let done = if status == StatusCode::UNAUTHORIZED {
        let session = first
            .get("session")
            .and_then(Value::as_str)
            .with_context(|| format!("register: 401 without a UIA session: {first}"))?;
        body["auth"] = json!({ "type": "m.login.dummy", "session": session });
        let (status, done) = call(http, Method::POST, &url, None, Some(&body)).await?;
        expect_ok("register", status, &done)?;
        done
    } else {
        expect_ok("register", status, &first)?;
        first
    };
    let field = |name: &str| -> anyhow::Result<String> {
        done.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("register: no {name} in {done}"))
    };
    Ok(Session {
        http: http.clone(),
        base: base.to_owned(),
        token: field("access_token")?,
    })
}

impl Session {
    /// The same user, with requests on another connection pool (so a parked long-poll never
    /// holds the connection another request wants).
    pub(crate) fn on(&self, http: &reqwest::Client) -> Session {
        Session {
            http: http.clone(),
            ..self.clone()
        }
    }

    async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/_matrix/client/v3{path}", self.base);
        let (status, value) = call(&self.http, method, &url, Some(&self.token), body).await?;
        expect_ok(what, status, &value)?;
        Ok(value)
    }

    /// Creates a room and returns its ID.
    pub(crate) async fn create_room(&self, body: Value) -> anyhow::Result<String> {
        let resp = self
            .call("createRoom", Method::POST, "/createRoom", Some(&body))
            .await?;
        resp.get("room_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("createRoom: no room_id in {resp}"))
    }

    /// Joins a room by ID.
    pub(crate) async fn join(&self, room_id: &str) -> anyhow::Result<()> {
        let path = format!("/join/{}", segment(room_id));
        self.call("join", Method::POST, &path, Some(&json!({})))
            .await?;
        Ok(())
    }

    /// Joins a room by ID through the server `via` (a room on another node).
    pub(crate) async fn join_via(&self, room_id: &str, via: &str) -> anyhow::Result<()> {
        let path = format!("/join/{}?via={}", segment(room_id), segment(via));
        self.call("join", Method::POST, &path, Some(&json!({})))
            .await?;
        Ok(())
    }

    /// The room's joined members as this user's node knows them.
    pub(crate) async fn joined_members(&self, room_id: &str) -> anyhow::Result<Value> {
        let path = format!("/rooms/{}/joined_members", segment(room_id));
        self.call("joined_members", Method::GET, &path, None).await
    }

    /// One page of `/messages` backwards from `from` (the newest end when `None`).
    pub(crate) async fn messages_back(
        &self,
        room_id: &str,
        from: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Value> {
        let mut path = format!("/rooms/{}/messages?dir=b&limit={limit}", segment(room_id));
        if let Some(from) = from {
            path.push_str("&from=");
            path.push_str(&segment(from));
        }
        self.call("messages", Method::GET, &path, None).await
    }

    /// Sends a text message and returns its event ID.
    pub(crate) async fn send_text(
        &self,
        room_id: &str,
        txn_id: &str,
        body: &str,
    ) -> anyhow::Result<String> {
        let path = format!(
            "/rooms/{}/send/m.room.message/{}",
            segment(room_id),
            segment(txn_id)
        );
        let content = json!({ "msgtype": "m.text", "body": body });
        let resp = self
            .call("send", Method::PUT, &path, Some(&content))
            .await?;
        resp.get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("send: no event_id in {resp}"))
    }

    /// One `/sync` (a long-poll of `timeout_ms` when `since` is given); returns the whole answer.
    pub(crate) async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> anyhow::Result<Value> {
        self.sync_filtered(since, timeout_ms, None).await
    }

    /// One `/sync` with an inline JSON `filter`.
    pub(crate) async fn sync_filtered(
        &self,
        since: Option<&str>,
        timeout_ms: u64,
        filter: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut path = format!("/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str("&since=");
            path.push_str(&segment(since));
        }
        if let Some(filter) = filter {
            path.push_str("&filter=");
            path.push_str(&segment(filter));
        }
        self.call("sync", Method::GET, &path, None).await
    }

    /// One simplified sliding sync (MSC4186) from `pos`, waiting up to `timeout_ms`.
    pub(crate) async fn sliding_sync(
        &self,
        pos: Option<&str>,
        timeout_ms: u64,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let mut url = format!(
            "{}/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout={timeout_ms}",
            self.base
        );
        if let Some(pos) = pos {
            url.push_str("&pos=");
            url.push_str(&segment(pos));
        }
        let (status, value) = call(
            &self.http,
            Method::POST,
            &url,
            Some(&self.token),
            Some(body),
        )
        .await?;
        expect_ok("sliding sync", status, &value)?;
        Ok(value)
    }

    /// Sets a state event and returns its event ID.
    pub(crate) async fn send_state(
        &self,
        room_id: &str,
        kind: &str,
        key: &str,
        content: &Value,
    ) -> anyhow::Result<String> {
        let path = format!(
            "/rooms/{}/state/{}/{}",
            segment(room_id),
            segment(kind),
            segment(key)
        );
        let resp = self
            .call("state", Method::PUT, &path, Some(content))
            .await?;
        resp.get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("state: no event_id in {resp}"))
    }
}

/// The `next_batch` token of a sync answer.
pub(crate) fn next_batch(sync: &Value) -> anyhow::Result<String> {
    sync.get("next_batch")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("sync: no next_batch in {sync}"))
}

/// Whether a sync answer carries the event `event_id` in `room_id`'s timeline.
pub(crate) fn has_event(sync: &Value, room_id: &str, event_id: &str) -> bool {
    sync.pointer("/rooms/join")
        .and_then(|join| join.get(room_id))
        .and_then(|room| room.pointer("/timeline/events"))
        .and_then(Value::as_array)
        .is_some_and(|events| {
            events
                .iter()
                .any(|e| e.get("event_id").and_then(Value::as_str) == Some(event_id))
        })
}

/// Whether a sync answer carries, in `room_id`'s timeline, a message whose body is `body`.
pub(crate) fn has_body(sync: &Value, room_id: &str, body: &str) -> bool {
    sync.pointer("/rooms/join")
        .and_then(|join| join.get(room_id))
        .and_then(|room| room.pointer("/timeline/events"))
        .and_then(Value::as_array)
        .is_some_and(|events| {
            events
                .iter()
                .any(|e| e.pointer("/content/body").and_then(Value::as_str) == Some(body))
        })
}
