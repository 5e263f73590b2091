//! Federation of a split home: two replicas A and B of one home (its key imported on B) and a
//! node C of another home. C reaches the home at any replica its document lists, takes
//! documents from replicas' key servers, from transactions and from the ring, checks the
//! home's events with the keys the document certifies, and refuses (and counts) forged, old
//! and foreign documents, revoked keys and ring records under someone else's key.

use std::{path::Path, sync::Arc};

use grove::Custody;
use grove_federation::{
    client::Client,
    error::RequestError,
    homes::{HomeRecordPolicy, document_record},
};
use grove_overlay::{identity::NodeKeypair, router::RecordPolicy};
use grove_server::{
    NodeKey,
    home::{HomeKey, Replica, ReplicaDocument},
    storage::Backend,
    testing::TestDb,
};
use ruma::{CanonicalJsonValue, ServerName};
use serde_json::{Value, json};

use crate::support::{TestNode, TestUser, enc, eventually, message_bodies};

/// Five random-looking words: strong enough for a home.
const STRONG: &str = "orbit velvet gravel tundra pickle";

fn custody(dir: &Path, database_url: &str) -> Custody {
    Custody::new(&grove::Config {
        data_dir: dir.to_owned(),
        database_url: Some(database_url.to_owned()),
        ..grove::Config::default()
    })
}

/// Revokes `node` through the custody of `at`'s data directory: the new document.
async fn revoke_at(at: &TestNode, node: &str) -> ReplicaDocument {
    custody(at.dir.path(), &at.db.url)
        .revoke(node)
        .await
        .expect("revoke")
        .document
        .expect("document")
}

/// The node key a data directory signs with.
fn node_key_of(dir: &Path) -> NodeKey {
    NodeKey::load_or_create(&dir.join("node.key"))
        .and_then(NodeKey::with_replica_key_id)
        .expect("node key")
}

/// A split home A, a second replica B of it (the home key imported into B's fresh
/// directory), and C, a node of its own home that A and B peer with.
struct Homes {
    a: TestNode,
    b: TestNode,
    c: TestNode,
    home: String,
}

async fn two_replicas_and_a_stranger() -> Homes {
    let c = TestNode::start_federated(Backend::Sqlite, Vec::new()).await;
    let a = TestNode::start_federated_in(
        tempfile::tempdir().expect("dir"),
        TestDb::new(Backend::Sqlite).await,
        vec![c.peer_address()],
        true,
    )
    .await;
    let home = a.server_name();
    assert_ne!(
        home,
        a.node().identity().await.expect("identity").node_key,
        "A's name is a home key apart from its node key"
    );
    let exported = custody(a.dir.path(), &a.db.url)
        .export(STRONG)
        .await
        .expect("export");
    let b_dir = tempfile::tempdir().expect("dir");
    let b_db = TestDb::new(Backend::Sqlite).await;
    custody(b_dir.path(), &b_db.url)
        .import(exported, STRONG)
        .await
        .expect("import");
    let b =
        TestNode::start_federated_in(b_dir, b_db, vec![c.peer_address(), a.peer_address()], false)
            .await;
    assert_eq!(b.server_name(), home);
    Homes { a, b, c, home }
}

/// The newest document of `home` that `node` holds.
async fn held(node: &TestNode, home: &str) -> Option<Arc<ReplicaDocument>> {
    let name = ServerName::parse(home).expect("name");
    node.node()
        .federation()
        .expect("federation")
        .keys
        .homes()
        .document(&name)
        .await
}

async fn membership_on(node: &TestNode, user: &TestUser, room: &str) -> String {
    sqlx::query_scalar::<_, String>(
        "SELECT membership FROM memberships WHERE room_id = $1 AND user_id = $2",
    )
    .bind(room)
    .bind(&user.user_id)
    .fetch_optional(node.node().homeserver().storage.pool())
    .await
    .expect("membership")
    .unwrap_or_default()
}

/// Waits until `user`'s sync on `node` shows `body` in `room`.
async fn sees(node: &TestNode, user: &TestUser, room: &str, body: &str) {
    eventually(&format!("{body:?} seen by {}", user.user_id), async || {
        let synced = node.sync_now(user, None).await;
        let events = &synced["rooms"]["join"][room]["timeline"]["events"];
        if message_bodies(events).iter().any(|b| b == body) {
            Ok(())
        } else {
            Err(events.to_string())
        }
    })
    .await;
}

/// The stored JSON of an event as the node that made it holds it.
async fn event_json(node: &TestNode, event_id: &str) -> ruma::CanonicalJsonObject {
    let pdu = node
        .node()
        .homeserver()
        .rooms
        .pdu(event_id)
        .await
        .expect("read")
        .expect("held");
    let value: Value = serde_json::from_str(&pdu.json).expect("json");
    match CanonicalJsonValue::try_from(value).expect("canonical") {
        CanonicalJsonValue::Object(object) => object,
        other => panic!("not an object: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_home_is_reached_at_any_listed_replica_and_revoked_keys_are_refused() {
    let Homes { mut a, b, c, home } = two_replicas_and_a_stranger().await;
    let alice = a.register("alice").await;
    let bob = c.register("bob").await;
    let room = a
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "invite": [bob.user_id] }),
        )
        .await;
    // The invite came from A's node speaking for a home that is not its key: C took the
    // home's document from A's key server, and reaches the home at A.
    let first = eventually("C holds the home's document", async || {
        held(&c, &home).await.ok_or_else(|| "none".to_owned())
    })
    .await;
    let a_node = a.node().identity().await.expect("identity").node_key;
    assert!(first.replica(&a_node).is_some());
    c.join_via(&bob, &room, &home).await;

    // Alice's account on B (accounts are not replicated yet) joins through C: C takes B for
    // the home's replica once it holds the newer document listing it (from A, told by B, or
    // from B's key server).
    let alice_b = b.register("alice").await;
    assert_eq!(alice_b.user_id, alice.user_id);
    b.join_via(&alice_b, &room, &c.server_name()).await;
    assert_eq!(membership_on(&b, &alice_b, &room).await, "join");
    let listed = held(&c, &home).await.expect("document");
    assert_eq!(listed.replicas().len(), 2, "C holds the document listing B");
    assert!(listed.version() >= first.version());

    // A goes away; what C sends to the home reaches B.
    let a_addr = a.node().client_addr();
    a.node.take().expect("A runs").shutdown().await;
    c.send_text(&bob, &room, "while A is away").await;
    sees(&b, &alice_b, &room, "while A is away").await;

    // B revokes A. B's next transaction carries the new document to C.
    let revoked = revoke_at(&b, &a_node).await;
    b.send_text(&alice_b, &room, "A is revoked").await;
    sees(&c, &bob, &room, "A is revoked").await;
    eventually("C holds the document revoking A", async || {
        match held(&c, &home).await {
            Some(doc) if doc.version() == revoked.version() => Ok(()),
            other => Err(format!("{:?}", other.map(|d| d.version()))),
        }
    })
    .await;

    // A comes back and speaks for the home before or after B tells it of its revocation: C
    // refuses its requests (A's key server shows the older document, counted as stale, or the
    // one dropping A) and counts it.
    a.restart_at(a_addr).await;
    let late = a.send_text(&alice, &room, "from a revoked replica").await;
    eventually("C refuses the revoked replica", async || {
        let refused = c
            .metric("grove_federation_homes_refused_total{reason=\"not_replica\"}")
            .await;
        if refused >= 1.0 {
            Ok(())
        } else {
            Err(format!("not_replica {refused}"))
        }
    })
    .await;
    // Whoever carries it, an event A signed after its key's expiry is refused; what A signed
    // before (the room's creation) still checks.
    let keys = &c.node().federation().expect("federation").keys;
    let rules = room_rules(&c, &room).await;
    let late = event_json(&a, &late).await;
    assert!(keys.check_event(&late, &rules).await.is_err());
    let synced = c.sync_now(&bob, None).await;
    let events = &synced["rooms"]["join"][room.as_str()]["timeline"]["events"];
    assert!(
        !message_bodies(events).contains(&"from a revoked replica".to_owned()),
        "{events}"
    );
    let (status, state) = c
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state", enc(&room)),
            Some(&bob.token),
        )
        .await;
    assert!(status.is_success(), "{state}");
    let create = state
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"] == "m.room.create")
        .and_then(|e| e["event_id"].as_str())
        .expect("the create event")
        .to_owned();
    let object = event_json(&c, &create).await;
    keys.check_event(&object, &rules)
        .await
        .expect("what A signed before its revocation checks");
}

/// A client speaking for the home over `over`'s overlay sessions, signing with the key in
/// `key_dir`.
fn home_client(homes: &Homes, over: &TestNode, key_dir: &Path) -> Client {
    Client::new(
        over.node().overlay().expect("overlay").clone(),
        Arc::new(node_key_of(key_dir)),
        ServerName::parse(&homes.home).expect("name"),
    )
}

/// Sends one transaction from `client` to `to`, carrying `edus`.
async fn send_transaction(
    homes: &Homes,
    client: &Client,
    to: &TestNode,
    txn: &str,
    edus: &[Value],
) -> Result<Value, RequestError> {
    let to = ServerName::parse(to.server_name()).expect("name");
    let body = json!({
        "origin": homes.home,
        "origin_server_ts": 1,
        "pdus": [],
        "edus": edus,
    });
    client
        .request(
            &to,
            http::Method::PUT,
            &format!("/_matrix/federation/v1/send/{txn}"),
            Some(&body),
        )
        .await
}

/// Sends one transaction to C from B's node, speaking for the home, carrying `edus`.
async fn transaction_from_b(homes: &Homes, txn: &str, edus: Vec<Value>) -> Value {
    let client = home_client(homes, &homes.b, homes.b.dir.path());
    eventually("C takes the transaction", async || {
        send_transaction(homes, &client, &homes.c, txn, &edus)
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_speaks_for_the_home_with_its_own_key_only() {
    let homes = two_replicas_and_a_stranger().await;
    // C holds the document listing A and B once it took B's transaction.
    transaction_from_b(&homes, "own", Vec::new()).await;
    assert!(held(&homes.c, &homes.home).await.is_some());
    // Over B's session, signed with A's key: A's key is certified, but not for B.
    let borrowed = home_client(&homes, &homes.b, homes.a.dir.path());
    let refused = send_transaction(&homes, &borrowed, &homes.c, "borrowed", &[]).await;
    assert!(
        matches!(refused, Err(RequestError::Remote { status: 401, .. })),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_old_and_foreign_documents_and_records_are_refused_and_counted() {
    let homes = two_replicas_and_a_stranger().await;
    let Homes { a, b, c, home } = &homes;
    let edu = |doc: Value| json!({ "edu_type": "org.grove.replica_document", "content": doc });
    let ours = b
        .node()
        .identity()
        .await
        .expect("identity")
        .document
        .expect("document");
    let older = a
        .node()
        .identity()
        .await
        .expect("identity")
        .document
        .expect("document");
    assert!(older.version() < ours.version());

    // A document of the home signed by another key, the home's older document after the
    // newer one, and another home's document offered for this one.
    let other = HomeKey::generate();
    let stranger = Replica::for_node(&node_key_of(c.dir.path()));
    let mut forged = ReplicaDocument::first(&other, stranger.clone(), ours.issued_ts() + 5)
        .expect("document")
        .to_json();
    forged["server_name"] = json!(home);
    let foreign = ReplicaDocument::first(&other, stranger, ours.issued_ts())
        .expect("document")
        .to_json();
    transaction_from_b(&homes, "t1", vec![edu(ours.to_json())]).await;
    transaction_from_b(
        &homes,
        "t2",
        vec![edu(forged), edu(older.to_json()), edu(foreign)],
    )
    .await;
    for reason in ["forged", "stale", "other_home"] {
        assert_eq!(
            c.metric(&format!(
                "grove_federation_homes_refused_total{{reason=\"{reason}\"}}"
            ))
            .await,
            1.0,
            "{reason}\n{}",
            c.metrics().await
        );
    }
    assert_eq!(
        held(c, home).await.expect("held").version(),
        ours.version(),
        "the newest document stays"
    );

    // Ring records: the home's document under the home key, published by a listed replica,
    // is kept; the same under someone else's key, or by a node not listed, is not.
    let b_pair = NodeKeypair::from_seed(node_key_of(b.dir.path()).seed());
    let c_pair = NodeKeypair::from_seed(node_key_of(c.dir.path()).seed());
    let good = document_record(&b_pair, &ours).expect("record");
    assert!(HomeRecordPolicy.may_keep(&good));
    // The older version, published after the newer one by a replica that has not learnt
    // of it, does not displace it on the ring.
    let a_pair = NodeKeypair::from_seed(node_key_of(a.dir.path()).seed());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let stale = document_record(&a_pair, &older).expect("record");
    assert!(HomeRecordPolicy.may_keep(&stale));
    assert!(stale.seq < good.seq, "{} >= {}", stale.seq, good.seq);
    let mut elsewhere = good.clone();
    elsewhere.key = c_pair.public_key();
    assert!(!HomeRecordPolicy.may_keep(&elsewhere));
    let by_stranger = document_record(&c_pair, &ours).expect("record");
    assert!(!HomeRecordPolicy.may_keep(&by_stranger));
    let overlay = c.node().overlay().expect("overlay");
    let refused = overlay
        .publish(by_stranger)
        .await
        .expect_err("C may not publish the home's document");
    assert!(
        matches!(
            refused,
            grove_overlay::driver::HandleError::Record(r) if r.reason == "record_forbidden"
        ),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_never_met_a_home_finds_it_on_the_ring() {
    let homes = two_replicas_and_a_stranger().await;
    let Homes { a, c, home, .. } = &homes;
    // D has met neither A nor B: only the ring tells it where the home is.
    let d = TestNode::start_federated(Backend::Sqlite, vec![c.peer_address()]).await;
    assert!(held(&d, home).await.is_none());
    let name = ServerName::parse(home).expect("name");
    let federation = d.node().federation().expect("federation");
    let overlay = d.node().overlay().expect("overlay");
    let a_node = a.node().identity().await.expect("identity").node_key;
    // Whichever replica's record a placement holds, it is a document of the home, signed by
    // its key and listing A (every version does).
    let found = eventually("the home's document on the ring", async || {
        federation
            .keys
            .homes()
            .look_up(overlay, &name)
            .await
            .ok_or_else(|| "not found".to_owned())
    })
    .await;
    assert_eq!(found.server_name(), home);
    assert!(found.replica(&a_node).is_some());
    let nodes = federation.keys.homes().replicas_of(&name).await;
    let listed: Vec<String> = found
        .replicas()
        .iter()
        .map(|r| r.node_key.clone())
        .collect();
    assert_eq!(
        nodes.iter().map(|n| n.to_hex()).collect::<Vec<_>>(),
        listed,
        "D sends to the home at the replicas the record listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_of_a_home_never_met_checks_once_its_document_is_found_on_the_ring() {
    let homes = two_replicas_and_a_stranger().await;
    let Homes { a, c, home, .. } = &homes;
    let alice = a.register("alice").await;
    let room = a.create_room(&alice, json!({})).await;
    let sent = a.send_text(&alice, &room, "relayed").await;
    // Signed by A's replica key, which only the home's document names.
    let object = event_json(a, &sent).await;
    let rules = room_rules(a, &room).await;

    // D has met neither replica: the event reaches it relayed by someone else.
    let d = TestNode::start_federated(Backend::Sqlite, vec![c.peer_address()]).await;
    let name = ServerName::parse(home).expect("name");
    let overlay = d.node().overlay().expect("overlay");
    let key = grove_federation::keys::node_key(&name).expect("a home key");
    eventually("the home's record on the ring", async || {
        match overlay.lookup(key, std::time::Duration::from_secs(5)).await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(held(&d, home).await.is_none());
    let keys = &d.node().federation().expect("federation").keys;
    keys.check_event(&object, &rules)
        .await
        .expect("the event checks with the key the document found names");
    assert!(held(&d, home).await.is_some());
    assert_eq!(
        d.metric("grove_federation_home_lookups_total{outcome=\"found\"}")
            .await,
        1.0,
        "{}",
        d.metrics().await
    );
    // A forged signature under the same key ID is still refused, without another lookup.
    let mut forged = object.clone();
    forged.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(ruma::Int::from(1u32)),
    );
    assert!(keys.check_event(&forged, &rules).await.is_err());
    assert_eq!(
        d.metric("grove_federation_home_lookups_total{outcome=\"found\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_of_a_home_tell_each_other_of_its_new_documents() {
    let homes = two_replicas_and_a_stranger().await;
    let Homes { a, b, home, .. } = &homes;
    let a_node = a.node().identity().await.expect("identity").node_key;
    let version_on_a = async || held(a, home).await.map(|d| d.version());

    // B's import made a version A's custody did not: B tells A.
    let imported = b
        .node()
        .identity()
        .await
        .expect("identity")
        .document
        .expect("document");
    eventually(
        "A holds the document B's import made",
        async || match version_on_a().await {
            Some(v) if v == imported.version() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;

    // B revokes A: A learns that it was dropped, and stops speaking for the home on the ring.
    let revoked = revoke_at(b, &a_node).await;
    let dropped = eventually("A holds the document dropping it", async || {
        match held(a, home).await {
            Some(doc) if doc.version() == revoked.version() => Ok(doc),
            other => Err(format!("{:?}", other.map(|d| d.version()))),
        }
    })
    .await;
    assert!(dropped.replica(&a_node).is_none());

    // The older document, sent to A by a listed replica, is refused and counted.
    let client = home_client(&homes, b, b.dir.path());
    let body = json!({
        "origin": home,
        "origin_server_ts": 1,
        "pdus": [],
        "edus": [{ "edu_type": "org.grove.replica_document", "content": imported.to_json() }],
    });
    client
        .request_at(
            grove_federation::keys::node_key(&ServerName::parse(&a_node).expect("name"))
                .expect("key"),
            &ServerName::parse(home).expect("name"),
            http::Method::PUT,
            "/_matrix/federation/v1/send/older",
            Some(&body),
        )
        .await
        .expect("A takes the transaction");
    assert_eq!(version_on_a().await, Some(revoked.version()));
    assert!(
        a.metric("grove_federation_homes_refused_total{reason=\"stale\"}")
            .await
            >= 1.0
    );
}

/// The rules of `room`'s version, as `node` holds it.
async fn room_rules(node: &TestNode, room: &str) -> ruma::room_version_rules::RoomVersionRules {
    let version = node
        .node()
        .homeserver()
        .rooms
        .room_version(&ruma::RoomId::parse(room).expect("room"))
        .await
        .expect("version");
    grove_server::rooms::builder::rules_for(&version).expect("rules")
}
