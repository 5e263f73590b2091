//! Redactions across nodes: a message redacted on its sender's node loses its content on the
//! other node too (with `unsigned.redacted_because`); a redaction that arrives before its
//! target is kept and applied when the target comes; a redaction by someone who may not
//! redact the event leaves it whole.

use grove_server::{
    rooms::{EventTemplate, builder},
    storage::Backend,
};
use reqwest::StatusCode;
use ruma::{RoomId, UserId, events::TimelineEventType};
use serde_json::{Value, json};

use crate::support::{TestNode, TestUser, enc, eventually};

const V3: &str = "/_matrix/client/v3";

async fn event(node: &TestNode, user: &TestUser, room: &str, id: &str) -> Value {
    let (status, body) = node
        .get(
            &format!("{V3}/rooms/{}/event/{}", enc(room), enc(id)),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn wait_body(node: &TestNode, user: &TestUser, room: &str, id: &str) {
    eventually("the message on the other node", async || {
        let (status, body) = node
            .get(
                &format!("{V3}/rooms/{}/event/{}", enc(room), enc(id)),
                Some(&user.token),
            )
            .await;
        if status == StatusCode::OK && body["content"]["body"].is_string() {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
}

/// A redaction of `target` by `sender`, built and signed by `node` over its room's head
/// without being added; with its event ID.
async fn built_redaction(
    node: &TestNode,
    room: &RoomId,
    sender: &UserId,
    target: &str,
) -> (ruma::CanonicalJsonObject, String) {
    built(
        node,
        room,
        sender,
        EventTemplate {
            kind: TimelineEventType::RoomRedaction,
            state_key: None,
            content: json!({}),
            redacts: Some(target.try_into().expect("event id")),
        },
    )
    .await
}

async fn built(
    node: &TestNode,
    room: &RoomId,
    sender: &UserId,
    template: EventTemplate,
) -> (ruma::CanonicalJsonObject, String) {
    let rooms = &node.node().homeserver().rooms;
    let prev = rooms.extremities(room).await.expect("extremities");
    let object = rooms
        .build_over(room, sender, &template, &prev)
        .await
        .expect("built");
    let rules =
        builder::rules_for(&rooms.room_version(room).await.expect("version")).expect("rules");
    let id = builder::event_id_of(&object, &rules).expect("event id");
    (object, id.to_string())
}

async fn redactions_across_nodes(backend: Backend) {
    let a = TestNode::start_federated(backend, Vec::new()).await;
    let b = TestNode::start_federated(backend, vec![a.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    b.join_via(&bob, &room, &a.server_name()).await;
    let since = b.sync_now(&bob, None).await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    // Alice redacts her message on A: B drops its content too.
    let secret = a.send_text(&alice, &room, "secret").await;
    wait_body(&b, &bob, &room, &secret).await;
    let (status, body) = a
        .put(
            &format!("{V3}/rooms/{}/redact/{}/r1", enc(&room), enc(&secret)),
            Some(&alice.token),
            json!({ "reason": "oops" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let redaction = body["event_id"].as_str().expect("event_id").to_owned();
    let seen = eventually("the redaction applied on B", async || {
        let seen = event(&b, &bob, &room, &secret).await;
        if seen["content"] == json!({}) {
            Ok(seen)
        } else {
            Err(seen.to_string())
        }
    })
    .await;
    assert_eq!(
        seen["unsigned"]["redacted_because"]["event_id"],
        redaction.as_str()
    );
    let (_, page) = b
        .get(
            &format!("{V3}/rooms/{}/messages?dir=b&limit=10", enc(&room)),
            Some(&bob.token),
        )
        .await;
    assert!(!page.to_string().contains("\"secret\""), "{page}");
    let synced = b.sync_now(&bob, Some(&since)).await;
    let timeline = &synced["rooms"]["join"][room.as_str()]["timeline"]["events"];
    let held = timeline
        .as_array()
        .and_then(|e| e.iter().find(|e| e["event_id"] == secret.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(held["content"], json!({}), "{timeline}");

    // A redaction that arrives before its target: kept, then applied when the target comes.
    let room_id = RoomId::parse(&room).expect("room id");
    let alice_id = UserId::parse(&alice.user_id).expect("user id");
    let (target, target_id) = built(
        &a,
        &room_id,
        &alice_id,
        EventTemplate::message(
            TimelineEventType::RoomMessage,
            json!({ "msgtype": "m.text", "body": "early" }),
        ),
    )
    .await;
    let (early, early_id) = built_redaction(&a, &room_id, &alice_id, &target_id).await;
    let rooms = &b.node().homeserver().rooms;
    rooms
        .add_pdu(&room_id, early)
        .await
        .expect("redaction added");
    rooms.add_pdu(&room_id, target).await.expect("target added");
    let seen = event(&b, &bob, &room, &target_id).await;
    assert_eq!(seen["content"], json!({}), "{seen}");
    assert_eq!(seen["unsigned"]["redacted_because"]["event_id"], early_id);

    // Bob may not redact Alice's message (another server, no power): it stays whole.
    let keep = a.send_text(&alice, &room, "keep").await;
    wait_body(&b, &bob, &room, &keep).await;
    let bob_id = UserId::parse(&bob.user_id).expect("user id");
    let (forged, _) = built_redaction(&a, &room_id, &bob_id, &keep).await;
    a.node()
        .homeserver()
        .rooms
        .add_pdu(&room_id, forged)
        .await
        .expect("redaction added");
    let seen = event(&a, &alice, &room, &keep).await;
    assert_eq!(seen["content"]["body"], "keep", "{seen}");
}

#[tokio::test]
async fn redactions_across_nodes_sqlite() {
    redactions_across_nodes(Backend::Sqlite).await;
}

#[tokio::test]
async fn redactions_across_nodes_postgres() {
    redactions_across_nodes(Backend::Postgres).await;
}

/// History redacted before another node's user joined reaches that node redacted, with the
/// redaction that did it: the backfill after the join brings both, and the redaction is
/// applied to the target written in the same batch.
async fn redacted_history_arrives_redacted(backend: Backend) {
    let a = TestNode::start_federated(backend, Vec::new()).await;
    let b = TestNode::start_federated(backend, vec![a.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{
                "type": "m.room.history_visibility", "state_key": "",
                "content": { "history_visibility": "shared" } }] }),
        )
        .await;
    let secret = a.send_text(&alice, &room, "before the join").await;
    let (status, body) = a
        .put(
            &format!("{V3}/rooms/{}/redact/{}/r1", enc(&room), enc(&secret)),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let redaction = body["event_id"].as_str().expect("event_id").to_owned();
    a.send_text(&alice, &room, "after").await;

    b.join_via(&bob, &room, &a.server_name()).await;
    let seen = eventually("the backfilled message on B", async || {
        let (status, seen) = b
            .get(
                &format!("{V3}/rooms/{}/event/{}", enc(&room), enc(&secret)),
                Some(&bob.token),
            )
            .await;
        if status == StatusCode::OK {
            Ok(seen)
        } else {
            Err(format!("{status} {seen}"))
        }
    })
    .await;
    assert_eq!(seen["content"], json!({}), "{seen}");
    assert_eq!(
        seen["unsigned"]["redacted_because"]["event_id"],
        redaction.as_str(),
        "{seen}"
    );
}

#[tokio::test]
async fn redacted_history_arrives_redacted_sqlite() {
    redacted_history_arrives_redacted(Backend::Sqlite).await;
}

#[tokio::test]
async fn redacted_history_arrives_redacted_postgres() {
    redacted_history_arrives_redacted(Backend::Postgres).await;
}
