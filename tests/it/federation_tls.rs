//! Federation over ordinary TLS between nodes with DNS server names (`localhost:<port>`), as
//! Matrix homeservers federate: certificates from a CA made in the test, each node trusting it,
//! keys fetched from `/_matrix/key/v2/server`, requests signed with `X-Matrix`. The overlay runs
//! on loopback but no node peers with another, so HTTPS is the only way between them.

use std::{net::SocketAddr, sync::Arc};

use grove::{Node, config::RegistrationMode};
use grove_federation::{client::Client, error::RequestError, tls};
use grove_server::storage::Backend;
use grove_server::testing::TestDb;
use reqwest::StatusCode;
use ruma::ServerName;
use serde_json::{Value, json};

use crate::support::{TestNode, TestUser, enc, eventually, message_bodies, subscribe};
use crate::tls_ca::{TestCa, free_port};

const V3: &str = "/_matrix/client/v3";

/// Starts a node named `localhost:<port>` serving federation over HTTPS with a certificate
/// from `issuer`, trusting `trusted`'s CA.
pub(crate) async fn start_tls_node(
    backend: Backend,
    issuer: &TestCa,
    trusted: &TestCa,
) -> TestNode {
    start_tls_node_with(backend, issuer, trusted, |_| {}).await
}

/// As [`start_tls_node`], over a configuration `edit` changes first, with metrics served.
pub(crate) async fn start_tls_node_with(
    backend: Backend,
    issuer: &TestCa,
    trusted: &TestCa,
    edit: impl FnOnce(&mut grove::Config),
) -> TestNode {
    subscribe();
    let mut config = grove::Config::default();
    edit(&mut config);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestDb::new(backend).await;
    let port = free_port();
    let (chain, key) = issuer.leaf(&format!("node-{port}"));
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let node = Node::builder()
        .config(config)
        .metrics_listen("127.0.0.1:0".parse().expect("addr"))
        .data_dir(dir.path())
        .database_url(&db.url)
        .client_listen("127.0.0.1:0".parse().expect("addr"))
        .registration(RegistrationMode::Open, Vec::new())
        .overlay_listen("127.0.0.1:0".parse().expect("addr"))
        .multicast(false)
        .server_name(format!("localhost:{port}"))
        .federation_tls(listen, chain, key)
        .trusted_ca(trusted.ca_pem())
        .start()
        .await
        .expect("node starts");
    assert_eq!(node.federation_addr(), Some(listen));
    TestNode::running(node, dir, db)
}

/// Waits until `user`'s full `/sync` on `node` shows every message in `bodies` in `room`.
async fn wait_messages(node: &TestNode, user: &TestUser, room: &str, bodies: &[&str]) {
    eventually(
        &format!("{bodies:?} in {}'s sync", user.user_id),
        async || {
            let sync = node.sync_now(user, None).await;
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

/// Waits until `room` has `count` joined members in `user`'s view on `node`.
async fn wait_joined(node: &TestNode, user: &TestUser, room: &str, count: usize) {
    eventually(
        &format!("{count} members of {room} on {}", node.server_name()),
        async || {
            let (status, body) = node
                .get(
                    &format!("{V3}/rooms/{}/joined_members", enc(room)),
                    Some(&user.token),
                )
                .await;
            let joined = body["joined"].as_object().map_or(0, |m| m.len());
            if status == StatusCode::OK && joined == count {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await
}

async fn dns_nodes_share_a_room(backend: Backend) {
    let ca = TestCa::new("grove");
    let a = start_tls_node(backend, &ca, &ca).await;
    let b = start_tls_node(backend, &ca, &ca).await;
    let c = start_tls_node(backend, &ca, &ca).await;
    assert!(a.server_name().starts_with("localhost:"));
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = c.register("carol").await;

    // A's key document, over HTTPS, names A and lists the key it signs with.
    let a_name = ServerName::parse(a.server_name()).expect("name");
    let keys = tls_client(&b, b.node().homeserver().key.clone(), &b.server_name(), &ca)
        .get_public(&a_name, "/_matrix/key/v2/server", 64 * 1024)
        .await
        .expect("A's key document");
    assert_eq!(keys["server_name"], a.server_name().as_str(), "{keys}");
    assert!(
        keys["verify_keys"]["ed25519:grove"]["key"].is_string(),
        "{keys}"
    );
    assert!(
        keys["signatures"][a.server_name()]["ed25519:grove"].is_string(),
        "{keys}"
    );

    let (status, _) = a
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
            Some(&alice.token),
            json!({ "displayname": "Alice over TLS" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let room = a
        .create_room(&alice, json!({ "preset": "public_chat", "name": "tls" }))
        .await;

    b.join_via(&bob, &room, &a.server_name()).await;
    c.join_via(&carol, &room, &b.server_name()).await;
    // Every server learns of every join before anyone speaks: a server sends its events to
    // the servers it knows to be in the room.
    for (node, user) in [(&a, &alice), (&b, &bob), (&c, &carol)] {
        wait_joined(node, user, &room, 3).await;
    }

    a.send_text(&alice, &room, "from A").await;
    b.send_text(&bob, &room, "from B").await;
    c.send_text(&carol, &room, "from C").await;
    for (node, user) in [(&a, &alice), (&b, &bob), (&c, &carol)] {
        wait_messages(node, user, &room, &["from A", "from B", "from C"]).await;
    }

    // A remote profile query goes from B to A over HTTPS.
    let (status, profile) = b
        .get(
            &format!("{V3}/profile/{}", enc(&alice.user_id)),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "profile: {profile}");
    assert_eq!(profile["displayname"], "Alice over TLS");

    // B kept A's keys, so that after a restart it can check A's events with A out of reach.
    let a_name = ruma::ServerName::parse(a.server_name()).expect("A's name");
    let kept = grove_server::server_keys::load(&b.node().homeserver().storage, &a_name)
        .await
        .expect("read")
        .expect("A's keys stored on B");
    assert!(
        kept.keys.contains_key(&a.node().homeserver().key.key_id()),
        "{kept:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dns_named_nodes_federate_over_tls_sqlite() {
    dns_nodes_share_a_room(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dns_named_nodes_federate_over_tls_postgres() {
    dns_nodes_share_a_room(Backend::Postgres).await;
}

/// A federation client of `node` signing as `origin` with `key`, trusting `ca`.
fn tls_client(
    node: &TestNode,
    key: Arc<grove_server::NodeKey>,
    origin: &str,
    ca: &TestCa,
) -> Client {
    let pem = std::fs::read(ca.ca_pem()).expect("CA PEM");
    let roots = tls::certificates_from_pem(&pem).expect("CA certificates");
    Client::new(
        node.node().overlay().expect("overlay").clone(),
        key,
        ServerName::parse(origin).expect("server name"),
    )
    .with_tls(tls::client_config(&roots).expect("client config"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_requests_and_events_from_a_dns_origin_are_refused() {
    let ca = TestCa::new("grove");
    let a = start_tls_node(Backend::Sqlite, &ca, &ca).await;
    let b = start_tls_node(Backend::Sqlite, &ca, &ca).await;
    let alice = a.register("alice").await;
    let a_name = ServerName::parse(a.server_name()).expect("name");
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        enc(&alice.user_id)
    );

    // Signed by B's own key: A fetches B's keys over HTTPS and answers.
    let genuine = tls_client(&b, b.node().homeserver().key.clone(), &b.server_name(), &ca);
    let answer: Value = genuine
        .request(&a_name, http::Method::GET, &path, None)
        .await
        .expect("a genuine request is answered");
    assert!(answer.is_object(), "profile: {answer}");

    // The same origin, signed by another key under the same key ID.
    let stranger = Arc::new(grove_server::NodeKey::generate().expect("key"));
    let forged = tls_client(&b, stranger, &b.server_name(), &ca);
    match forged
        .request(&a_name, http::Method::GET, &path, None)
        .await
    {
        Err(RequestError::Remote { status: 401, body }) => {
            assert!(body.contains("M_UNAUTHORIZED"), "{body}")
        }
        other => panic!("a forged signature must be refused with 401: {other:?}"),
    }

    // Events: B joins a room on A; then A's server sends B copies of a real event of A's that
    // no longer match A's signature. B checks them against the keys A's key server gave it.
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    b.join_via(&bob, &room, &a.server_name()).await;
    let (status, sent) = a
        .put(
            &format!("{V3}/rooms/{}/send/m.room.message/real", enc(&room)),
            Some(&alice.token),
            json!({ "msgtype": "m.text", "body": "real" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let real = sent["event_id"].as_str().expect("event_id").to_owned();
    wait_messages(&b, &bob, &room, &["real"]).await;
    let pdu = a
        .node()
        .homeserver()
        .rooms
        .pdu(&real)
        .await
        .expect("read")
        .expect("stored");
    let mut tampered: Value = serde_json::from_str(&pdu.json).expect("json");
    tampered["content"]["body"] = json!("forged");
    tampered["origin_server_ts"] = json!(1);
    let mut bad_sig: Value = serde_json::from_str(&pdu.json).expect("json");
    bad_sig["origin_server_ts"] = json!(2);
    let b_name = ServerName::parse(b.server_name()).expect("name");
    let honest_a = tls_client(&a, a.node().homeserver().key.clone(), &a.server_name(), &ca);
    let answer = honest_a
        .request(
            &b_name,
            http::Method::PUT,
            "/_matrix/federation/v1/send/forged-over-tls",
            Some(&json!({
                "origin": a.server_name(),
                "origin_server_ts": 1,
                "pdus": [tampered, bad_sig],
            })),
        )
        .await
        .expect("transaction answered");
    let results = answer["pdus"].as_object().expect("pdus");
    assert_eq!(results.len(), 2, "{answer}");
    for (id, result) in results {
        assert!(result["error"].is_string(), "{id}: {result}");
        let stored = b.node().homeserver().rooms.pdu(id).await.expect("read");
        assert!(stored.is_none(), "{id} must not be stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_whose_certificate_is_not_trusted_is_not_talked_to() {
    let ca = TestCa::new("grove");
    let rogue_ca = TestCa::new("rogue");
    let a = start_tls_node(Backend::Sqlite, &ca, &ca).await;
    // U's certificate comes from a CA that A does not trust.
    let u = start_tls_node(Backend::Sqlite, &rogue_ca, &ca).await;
    let alice = a.register("alice").await;
    let ursula = u.register("ursula").await;
    let u_name = ServerName::parse(u.server_name()).expect("name");

    // A client trusting only A's CA refuses U's certificate.
    let client = tls_client(&a, a.node().homeserver().key.clone(), &a.server_name(), &ca);
    match client
        .request(
            &u_name,
            http::Method::GET,
            "/_matrix/federation/v1/version",
            None,
        )
        .await
    {
        Err(RequestError::Tls(_)) => {}
        other => panic!("an untrusted certificate must fail the request: {other:?}"),
    }
    // The same request with U's CA trusted goes through: U is up and answering.
    let trusting = tls_client(
        &a,
        a.node().homeserver().key.clone(),
        &a.server_name(),
        &rogue_ca,
    );
    trusting
        .request(
            &u_name,
            http::Method::GET,
            "/_matrix/federation/v1/version",
            None,
        )
        .await
        .expect("U answers a client that trusts its CA");

    // Through the client API: A's user cannot look U's user up, and A keeps serving.
    let (status, body) = a
        .get(
            &format!("{V3}/profile/{}", enc(&ursula.user_id)),
            Some(&alice.token),
        )
        .await;
    assert_ne!(
        status,
        StatusCode::OK,
        "profile over an untrusted link: {body}"
    );
    let room = u
        .create_room(&ursula, json!({ "preset": "public_chat" }))
        .await;
    let (status, body) = a
        .post(
            &format!("{V3}/join/{}?via={}", enc(&room), u.server_name()),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_ne!(
        status,
        StatusCode::OK,
        "join over an untrusted link: {body}"
    );
    let (status, _) = a
        .get(&format!("{V3}/account/whoami"), Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK);
}
