//! Federation over the overlay: three nodes in one process, in a line A – B – C over real
//! loopback QUIC (A and C are not peered, so their sessions cross B). Users on all three share a
//! room created on A: joins by room ID and by alias, messages reaching everyone's `/sync`, an
//! invite from C to a user on A, a leave and a ban.

use std::time::Instant;

use grove_server::storage::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{PATIENCE, TestNode, TestUser, enc, eventually};

const V3: &str = "/_matrix/client/v3";

/// A user's view of `/sync`, accumulated over incremental syncs.
struct Syncer {
    since: Option<String>,
    /// Every timeline event seen, per room.
    timeline: Vec<(String, Value)>,
    /// The last sync response.
    last: Value,
}

impl Syncer {
    fn new() -> Self {
        Self {
            since: None,
            timeline: Vec::new(),
            last: Value::Null,
        }
    }

    async fn step(&mut self, node: &TestNode, user: &TestUser) {
        // A timeline long enough that no sync is `limited`: the accumulated view must hold
        // every event, and events fetched to fill a gap arrive many at once.
        const WHOLE_TIMELINE: &str =
            "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A500%7D%7D%7D";
        let path = match &self.since {
            Some(s) => format!("{V3}/sync?timeout=500&filter={WHOLE_TIMELINE}&since={s}"),
            None => format!("{V3}/sync?filter={WHOLE_TIMELINE}"),
        };
        let (status, body) = node.get(&path, Some(&user.token)).await;
        assert_eq!(status, StatusCode::OK, "sync: {body}");
        if let Some(rooms) = body["rooms"]["join"].as_object() {
            for (room, data) in rooms {
                for event in data["timeline"]["events"].as_array().into_iter().flatten() {
                    self.timeline.push((room.clone(), event.clone()));
                }
            }
        }
        self.since = body["next_batch"].as_str().map(str::to_owned);
        self.last = body;
    }

    fn bodies(&self, room: &str) -> Vec<String> {
        self.timeline
            .iter()
            .filter(|(r, e)| r == room && e["type"] == "m.room.message")
            .filter_map(|(_, e)| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }

    /// Syncs until `done` holds.
    async fn until(
        &mut self,
        node: &TestNode,
        user: &TestUser,
        what: &str,
        done: impl Fn(&Syncer) -> bool,
    ) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.step(node, user).await;
            if done(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen by {} after {PATIENCE:?}; timeline: {:?}; last sync: {}",
                user.user_id,
                self.timeline
                    .iter()
                    .map(|(_, e)| format!("{} {}", e["type"], e["content"]["body"]))
                    .collect::<Vec<_>>(),
                self.last
            );
        }
    }
}

async fn joined_members(node: &TestNode, user: &TestUser, room: &str) -> Vec<String> {
    let (status, body) = node
        .get(
            &format!("{V3}/rooms/{}/joined_members", enc(room)),
            Some(&user.token),
        )
        .await;
    if status != StatusCode::OK {
        return Vec::new();
    }
    let mut members: Vec<String> = body["joined"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    members.sort();
    members
}

async fn wait_members(node: &TestNode, user: &TestUser, room: &str, expected: &[&str]) {
    let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    eventually(
        &format!("members of {room} on {}", node.server_name()),
        async || {
            let members = joined_members(node, user, room).await;
            if members == expected {
                Ok(())
            } else {
                Err(format!("{members:?}"))
            }
        },
    )
    .await
}

async fn membership(node: &TestNode, user: &TestUser, room: &str, target: &str) -> String {
    let (_, body) = node
        .get(
            &format!(
                "{V3}/rooms/{}/state/m.room.member/{}",
                enc(room),
                enc(target)
            ),
            Some(&user.token),
        )
        .await;
    body["membership"].as_str().unwrap_or("").to_owned()
}

async fn wait_membership(
    node: &TestNode,
    user: &TestUser,
    room: &str,
    target: &str,
    expected: &str,
) {
    eventually(
        &format!("{target} {expected} on {}", node.server_name()),
        async || {
            let m = membership(node, user, room, target).await;
            if m == expected { Ok(()) } else { Err(m) }
        },
    )
    .await
}

async fn line_of_three(backend: Backend) {
    let b = TestNode::start_federated(backend, Vec::new()).await;
    let a = TestNode::start_federated(backend, vec![b.peer_address()]).await;
    let c = TestNode::start_federated(backend, vec![b.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = c.register("carol").await;

    // A room on A, published under an alias on A.
    let (status, created) = a
        .post(
            &format!("{V3}/createRoom"),
            Some(&alice.token),
            json!({ "preset": "public_chat", "room_alias_name": "room", "name": "Line" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom: {created}");
    let room = created["room_id"].as_str().expect("room_id").to_owned();

    // Bob on B joins by room ID through A; Carol on C by alias (A is two hops away).
    b.join_via(&bob, &room, &a.server_name()).await;
    let alias = format!("#room:{}", a.server_name());
    let path = format!("{V3}/join/{}", enc(&alias));
    let joined = eventually("carol joins by alias", async || {
        let (status, body) = c.post(&path, Some(&carol.token), json!({})).await;
        if status == StatusCode::OK {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    assert_eq!(joined["room_id"], room.as_str());

    let everyone = [
        alice.user_id.as_str(),
        bob.user_id.as_str(),
        carol.user_id.as_str(),
    ];
    wait_members(&a, &alice, &room, &everyone).await;
    wait_members(&b, &bob, &room, &everyone).await;
    wait_members(&c, &carol, &room, &everyone).await;

    // Everyone's messages reach everyone's /sync.
    let mut syncs = [Syncer::new(), Syncer::new(), Syncer::new()];
    a.send_text(&alice, &room, "from alice").await;
    b.send_text(&bob, &room, "from bob").await;
    c.send_text(&carol, &room, "from carol").await;
    let wanted = ["from alice", "from bob", "from carol"];
    for ((node, user), sync) in [(&a, &alice), (&b, &bob), (&c, &carol)]
        .into_iter()
        .zip(syncs.iter_mut())
    {
        sync.until(node, user, "all three messages", |s| {
            let bodies = s.bodies(&room);
            wanted.iter().all(|w| bodies.iter().any(|b| b == w))
        })
        .await;
    }

    // Profiles of users on other nodes, through federation (C asks A, two hops away).
    let (status, body) = a
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
            Some(&alice.token),
            json!({ "displayname": "Alice A" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = c
        .get(
            &format!("{V3}/profile/{}", enc(&alice.user_id)),
            Some(&carol.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "remote profile: {body}");
    assert_eq!(body["displayname"], "Alice A");
    let nobody = format!("@nobody:{}", a.server_name());
    let (status, body) = c
        .get(
            &format!("{V3}/profile/{}", enc(&nobody)),
            Some(&carol.token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown remote user: {body}");

    // Typing on B shows on A; a read receipt on A shows on B.
    let (status, body) = b
        .put(
            &format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id)),
            Some(&bob.token),
            json!({ "typing": true, "timeout": 20000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "typing: {body}");
    syncs[0]
        .until(&a, &alice, "bob typing", |s| {
            s.last["rooms"]["join"][room.as_str()]["ephemeral"]["events"]
                .as_array()
                .is_some_and(|events| {
                    events.iter().any(|e| {
                        e["type"] == "m.typing"
                            && e["content"]["user_ids"]
                                .as_array()
                                .is_some_and(|u| u.iter().any(|u| u == bob.user_id.as_str()))
                    })
                })
        })
        .await;
    let from_bob = syncs[0]
        .timeline
        .iter()
        .find(|(_, e)| e["content"]["body"] == "from bob")
        .and_then(|(_, e)| e["event_id"].as_str())
        .expect("bob's message on A")
        .to_owned();
    let (status, body) = a
        .post(
            &format!(
                "{V3}/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&from_bob)
            ),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "receipt: {body}");
    syncs[1]
        .until(&b, &bob, "alice's read receipt", |s| {
            s.last["rooms"]["join"][room.as_str()]["ephemeral"]["events"]
                .as_array()
                .is_some_and(|events| {
                    events.iter().any(|e| {
                        e["type"] == "m.receipt"
                            && e["content"][from_bob.as_str()]["m.read"]
                                .get(alice.user_id.as_str())
                                .is_some()
                    })
                })
        })
        .await;

    // Alice lets Carol invite; C learns it over federation.
    let levels_path = format!("{V3}/rooms/{}/state/m.room.power_levels/", enc(&room));
    let (status, mut levels) = a.get(&levels_path, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "power levels: {levels}");
    levels["users"][carol.user_id.as_str()] = json!(50);
    levels["invite"] = json!(50);
    let (status, body) = a.put(&levels_path, Some(&alice.token), levels).await;
    assert_eq!(status, StatusCode::OK, "set power levels: {body}");
    eventually("C sees Carol's power", async || {
        let (_, levels) = c.get(&levels_path, Some(&carol.token)).await;
        if levels["users"][carol.user_id.as_str()] == 50 {
            Ok(())
        } else {
            Err(levels.to_string())
        }
    })
    .await;

    // Carol on C invites a second user of A, who sees the invite and joins.
    let dave = a.register("dave").await;
    let (status, body) = c
        .post(
            &format!("{V3}/rooms/{}/invite", enc(&room)),
            Some(&carol.token),
            json!({ "user_id": dave.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "invite: {body}");
    let mut dave_sync = Syncer::new();
    dave_sync
        .until(&a, &dave, "the invite", |s| {
            s.last["rooms"]["invite"].get(room.as_str()).is_some()
        })
        .await;
    let (status, body) = a
        .post(
            &format!("{V3}/rooms/{}/join", enc(&room)),
            Some(&dave.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "dave joins: {body}");
    let with_dave = [
        alice.user_id.as_str(),
        bob.user_id.as_str(),
        carol.user_id.as_str(),
        dave.user_id.as_str(),
    ];
    wait_members(&c, &carol, &room, &with_dave).await;
    wait_members(&b, &bob, &room, &with_dave).await;
    a.send_text(&dave, &room, "from dave").await;
    syncs[2]
        .until(&c, &carol, "dave's message", |s| {
            s.bodies(&room).iter().any(|b| b == "from dave")
        })
        .await;

    // Bob leaves; the others see it.
    let (status, body) = b
        .post(
            &format!("{V3}/rooms/{}/leave", enc(&room)),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "leave: {body}");
    wait_membership(&a, &alice, &room, &bob.user_id, "leave").await;
    wait_membership(&c, &carol, &room, &bob.user_id, "leave").await;

    // Alice bans Carol; C learns it and Carol's sync shows the room as left.
    let (status, body) = a
        .post(
            &format!("{V3}/rooms/{}/ban", enc(&room)),
            Some(&alice.token),
            json!({ "user_id": carol.user_id, "reason": "test" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "ban: {body}");
    syncs[2]
        .until(&c, &carol, "the ban", |s| {
            s.last["rooms"]["leave"].get(room.as_str()).is_some()
        })
        .await;
    let (status, _) = c
        .put(
            &format!("{V3}/rooms/{}/send/m.room.message/after-ban", enc(&room)),
            Some(&carol.token),
            json!({ "msgtype": "m.text", "body": "banned" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a banned user cannot send");

    // A room on C that A is not in: Erin invites Dave of A as she creates it (as clients
    // start a DM) and Frank of A afterwards. Frank refuses, Dave joins through C (two hops
    // away), and Erin's message reaches him.
    let erin = c.register("erin").await;
    let frank = a.register("frank").await;
    let (status, created) = c
        .post(
            &format!("{V3}/createRoom"),
            Some(&erin.token),
            json!({ "preset": "private_chat", "name": "Erin's", "invite": [dave.user_id] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom on C: {created}");
    let dm = created["room_id"].as_str().expect("room_id").to_owned();
    let (status, body) = c
        .post(
            &format!("{V3}/rooms/{}/invite", enc(&dm)),
            Some(&erin.token),
            json!({ "user_id": frank.user_id }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "invite to a room A is not in: {body}"
    );
    let mut frank_sync = Syncer::new();
    frank_sync
        .until(&a, &frank, "the remote invite", |s| {
            s.last["rooms"]["invite"][dm.as_str()]["invite_state"]["events"]
                .as_array()
                .is_some_and(|events| {
                    events
                        .iter()
                        .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Erin's")
                })
        })
        .await;
    let (status, body) = a
        .post(
            &format!("{V3}/rooms/{}/leave", enc(&dm)),
            Some(&frank.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "refuse a remote invite: {body}");
    wait_membership(&c, &erin, &dm, &frank.user_id, "leave").await;
    frank_sync
        .until(&a, &frank, "the refusal", |s| {
            s.last["rooms"]["leave"].get(dm.as_str()).is_some()
        })
        .await;

    dave_sync
        .until(&a, &dave, "the remote invite", |s| {
            s.last["rooms"]["invite"].get(dm.as_str()).is_some()
        })
        .await;
    let (status, body) = a
        .post(
            &format!("{V3}/join/{}", enc(&dm)),
            Some(&dave.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "join after a remote invite: {body}");
    wait_members(
        &c,
        &erin,
        &dm,
        &[erin.user_id.as_str(), dave.user_id.as_str()],
    )
    .await;
    c.send_text(&erin, &dm, "hello dave").await;
    dave_sync
        .until(&a, &dave, "Erin's message", |s| {
            s.bodies(&dm).iter().any(|b| b == "hello dave")
        })
        .await;

    for node in [a, b, c] {
        if let Some(n) = node.node {
            n.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_in_a_line_share_a_room_sqlite() {
    line_of_three(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_in_a_line_share_a_room_postgres() {
    line_of_three(Backend::Postgres).await;
}

/// A federation client of node `from`, signing with `key` as `origin`.
fn client_of(
    from: &TestNode,
    key: std::sync::Arc<grove_server::NodeKey>,
    origin: &str,
) -> grove_federation::client::Client {
    grove_federation::client::Client::new(
        from.node().overlay().expect("overlay").clone(),
        key,
        ruma::ServerName::parse(origin).expect("server name"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_requests_and_events_are_refused() {
    let a = TestNode::start_federated(Backend::Sqlite, Vec::new()).await;
    let b = TestNode::start_federated(Backend::Sqlite, vec![a.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let b_name = ruma::ServerName::parse(b.server_name()).expect("name");
    let profile = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        enc(&bob.user_id)
    );

    // A real request from A is answered.
    let honest = client_of(&a, a.node().homeserver().key.clone(), &a.server_name());
    eventually("A reaches B", async || {
        honest
            .request(&b_name, http::Method::GET, &profile, None)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;

    // Signed by another key in A's name: the signature does not match the name.
    let other = std::sync::Arc::new(grove_server::NodeKey::generate().expect("key"));
    let forger = client_of(&a, other.clone(), &a.server_name());
    let err = forger
        .request(&b_name, http::Method::GET, &profile, None)
        .await
        .expect_err("forged signature refused");
    assert!(err.to_string().contains("M_UNAUTHORIZED"), "{err}");

    // Correctly signed in another node's name, but sent over A's session.
    let other_name = other.hex();
    let impostor = client_of(&a, other, &other_name);
    let err = impostor
        .request(&b_name, http::Method::GET, &profile, None)
        .await
        .expect_err("origin other than the session's peer refused");
    assert!(err.to_string().contains("M_UNAUTHORIZED"), "{err}");

    // A shared room; then A's server sends B a tampered copy of a real event.
    let (status, created) = a
        .post(
            &format!("{V3}/createRoom"),
            Some(&alice.token),
            json!({ "preset": "public_chat" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().expect("room").to_owned();
    let (status, body) = b
        .post(
            &format!("{V3}/join/{}?via={}", enc(&room), a.server_name()),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, sent) = a
        .put(
            &format!("{V3}/rooms/{}/send/m.room.message/real", enc(&room)),
            Some(&alice.token),
            json!({ "msgtype": "m.text", "body": "real" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let event_id = sent["event_id"].as_str().expect("event_id");
    let pdu = a
        .node()
        .homeserver()
        .rooms
        .pdu(event_id)
        .await
        .expect("read")
        .expect("stored");
    let mut tampered: Value = serde_json::from_str(&pdu.json).expect("json");
    tampered["content"]["body"] = json!("forged");
    tampered["origin_server_ts"] = json!(1);
    let mut bad_sig: Value = serde_json::from_str(&pdu.json).expect("json");
    bad_sig["origin_server_ts"] = json!(2);
    let txn = json!({
        "origin": a.server_name(),
        "origin_server_ts": 1,
        "pdus": [tampered, bad_sig, { "not": "an event" }],
    });
    let answer = honest
        .request(
            &b_name,
            http::Method::PUT,
            "/_matrix/federation/v1/send/forged1",
            Some(&txn),
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

    // A transaction over the size limit is refused whole.
    let many: Vec<Value> = (0..51).map(|i| json!({ "n": i })).collect();
    let err = honest
        .request(
            &b_name,
            http::Method::PUT,
            "/_matrix/federation/v1/send/forged2",
            Some(&json!({ "origin": a.server_name(), "origin_server_ts": 1, "pdus": many })),
        )
        .await
        .expect_err("oversized transaction refused");
    assert!(err.to_string().contains("M_BAD_JSON"), "{err}");

    // Every refusal is counted.
    let refused = b
        .metric("grove_federation_pdus_received_total{outcome=\"refused\"}")
        .await;
    assert!(refused >= 3.0, "refused PDUs counted: {refused}");
    let text = b.metrics().await;
    assert!(
        text.contains("grove_federation_transactions_received_total{outcome=\"refused\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("grove_overlay_peers"),
        "overlay metrics served: {text}"
    );
    assert!(text.contains("grove_client_requests_total"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");

    // A flood of one transaction, sent many times at once: handled once, every copy answered
    // with the same result, and the node keeps serving its users.
    let flood = json!({
        "origin": a.server_name(),
        "origin_server_ts": 1,
        "pdus": [],
        "edus": [{ "edu_type": "m.typing", "content": {
            "room_id": room, "user_id": alice.user_id, "typing": true, "timeout": 1000 } }],
    });
    let copies = (0..64).map(|_| {
        honest.request(
            &b_name,
            http::Method::PUT,
            "/_matrix/federation/v1/send/flood",
            Some(&flood),
        )
    });
    for answer in futures_util::future::join_all(copies).await {
        assert_eq!(answer.expect("flood answered"), json!({ "pdus": {} }));
    }
    let text = b.metrics().await;
    assert!(
        text.contains("grove_federation_transactions_received_total{outcome=\"duplicate\"} 63"),
        "{text}"
    );
    assert!(
        text.contains("grove_federation_edus_received_total{edu_type=\"m.typing\"} 1"),
        "{text}"
    );
    let (status, _) = b
        .get("/_matrix/client/v3/account/whoami", Some(&bob.token))
        .await;
    assert_eq!(status, StatusCode::OK);

    for node in [a, b] {
        if let Some(n) = node.node {
            n.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_was_offline_receives_what_it_missed() {
    let a = TestNode::start_federated(Backend::Sqlite, Vec::new()).await;
    let mut b = TestNode::start_federated(Backend::Sqlite, vec![a.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (status, created) = a
        .post(
            &format!("{V3}/createRoom"),
            Some(&alice.token),
            json!({ "preset": "public_chat" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().expect("room").to_owned();
    b.join_via(&bob, &room, &a.server_name()).await;
    wait_members(&a, &alice, &room, &[&alice.user_id, &bob.user_id]).await;
    let mut bob_sync = Syncer::new();
    bob_sync.step(&b, &bob).await;

    // B goes away; A keeps talking; its queue for B holds the messages.
    let node = b.node.take().expect("running");
    let addr = node.client_addr();
    node.shutdown().await;
    for i in 0..3 {
        a.send_text(&alice, &room, &format!("while away {i}")).await;
    }
    b.node = None;
    b.restart_at(addr).await;

    let wanted: Vec<String> = (0..3).map(|i| format!("while away {i}")).collect();
    bob_sync
        .until(&b, &bob, "the messages sent while B was away", |s| {
            s.bodies(&room) == wanted
        })
        .await;

    for node in [a, b] {
        if let Some(n) = node.node {
            n.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_longer_than_one_missing_events_answer_is_filled_in_rounds() {
    // Fetched whole: 60 events are two rounds of get_missing_events.
    gap_after_absence(60, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_longer_than_the_rounds_reach_is_bridged_with_state() {
    // The 500 newest are fetched; the oldest of them is placed over the state A reports
    // before it, and the 100 before that stay with A (more than one transaction in flight
    // could bring first, so the gap left is longer than the rounds reach either way).
    gap_after_absence(600, 100).await;
}

/// B is away while A sends `missed` messages, and A's queue for B is lost; one more message
/// must bring B every message from `first_fetched` on, in order.
async fn gap_after_absence(missed: usize, first_fetched: usize) {
    let a = TestNode::start_federated(Backend::Sqlite, Vec::new()).await;
    let mut b = TestNode::start_federated(Backend::Sqlite, vec![a.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    b.join_via(&bob, &room, &a.server_name()).await;
    wait_members(&a, &alice, &room, &[&alice.user_id, &bob.user_id]).await;
    let mut bob_sync = Syncer::new();
    bob_sync.step(&b, &bob).await;

    let node = b.node.take().expect("running");
    let addr = node.client_addr();
    node.shutdown().await;
    for i in 0..missed {
        a.send_text(&alice, &room, &format!("while away {i}")).await;
    }
    let b_name = ruma::ServerName::parse(b.server_name_offline()).expect("name");
    let queue = &a.node().homeserver().federation_queue;
    let queued = eventually("A queues the messages for B", async || {
        let queued = queue
            .peek(&b_name, missed as i64 + 10)
            .await
            .map_err(|e| e.to_string())?;
        if queued.len() == missed {
            Ok(queued)
        } else {
            Err(format!("{} queued", queued.len()))
        }
    })
    .await;
    let ids: Vec<_> = queued.into_iter().map(|q| q.event_id).collect();
    queue.remove(&b_name, &ids).await.expect("queue emptied");
    b.restart_at(addr).await;

    // One more message: B fetches what came before it, in rounds of 50, and adds it in order.
    // A transaction already under way when the queue was emptied may still bring the first
    // few messages first.
    a.send_text(&alice, &room, "after the gap").await;
    let mut wanted: Vec<String> = (first_fetched..missed)
        .map(|i| format!("while away {i}"))
        .collect();
    wanted.push("after the gap".into());
    bob_sync
        .until(&b, &bob, "the messages of the gap, in order", |s| {
            let bodies = s.bodies(&room);
            let Some(split) = bodies.len().checked_sub(wanted.len()) else {
                return false;
            };
            let (early, late) = bodies.split_at(split);
            late == wanted.as_slice()
                && early
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == format!("while away {i}"))
        })
        .await;
    // The room still works both ways.
    b.send_text(&bob, &room, "bob is back").await;
    let mut alice_sync = Syncer::new();
    alice_sync
        .until(&a, &alice, "bob's message after the gap", |s| {
            s.bodies(&room).iter().any(|m| m == "bob is back")
        })
        .await;

    for node in [a, b] {
        if let Some(n) = node.node {
            n.shutdown().await;
        }
    }
}
