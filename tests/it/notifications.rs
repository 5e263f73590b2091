//! Unread notification counts in `/sync` come from the reader's push rules: the mention rules
//! (a room mention needs the sender's power), and the user's own rules.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    rooms::create_room,
    support::{BACKENDS, TestNode, TestUser},
};

const V3: &str = "/_matrix/client/v3";

fn ok(got: (StatusCode, Value)) -> Value {
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    got.1
}

/// (notification_count, highlight_count) of `room` in a fresh initial sync of `user`.
async fn counts(node: &TestNode, user: &TestUser, room: &str) -> (Value, Value) {
    let synced = node.sync_now(user, None).await;
    let counts = &synced["rooms"]["join"][room]["unread_notifications"];
    (
        counts["notification_count"].clone(),
        counts["highlight_count"].clone(),
    )
}

/// Sends a text message with optional `m.mentions`; returns its event ID.
async fn send(
    node: &TestNode,
    user: &TestUser,
    room: &str,
    txn: &str,
    body: &str,
    mentions: Option<&Value>,
) -> String {
    let mut content = json!({ "msgtype": "m.text", "body": body });
    if let Some(mentions) = mentions {
        content["m.mentions"] = mentions.clone();
    }
    let sent = ok(node
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/{txn}"),
            Some(&user.token),
            content,
        )
        .await);
    sent["event_id"].as_str().expect("event_id").to_owned()
}

#[tokio::test]
async fn unread_counts_follow_push_rules() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let carol = node.register("carol").await;
        let dave = node.register("dave").await;
        let room = create_room(&node, &alice, json!({ "preset": "public_chat" })).await;
        for user in [&bob, &carol, &dave] {
            ok(node
                .post(
                    &format!("{V3}/rooms/{room}/join"),
                    Some(&user.token),
                    json!({}),
                )
                .await);
        }
        ok(node
            .put(
                &format!("{V3}/profile/{}/displayname", bob.user_id),
                Some(&bob.token),
                json!({ "displayname": "Bobby" }),
            )
            .await);
        // Bob mutes Carol and highlights a word, with rules of his own.
        ok(node
            .put(
                &format!("{V3}/pushrules/global/override/mute-carol"),
                Some(&bob.token),
                json!({ "conditions": [{ "kind": "event_match", "key": "sender",
                    "pattern": carol.user_id }], "actions": [] }),
            )
            .await);
        ok(node
            .put(
                &format!("{V3}/pushrules/global/content/garden"),
                Some(&bob.token),
                json!({ "pattern": "garden",
                    "actions": ["notify", { "set_tweak": "highlight" }] }),
            )
            .await);

        let whole_room = json!({ "room": true });
        send(&node, &alice, &room, "a1", "hello all", None).await;
        send(&node, &alice, &room, "a2", "the garden is ready", None).await;
        let room_ping = send(&node, &alice, &room, "a3", "meeting now", Some(&whole_room)).await;
        send(&node, &carol, &room, "c1", "me too", Some(&whole_room)).await;
        // Dave may not notify the whole room: power level 0 of the 50 needed.
        send(&node, &dave, &room, "d1", "from dave", Some(&whole_room)).await;
        let bob_only = json!({ "user_ids": [bob.user_id] });
        send(&node, &alice, &room, "a4", "ping", Some(&bob_only)).await;

        // Notifying: a1 a2 a3 d1 a4; highlighting: a2 (Bob's keyword), a3 (a room mention by
        // a room admin), a4 (a mention of Bob). Carol's message is muted.
        assert_eq!(counts(&node, &bob, &room).await, (json!(5), json!(3)));

        ok(node
            .post(
                &format!("{V3}/rooms/{room}/receipt/m.read/{room_ping}"),
                Some(&bob.token),
                json!({}),
            )
            .await);
        assert_eq!(counts(&node, &bob, &room).await, (json!(2), json!(1)));

        // Bob stops muting Carol: her next message counts, under the rules as they are now.
        let (status, body) = node
            .request(
                reqwest::Method::DELETE,
                &format!("{V3}/pushrules/global/override/mute-carol"),
                Some(&bob.token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        send(&node, &carol, &room, "c2", "me again", None).await;
        assert_eq!(counts(&node, &bob, &room).await, (json!(3), json!(1)));
    }
}
