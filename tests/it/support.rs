//! Verbs for tests that start real nodes and talk real HTTP to them.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use grove::{Node, config::RegistrationMode};
use grove_server::{storage::Backend, testing::TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Both storage backends; storage-touching tests run once on each.
pub(crate) const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// Prints the node's logs with the test's output.
pub(crate) fn subscribe() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GROVE_TEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A node started in-process on a free loopback port, with its own data directory and database.
pub(crate) struct TestNode {
    /// The running node (None after [`TestNode::restart`] has stopped it briefly).
    pub(crate) node: Option<Node>,
    /// The data directory.
    pub(crate) dir: tempfile::TempDir,
    /// Static peers when the node runs the overlay (on loopback, without multicast).
    pub(crate) overlay: Option<Vec<String>>,
    /// The overlay's UDP address, kept across restarts so peers that dial it find it again.
    pub(crate) overlay_addr: Option<SocketAddr>,
    /// The database, kept alive as long as the node.
    pub(crate) db: TestDb,
    /// An HTTP client.
    pub(crate) http: reqwest::Client,
}

impl TestNode {
    /// A node started elsewhere, without the overlay, in `dir` over `db`.
    pub(crate) fn running(node: Node, dir: tempfile::TempDir, db: TestDb) -> TestNode {
        TestNode {
            node: Some(node),
            dir,
            overlay: None,
            overlay_addr: None,
            db,
            http: reqwest::Client::new(),
        }
    }

    /// Starts a node on `backend` with open registration.
    pub(crate) async fn start(backend: Backend) -> TestNode {
        Self::start_with_registration(backend, RegistrationMode::Open, Vec::new()).await
    }

    /// Starts a node on `backend` with the given registration mode and tokens (restarts keep
    /// open registration).
    pub(crate) async fn start_with_registration(
        backend: Backend,
        mode: RegistrationMode,
        tokens: Vec<String>,
    ) -> TestNode {
        subscribe();
        let dir = tempfile::tempdir().expect("temp dir");
        let db = TestDb::new(backend).await;
        let node = start_node(
            dir.path().to_owned(),
            &db.url,
            None,
            mode,
            tokens,
            None,
            None,
        )
        .await;
        TestNode::running(node, dir, db)
    }

    /// Starts a node on `backend` without the overlay, from the default configuration changed
    /// by `edit` (the data directory, database and a free loopback port are set before).
    pub(crate) async fn start_with_config(
        backend: Backend,
        edit: impl FnOnce(&mut grove::Config),
    ) -> TestNode {
        subscribe();
        let dir = tempfile::tempdir().expect("temp dir");
        let db = TestDb::new(backend).await;
        let mut config = grove::Config {
            data_dir: dir.path().to_owned(),
            database_url: Some(db.url.clone()),
            ..grove::Config::default()
        };
        config.client.listen = "127.0.0.1:0".parse().expect("addr");
        config.metrics.listen = Some("127.0.0.1:0".parse().expect("addr"));
        config.overlay.enabled = false;
        config.overlay.multicast = false;
        edit(&mut config);
        let node = Node::builder()
            .config(config)
            .start()
            .await
            .expect("node starts");
        TestNode::running(node, dir, db)
    }

    /// Starts a node on `backend` that runs the overlay on loopback (no multicast) and peers
    /// with `static_peers` (`"<hex>@<addr>"`, see [`TestNode::peer_address`]).
    pub(crate) async fn start_federated(backend: Backend, static_peers: Vec<String>) -> TestNode {
        subscribe();
        let dir = tempfile::tempdir().expect("temp dir");
        let db = TestDb::new(backend).await;
        let node = start_node(
            dir.path().to_owned(),
            &db.url,
            None,
            RegistrationMode::Open,
            Vec::new(),
            Some(&static_peers),
            None,
        )
        .await;
        let overlay_addr = node
            .peer_address()
            .and_then(|p| p.rsplit_once('@').and_then(|(_, addr)| addr.parse().ok()));
        TestNode::federated(node, dir, db, static_peers, overlay_addr)
    }

    /// A node that runs the overlay at `overlay_addr`, peering with `static_peers`.
    fn federated(
        node: Node,
        dir: tempfile::TempDir,
        db: TestDb,
        static_peers: Vec<String>,
        overlay_addr: Option<std::net::SocketAddr>,
    ) -> TestNode {
        TestNode {
            node: Some(node),
            dir,
            overlay: Some(static_peers),
            overlay_addr,
            db,
            http: reqwest::Client::new(),
        }
    }

    /// Starts a node that runs the overlay on loopback (no multicast) in `dir` over `db`, as
    /// the caller prepared them (a home imported there, say), peering with `static_peers`;
    /// `split_home_key` gives a fresh directory a home key apart from its node key.
    pub(crate) async fn start_federated_in(
        dir: tempfile::TempDir,
        db: TestDb,
        static_peers: Vec<String>,
        split_home_key: bool,
    ) -> TestNode {
        subscribe();
        let mut builder = Node::builder()
            .data_dir(dir.path())
            .database_url(&db.url)
            .client_listen("127.0.0.1:0".parse().expect("addr"))
            .registration(RegistrationMode::Open, Vec::new())
            .overlay(true)
            .overlay_listen("127.0.0.1:0".parse().expect("addr"))
            .metrics_listen("127.0.0.1:0".parse().expect("addr"))
            .multicast(false)
            .split_home_key(split_home_key);
        for peer in &static_peers {
            builder = builder.static_peer(peer.clone());
        }
        let node = builder.start().await.expect("node starts");
        let overlay_addr = node.overlay_addr();
        TestNode::federated(node, dir, db, static_peers, overlay_addr)
    }

    /// This node as a static peer for others.
    pub(crate) fn peer_address(&self) -> String {
        self.node().peer_address().expect("overlay running")
    }

    /// The running node.
    pub(crate) fn node(&self) -> &Node {
        self.node.as_ref().expect("node running")
    }

    /// The client API base URL.
    pub(crate) fn url(&self) -> String {
        self.node().client_url().to_owned()
    }

    /// The server name.
    pub(crate) fn server_name(&self) -> String {
        self.node().server_name().to_string()
    }

    /// Stops the node and starts it again on the same data directory, database and port.
    pub(crate) async fn restart(&mut self) {
        let node = self.node.take().expect("node running");
        let addr = node.client_addr();
        node.shutdown().await;
        self.node = Some(
            start_node(
                self.dir.path().to_owned(),
                &self.db.url,
                Some(addr),
                RegistrationMode::Open,
                Vec::new(),
                self.overlay.as_deref(),
                self.overlay_addr,
            )
            .await,
        );
    }

    /// Starts the node again (after it was stopped) on the same data directory, database and
    /// client address.
    pub(crate) async fn restart_at(&mut self, addr: SocketAddr) {
        self.node = Some(
            start_node(
                self.dir.path().to_owned(),
                &self.db.url,
                Some(addr),
                RegistrationMode::Open,
                Vec::new(),
                self.overlay.as_deref(),
                self.overlay_addr,
            )
            .await,
        );
    }

    /// The node's Prometheus metrics text.
    pub(crate) async fn metrics(&self) -> String {
        let url = self
            .node()
            .metrics_url()
            .expect("metrics served")
            .to_owned();
        self.http
            .get(url)
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of the metric line that starts with `series` (name and labels), or 0.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The server name, read from the node key while the node is stopped.
    pub(crate) fn server_name_offline(&self) -> String {
        grove_server::NodeKey::load_or_create(&self.dir.path().join("node.key"))
            .expect("node key")
            .hex()
    }

    /// Sends a request and returns the status and the JSON body (`Null` if not JSON).
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.url(), path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
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

    /// GET with an optional token.
    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    /// POST a JSON body.
    pub(crate) async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// PUT a JSON body.
    pub(crate) async fn put(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// Creates a room as `user` (`body` is the `createRoom` request) and returns its ID.
    pub(crate) async fn create_room(&self, user: &TestUser, body: Value) -> String {
        let (status, created) = self
            .post("/_matrix/client/v3/createRoom", Some(&user.token), body)
            .await;
        assert_eq!(status, StatusCode::OK, "createRoom: {created}");
        created["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Sends a text message as `user` into `room` under a fresh transaction ID and returns the
    /// event ID; the send must succeed.
    pub(crate) async fn send_text(&self, user: &TestUser, room: &str, body: &str) -> String {
        static NEXT_TXN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let txn = NEXT_TXN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (status, sent) = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/text{txn}",
                    enc(room)
                ),
                Some(&user.token),
                json!({ "msgtype": "m.text", "body": body }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "send {body}: {sent}");
        sent["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Joins `room` as `user` through the server `via`, retrying while the overlay finds it.
    pub(crate) async fn join_via(&self, user: &TestUser, room: &str, via: &str) {
        let path = format!("/_matrix/client/v3/join/{}?via={via}", enc(room));
        eventually(
            &format!("{} joins through {via}", user.user_id),
            async || {
                let (status, body) = self.post(&path, Some(&user.token), json!({})).await;
                if status == StatusCode::OK {
                    Ok(())
                } else {
                    Err(format!("{status} {body}"))
                }
            },
        )
        .await;
    }

    /// A `/sync` of `user`: initial, or from `since` without waiting; the response must be OK.
    pub(crate) async fn sync_now(&self, user: &TestUser, since: Option<&str>) -> Value {
        let path = match since {
            Some(since) => format!("/_matrix/client/v3/sync?since={since}&timeout=0"),
            None => "/_matrix/client/v3/sync".to_owned(),
        };
        let (status, body) = self.get(&path, Some(&user.token)).await;
        assert_eq!(status, StatusCode::OK, "sync: {body}");
        body
    }

    /// Registers `localpart` with a password through user-interactive auth (`m.login.dummy`)
    /// and returns the new user.
    pub(crate) async fn register(&self, localpart: &str) -> TestUser {
        let body = json!({ "username": localpart, "password": "correct horse battery" });
        let (status, first) = self
            .post("/_matrix/client/v3/register", None, body.clone())
            .await;
        let done = if status == StatusCode::UNAUTHORIZED {
            let session = first["session"].as_str().expect("uia session").to_owned();
            let mut body = body;
            body["auth"] = json!({ "type": "m.login.dummy", "session": session });
            let (status, done) = self.post("/_matrix/client/v3/register", None, body).await;
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
}

/// A registered user with a logged-in device.
#[derive(Debug, Clone)]
pub(crate) struct TestUser {
    /// The full user ID.
    pub(crate) user_id: String,
    /// The access token.
    pub(crate) token: String,
    /// The device ID.
    pub(crate) device_id: String,
}

async fn start_node(
    dir: PathBuf,
    database_url: &str,
    addr: Option<SocketAddr>,
    mode: RegistrationMode,
    tokens: Vec<String>,
    overlay: Option<&[String]>,
    overlay_addr: Option<SocketAddr>,
) -> Node {
    let mut builder = Node::builder()
        .data_dir(dir)
        .database_url(database_url)
        .client_listen(addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr")))
        .registration(mode, tokens)
        .overlay(overlay.is_some())
        .overlay_listen(overlay_addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr")))
        .metrics_listen("127.0.0.1:0".parse().expect("addr"))
        .multicast(false);
    for peer in overlay.unwrap_or_default() {
        builder = builder.static_peer(peer.clone());
    }
    builder.start().await.expect("node starts")
}

/// The bodies of the `m.room.message` events in a JSON array of events.
pub(crate) fn message_bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// How long any one condition of a multi-node test may take to come true.
pub(crate) const PATIENCE: Duration = Duration::from_secs(90);

/// Percent-encodes `text` for a URL path segment.
pub(crate) fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Retries `attempt` until it returns `Ok`, or fails the test after [`PATIENCE`].
pub(crate) async fn eventually<T>(
    what: &str,
    mut attempt: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    while Instant::now() < deadline {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: still not done after {PATIENCE:?}; last: {last}");
}
