//! History visibility, judged by the `m.room.history_visibility` and the reader's membership in
//! the state at each event: through `/messages`, `/event`, `/context` and sync timelines.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    rooms::{create_room, say},
    support::{BACKENDS, TestNode, TestUser, message_bodies},
};

const V3: &str = "/_matrix/client/v3";

/// The messages `user` reads in `room` through `/messages`, oldest first.
async fn read(node: &TestNode, user: &TestUser, room: &str) -> Vec<String> {
    let (status, page) = node
        .get(
            &format!("{V3}/rooms/{room}/messages?dir=f&limit=100"),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    message_bodies(&page["chunk"])
}

async fn set_visibility(node: &TestNode, user: &TestUser, room: &str, visibility: &str) {
    let (status, body) = node
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.history_visibility"),
            Some(&user.token),
            json!({ "history_visibility": visibility }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn post_ok(node: &TestNode, user: &TestUser, path: &str, body: Value) {
    let (status, resp) = node.post(path, Some(&user.token), body).await;
    assert_eq!(status, StatusCode::OK, "{path}: {resp}");
}

/// Bob is invited, joins and leaves a room of Alice's with `visibility`, with a message before
/// each step; checks what Bob sees at each step and returns what he reads at the end.
async fn invite_join_leave(node: &TestNode, visibility: &str, expected: &[&str]) {
    let alice = node.register(&format!("alice-{visibility}")).await;
    let bob = node.register(&format!("bob-{visibility}")).await;
    let room = create_room(node, &alice, json!({ "preset": "public_chat" })).await;
    set_visibility(node, &alice, &room, visibility).await;
    let before = say(node, &alice, &room, "before invite", "m1").await;
    post_ok(
        node,
        &alice,
        &format!("{V3}/rooms/{room}/invite"),
        json!({ "user_id": bob.user_id }),
    )
    .await;
    say(node, &alice, &room, "while invited", "m2").await;
    let seen_invited: Vec<String> = read(node, &bob, &room).await;
    let want_invited: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|m| *m != "while joined")
        .collect();
    assert_eq!(seen_invited, want_invited, "{visibility}, while invited");

    post_ok(node, &bob, &format!("{V3}/rooms/{room}/join"), json!({})).await;
    let joined = say(node, &alice, &room, "while joined", "m3").await;
    let filter = json!({ "room": { "timeline": { "limit": 50 } } }).to_string();
    let (status, synced) = node
        .get(
            &format!("{V3}/sync?filter={}", urlencode(&filter)),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{synced}");
    assert_eq!(
        message_bodies(&synced["rooms"]["join"][&room]["timeline"]["events"]),
        expected,
        "{visibility}, sync timeline"
    );

    post_ok(node, &bob, &format!("{V3}/rooms/{room}/leave"), json!({})).await;
    say(node, &alice, &room, "after leave", "m4").await;
    assert_eq!(
        read(node, &bob, &room).await,
        expected,
        "{visibility}, after leaving"
    );

    let (status, _) = node
        .get(
            &format!("{V3}/rooms/{room}/event/{before}"),
            Some(&bob.token),
        )
        .await;
    let want = if expected.contains(&"before invite") {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    assert_eq!(status, want, "{visibility}, /event before the invite");
    let (status, context) = node
        .get(
            &format!("{V3}/rooms/{room}/context/{joined}?limit=10"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{context}");
    let mut around = message_bodies(&context["events_before"]);
    around.reverse();
    around.extend(message_bodies(&json!([context["event"]])));
    around.extend(message_bodies(&context["events_after"]));
    assert_eq!(around, expected, "{visibility}, /context");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn history_visibility_is_judged_per_event() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        invite_join_leave(&node, "joined", &["while joined"]).await;
        invite_join_leave(&node, "invited", &["while invited", "while joined"]).await;
        invite_join_leave(
            &node,
            "shared",
            &["before invite", "while invited", "while joined"],
        )
        .await;

        // Visibility changes over time: each event is judged by the setting it was sent under.
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let room = create_room(&node, &alice, json!({ "preset": "public_chat" })).await;
        set_visibility(&node, &alice, &room, "shared").await;
        say(&node, &alice, &room, "shared era", "s1").await;
        set_visibility(&node, &alice, &room, "joined").await;
        say(&node, &alice, &room, "joined era", "s2").await;
        post_ok(&node, &bob, &format!("{V3}/rooms/{room}/join"), json!({})).await;
        say(&node, &alice, &room, "member era", "s3").await;
        assert_eq!(read(&node, &bob, &room).await, ["shared era", "member era"]);

        // Someone who never took part reads nothing, unless the room is world-readable.
        let carol = node.register("carol").await;
        let (status, body) = node
            .get(
                &format!("{V3}/rooms/{room}/messages?dir=f"),
                Some(&carol.token),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        set_visibility(&node, &alice, &room, "world_readable").await;
        say(&node, &alice, &room, "public era", "s4").await;
        assert_eq!(read(&node, &carol, &room).await, ["public era"]);
    }
}
