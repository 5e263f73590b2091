//! Partition and merge: nodes A and C, joined only through B, share a room. B stops, so A and C
//! are cut apart; each side sends messages and changes the room's state in ways that conflict.
//! B comes back, the two histories meet, and every node must settle on the same resolved state,
//! the one the rules of state resolution pick, and hold every message sent on both sides.

use std::collections::BTreeMap;

use grove_server::storage::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestNode, TestUser, enc, eventually, message_bodies};

const V3: &str = "/_matrix/client/v3";

/// The room's current state as `(type, state_key) → event_id`, as `node` serves it.
async fn state_ids(
    node: &TestNode,
    user: &TestUser,
    room: &str,
) -> Result<BTreeMap<(String, String), String>, String> {
    let (status, body) = node
        .get(
            &format!("{V3}/rooms/{}/state", enc(room)),
            Some(&user.token),
        )
        .await;
    if status != StatusCode::OK {
        return Err(format!("{status} {body}"));
    }
    let events = body.as_array().ok_or_else(|| body.to_string())?;
    Ok(events
        .iter()
        .map(|e| {
            (
                (
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    e["state_key"].as_str().unwrap_or_default().to_owned(),
                ),
                e["event_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

async fn put_state(node: &TestNode, user: &TestUser, room: &str, kind: &str, content: Value) {
    let (status, body) = node
        .put(
            &format!("{V3}/rooms/{}/state/{kind}/", enc(room)),
            Some(&user.token),
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "put {kind}: {body}");
}

async fn get_state(node: &TestNode, user: &TestUser, room: &str, kind: &str) -> Value {
    let (status, body) = node
        .get(
            &format!("{V3}/rooms/{}/state/{kind}/", enc(room)),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "get {kind}: {body}");
    body
}

/// The message bodies of the room as `user` pages back through it from the end.
async fn history(node: &TestNode, user: &TestUser, room: &str) -> Result<Vec<String>, String> {
    let (status, body) = node
        .get(
            &format!("{V3}/rooms/{}/messages?dir=b&limit=200", enc(room)),
            Some(&user.token),
        )
        .await;
    if status != StatusCode::OK {
        return Err(format!("{status} {body}"));
    }
    Ok(message_bodies(&body["chunk"]))
}

async fn wait_for(node: &TestNode, user: &TestUser, room: &str, wanted: &[&str]) {
    eventually(
        &format!("{wanted:?} on {}", node.server_name()),
        async || {
            let seen = history(node, user, room).await?;
            if wanted.iter().all(|w| seen.iter().any(|s| s == w)) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await
}

async fn partition_and_merge(backend: Backend) {
    // B dials A and C, so stopping B cuts them apart and starting it again joins them.
    let a = TestNode::start_federated(backend, Vec::new()).await;
    let c = TestNode::start_federated(backend, Vec::new()).await;
    let mut b = TestNode::start_federated(backend, vec![a.peer_address(), c.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = c.register("carol").await;

    let room = a
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "name": "Before", "topic": "before" }),
        )
        .await;
    for (node, user) in [(&b, &bob), (&c, &carol)] {
        node.join_via(user, &room, &a.server_name()).await;
    }

    // Carol may set the topic and the name; everyone sees that before the cut.
    let mut levels = get_state(&a, &alice, &room, "m.room.power_levels").await;
    levels["users"][carol.user_id.as_str()] = json!(50);
    levels["events"]["m.room.topic"] = json!(50);
    levels["events"]["m.room.name"] = json!(50);
    put_state(&a, &alice, &room, "m.room.power_levels", levels.clone()).await;
    a.send_text(&alice, &room, "before the cut").await;
    for (node, user) in [(&b, &bob), (&c, &carol)] {
        wait_for(node, user, &room, &["before the cut"]).await;
    }
    eventually(
        "every node holds the same state before the cut",
        async || {
            let on_a = state_ids(&a, &alice, &room).await?;
            let on_b = state_ids(&b, &bob, &room).await?;
            let on_c = state_ids(&c, &carol, &room).await?;
            if on_a == on_b && on_b == on_c {
                Ok(())
            } else {
                Err(format!("A {on_a:?}\nB {on_b:?}\nC {on_c:?}"))
            }
        },
    )
    .await;

    // The cut.
    let b_addr = b.node().client_addr();
    b.node.take().expect("B running").shutdown().await;

    // Each side writes. On A, Alice takes Carol's power away and renames the room; on C, Carol
    // (who still holds her power there) changes the topic and the name. Both sides talk.
    levels["users"][carol.user_id.as_str()] = json!(0);
    put_state(&a, &alice, &room, "m.room.power_levels", levels).await;
    put_state(
        &a,
        &alice,
        &room,
        "m.room.name",
        json!({ "name": "Alice's" }),
    )
    .await;
    a.send_text(&alice, &room, "alice, cut off").await;
    put_state(
        &c,
        &carol,
        &room,
        "m.room.topic",
        json!({ "topic": "carol's" }),
    )
    .await;
    put_state(
        &c,
        &carol,
        &room,
        "m.room.name",
        json!({ "name": "Carol's" }),
    )
    .await;
    c.send_text(&carol, &room, "carol, cut off").await;
    assert_eq!(
        get_state(&c, &carol, &room, "m.room.topic").await["topic"],
        "carol's"
    );

    // The merge.
    b.restart_at(b_addr).await;
    let everything = ["before the cut", "alice, cut off", "carol, cut off"];
    wait_for(&a, &alice, &room, &everything).await;
    wait_for(&b, &bob, &room, &everything).await;
    wait_for(&c, &carol, &room, &everything).await;
    // A message after the merge references both sides, so its state is the resolved one.
    b.send_text(&bob, &room, "after the merge").await;
    let resolved = eventually("every node settles on the same state", async || {
        for (node, user) in [(&a, &alice), (&b, &bob), (&c, &carol)] {
            let seen = history(node, user, &room).await?;
            if !seen.iter().any(|s| s == "after the merge") {
                return Err(format!(
                    "{} has not seen the merge: {seen:?}",
                    node.server_name()
                ));
            }
        }
        let on_a = state_ids(&a, &alice, &room).await?;
        let on_b = state_ids(&b, &bob, &room).await?;
        let on_c = state_ids(&c, &carol, &room).await?;
        if on_a == on_b && on_b == on_c {
            Ok(on_a)
        } else {
            Err(format!("A {on_a:?}\nB {on_b:?}\nC {on_c:?}"))
        }
    })
    .await;

    // What resolution must pick: Alice's power levels (power events first), so Carol's state
    // changes from the cut, authorised only by the power she lost, fall away; Alice's name stays.
    let levels = get_state(&c, &carol, &room, "m.room.power_levels").await;
    assert_eq!(levels["users"][carol.user_id.as_str()], 0, "{levels}");
    for (node, user) in [(&a, &alice), (&b, &bob), (&c, &carol)] {
        let topic = get_state(node, user, &room, "m.room.topic").await;
        assert_eq!(topic["topic"], "before", "on {}", node.server_name());
        let name = get_state(node, user, &room, "m.room.name").await;
        assert_eq!(name["name"], "Alice's", "on {}", node.server_name());
    }
    assert!(resolved.contains_key(&("m.room.member".to_owned(), carol.user_id.clone())));

    // Every message once, in the same order, on every node.
    let mut orders = Vec::new();
    for (node, user) in [(&a, &alice), (&b, &bob), (&c, &carol)] {
        let seen = history(node, user, &room).await.expect("history");
        for wanted in everything.iter().chain(&["after the merge"]) {
            let copies = seen.iter().filter(|s| s == wanted).count();
            assert_eq!(copies, 1, "{wanted} on {}: {seen:?}", node.server_name());
        }
        orders.push(seen);
    }
    assert_eq!(
        orders[0].first().map(String::as_str),
        Some("after the merge")
    );
    for order in &orders {
        assert_eq!(order.last().map(String::as_str), Some("before the cut"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_merges_to_the_same_state_on_every_node_sqlite() {
    partition_and_merge(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_merges_to_the_same_state_on_every_node_postgres() {
    partition_and_merge(Backend::Postgres).await;
}
