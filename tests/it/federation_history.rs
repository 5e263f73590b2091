//! History across nodes: a user who joins a room on another node pages back through
//! `/messages` into what was said before the join, which this node fetches by backfill, in
//! order, once, and only as far as the room's history visibility lets the user see. The
//! backfilled past never shows up in `/sync` as if it were new.

use std::collections::HashSet;

use grove_server::storage::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode, TestUser, enc};

const V3: &str = "/_matrix/client/v3";

/// Every event `user` reaches by paging `room` backwards from now, `limit` at a time, newest
/// first; with the number of pages it took.
async fn page_back(
    node: &TestNode,
    user: &TestUser,
    room: &str,
    limit: usize,
) -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for pages in 1..=100 {
        let mut path = format!("{V3}/rooms/{}/messages?dir=b&limit={limit}", enc(room));
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", enc(from)));
        }
        let (status, page) = node.get(&path, Some(&user.token)).await;
        assert_eq!(status, StatusCode::OK, "messages: {page}");
        events.extend(page["chunk"].as_array().into_iter().flatten().cloned());
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => return (events, pages),
        }
    }
    panic!("paging back through {room} did not end");
}

/// The stored PDUs of the messages `node` holds in `room`.
async fn stored_messages(node: &TestNode, room: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT pdu FROM events WHERE room_id = $1 AND event_type = 'm.room.message'",
    )
    .bind(room)
    .fetch_all(node.node().homeserver().storage.pool())
    .await
    .expect("stored messages")
}

/// How many state group rows `node` holds.
async fn state_rows(node: &TestNode) -> (i64, i64) {
    let pool = node.node().homeserver().storage.pool();
    let count = async |table: &str| -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .expect("count")
    };
    (
        count("state_groups").await,
        count("state_group_entries").await,
    )
}

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

async fn history_before_a_join_is_backfilled(backend: Backend) {
    let a = TestNode::start_federated(backend, Vec::new()).await;
    let b = TestNode::start_federated(backend, vec![a.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;

    let shared = a
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "name": "town square" }),
        )
        .await;
    for i in 0..45 {
        a.send_text(&alice, &shared, &format!("old {i}")).await;
    }
    let secret = a
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "initial_state": [{
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": { "history_visibility": "joined" },
                }],
            }),
        )
        .await;
    for i in 0..5 {
        a.send_text(&alice, &secret, &format!("secret {i}")).await;
    }

    b.join_via(&bob, &shared, &a.server_name()).await;
    b.join_via(&bob, &secret, &a.server_name()).await;
    let before = b.sync_now(&bob, None).await;
    let since = before["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    // Ten at a time, back to the room's creation: every message once, newest first.
    let (events, pages) = page_back(&b, &bob, &shared, 10).await;
    let expected: Vec<String> = (0..45).rev().map(|i| format!("old {i}")).collect();
    assert_eq!(bodies(&events), expected);
    assert!(pages >= 5, "45 messages in {pages} pages of 10");
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(
        ids.len(),
        ids.iter().collect::<HashSet<_>>().len(),
        "an event came twice"
    );
    assert_eq!(
        events.first().map(|e| &e["type"]),
        Some(&json!("m.room.member"))
    );
    assert_eq!(
        events.last().map(|e| &e["type"]),
        Some(&json!("m.room.create")),
        "paging back ends at the room's creation"
    );
    let named = events
        .iter()
        .position(|e| e["type"] == "m.room.name")
        .expect("the room's name event");
    let first_message = events
        .iter()
        .position(|e| e["content"]["body"] == "old 0")
        .expect("the first message");
    assert!(
        named > first_message,
        "the name was set before the first message"
    );

    // The same again reads what is now held: the same events, no request needed.
    let (again, _) = page_back(&b, &bob, &shared, 20).await;
    assert_eq!(
        again
            .iter()
            .map(|e| e["event_id"].clone())
            .collect::<Vec<_>>(),
        events
            .iter()
            .map(|e| e["event_id"].clone())
            .collect::<Vec<_>>()
    );

    // History visible only to members from their join: fetched, but not shown to Bob.
    let (hidden, _) = page_back(&b, &bob, &secret, 10).await;
    // B's own judgement: the events are held (redacted) but none is shown, body or not.
    assert!(
        !hidden.iter().any(|e| e["type"] == "m.room.message"),
        "{hidden:?}"
    );
    assert!(
        hidden
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()),
        "Bob sees his own join"
    );

    // What A withheld arrived redacted: B holds no word of it.
    let secret_rows = stored_messages(&b, &secret).await;
    assert_eq!(secret_rows.len(), 5);
    assert!(
        secret_rows.iter().all(|pdu| !pdu.contains("secret")),
        "{secret_rows:?}"
    );
    assert_eq!(stored_messages(&b, &shared).await.len(), 45);

    // The past is not news: an incremental sync after all that brings none of it.
    let after = b.sync_now(&bob, Some(&since)).await;
    for room in [&shared, &secret] {
        let timeline = &after["rooms"]["join"][room.as_str()]["timeline"]["events"];
        let news = timeline.as_array().map_or(0, Vec::len);
        assert_eq!(news, 0, "backfilled events in sync: {timeline}");
    }

    // And the room still carries new messages, which change no state: no state is written.
    let groups = state_rows(&b).await;
    a.send_text(&alice, &shared, "new").await;
    crate::support::eventually("the new message on B", async || {
        let (events, _) = page_back(&b, &bob, &shared, 50).await;
        if bodies(&events).first().map(String::as_str) == Some("new") {
            Ok(())
        } else {
            Err(format!("{:?}", bodies(&events).first()))
        }
    })
    .await;
    assert_eq!(state_rows(&b).await, groups, "a message wrote state");

    for node in [a, b] {
        if let Some(n) = node.node {
            n.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_before_a_join_is_backfilled_on_sqlite() {
    history_before_a_join_is_backfilled(BACKENDS[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_before_a_join_is_backfilled_on_postgres() {
    history_before_a_join_is_backfilled(BACKENDS[1]).await;
}
