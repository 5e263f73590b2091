//! `/sync` through real HTTP on both backends: initial and incremental syncs, long-poll
//! wake-ups, limited timelines, lazy-loaded members, invites and leaves, and restarts.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    rooms::{create_room, say},
    support::{BACKENDS, TestNode, TestUser},
};

const V3: &str = "/_matrix/client/v3";

async fn sync(node: &TestNode, user: &TestUser, query: &str) -> Value {
    let (status, body) = node
        .get(&format!("{V3}/sync?{query}"), Some(&user.token))
        .await;
    assert_eq!(status, StatusCode::OK, "sync {query}: {body}");
    body
}

fn timeline_bodies(resp: &Value, room: &str) -> Vec<String> {
    resp["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn next_batch(resp: &Value) -> String {
    resp["next_batch"].as_str().expect("next_batch").to_owned()
}

#[tokio::test]
async fn initial_then_incremental_and_limited() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let room = create_room(&node, &alice, json!({ "name": "Kitchen" })).await;
        say(&node, &alice, &room, "one", "t1").await;

        // A one-event timeline: everything before it arrives as state.
        let one = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1%7D%7D%7D";
        let first = sync(&node, &alice, &format!("filter={one}")).await;
        assert_eq!(timeline_bodies(&first, &room), ["one"]);
        assert_eq!(first["rooms"]["join"][&room]["timeline"]["limited"], true);
        let state = &first["rooms"]["join"][&room]["state"]["events"];
        assert!(
            state
                .as_array()
                .expect("state")
                .iter()
                .any(|e| e["type"] == "m.room.name"),
            "initial state carries the name: {state}"
        );
        let since = next_batch(&first);

        say(&node, &alice, &room, "two", "t2").await;
        let second = sync(&node, &alice, &format!("since={since}")).await;
        assert_eq!(timeline_bodies(&second, &room), ["two"]);
        let joined = &second["rooms"]["join"][&room];
        assert_ne!(joined["timeline"]["limited"], true, "not limited");
        assert!(
            joined["state"]["events"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "no state changes: {joined}"
        );

        // More than the filter's limit: the timeline is limited and prev_batch continues it.
        let since = next_batch(&second);
        for i in 0..5 {
            say(&node, &alice, &room, &format!("burst{i}"), &format!("b{i}")).await;
        }
        let filter = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A2%7D%7D%7D";
        let third = sync(&node, &alice, &format!("since={since}&filter={filter}")).await;
        assert_eq!(timeline_bodies(&third, &room), ["burst3", "burst4"]);
        let timeline = &third["rooms"]["join"][&room]["timeline"];
        assert_eq!(timeline["limited"], true);
        let prev = timeline["prev_batch"].as_str().expect("prev_batch");
        let (_, page) = node
            .get(
                &format!("{V3}/rooms/{room}/messages?dir=b&limit=3&from={prev}"),
                Some(&alice.token),
            )
            .await;
        let earlier: Vec<&str> = page["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .map(|e| e["content"]["body"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(earlier, ["burst2", "burst1", "burst0"]);

        // Nothing new: an incremental sync with no timeout answers at once, empty.
        let quiet = sync(
            &node,
            &alice,
            &format!("since={}&timeout=0", next_batch(&third)),
        )
        .await;
        assert!(
            quiet["rooms"]["join"]
                .as_object()
                .is_none_or(|j| j.is_empty()),
            "{quiet}"
        );
    }
}

#[tokio::test]
async fn long_poll_wakes_on_a_message() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let room = create_room(&node, &alice, json!({ "preset": "public_chat" })).await;
        node.post(
            &format!("{V3}/rooms/{room}/join"),
            Some(&bob.token),
            json!({}),
        )
        .await;
        let since = next_batch(&sync(&node, &bob, "").await);

        let started = Instant::now();
        let query = format!("since={since}&timeout=20000");
        let waiting = sync(&node, &bob, &query);
        let sending = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            say(&node, &alice, &room, "wake up", "w1").await
        };
        let (woken, _) = tokio::join!(waiting, sending);
        assert_eq!(timeline_bodies(&woken, &room), ["wake up"]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken by the message, not the timeout"
        );
    }
}

#[tokio::test]
async fn invites_leaves_and_lazy_members() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let carol = node.register("carol").await;
        let room = create_room(
            &node,
            &alice,
            json!({ "preset": "private_chat", "name": "Den" }),
        )
        .await;
        let since = next_batch(&sync(&node, &bob, "").await);
        for user in [&bob, &carol] {
            node.post(
                &format!("{V3}/rooms/{room}/invite"),
                Some(&alice.token),
                json!({ "user_id": user.user_id }),
            )
            .await;
        }
        let invited = sync(&node, &bob, &format!("since={since}")).await;
        let invite_state = &invited["rooms"]["invite"][&room]["invite_state"]["events"];
        let types: Vec<&str> = invite_state
            .as_array()
            .expect("invite state")
            .iter()
            .filter_map(|e| e["type"].as_str())
            .collect();
        assert!(
            types.contains(&"m.room.name") && types.contains(&"m.room.member"),
            "{invite_state}"
        );

        for user in [&bob, &carol] {
            node.post(
                &format!("{V3}/rooms/{room}/join"),
                Some(&user.token),
                json!({}),
            )
            .await;
        }
        say(&node, &carol, &room, "from carol", "c1").await;
        // Lazy loading: only the members of the timeline's senders (and our own) come along.
        let filter = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1%7D%2C%22state%22%3A%7B%22lazy_load_members%22%3Atrue%7D%7D%7D";
        let lazy = sync(&node, &bob, &format!("filter={filter}")).await;
        let mut members: Vec<&str> = lazy["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .expect("state")
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .filter_map(|e| e["state_key"].as_str())
            .collect();
        members.sort();
        let mut want = vec![bob.user_id.as_str(), carol.user_id.as_str()];
        want.sort();
        assert_eq!(members, want, "alice's member event is not loaded");
        assert_eq!(
            lazy["rooms"]["join"][&room]["summary"]["m.joined_member_count"],
            3
        );

        let since = next_batch(&lazy);
        node.post(
            &format!("{V3}/rooms/{room}/leave"),
            Some(&bob.token),
            json!({}),
        )
        .await;
        let left = sync(&node, &bob, &format!("since={since}")).await;
        assert!(left["rooms"]["leave"].get(&room).is_some(), "{left}");
        let unread = sync(&node, &carol, "").await;
        assert_eq!(
            unread["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 0,
            "own messages are not unread"
        );
    }
}

#[tokio::test]
async fn restart_keeps_history_and_tokens() {
    for backend in BACKENDS {
        let mut node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let room = create_room(&node, &alice, json!({})).await;
        say(&node, &alice, &room, "before", "t1").await;
        let since = next_batch(&sync(&node, &alice, "").await);

        node.restart().await;
        say(&node, &alice, &room, "after", "t2").await;
        let resumed = sync(&node, &alice, &format!("since={since}")).await;
        assert_eq!(timeline_bodies(&resumed, &room), ["after"]);
        let full = sync(&node, &alice, "").await;
        assert_eq!(timeline_bodies(&full, &room), ["before", "after"]);
        let again = say(&node, &alice, &room, "before", "t1").await;
        let (_, page) = node
            .get(
                &format!("{V3}/rooms/{room}/messages?dir=b&limit=2"),
                Some(&alice.token),
            )
            .await;
        assert_eq!(
            page["chunk"][1]["event_id"],
            json!(again),
            "txn id kept across restart"
        );
    }
}

#[tokio::test]
async fn a_redaction_reaches_a_range_already_synced() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let room = create_room(&node, &alice, json!({ "preset": "public_chat" })).await;
        node.post(
            &format!("{V3}/rooms/{room}/join"),
            Some(&bob.token),
            json!({}),
        )
        .await;
        let since = next_batch(&sync(&node, &bob, "").await);
        let secret = say(&node, &alice, &room, "secret", "s1").await;
        let first = sync(&node, &bob, &format!("since={since}")).await;
        assert_eq!(timeline_bodies(&first, &room), ["secret"]);

        let (status, redaction) = node
            .put(
                &format!("{V3}/rooms/{room}/redact/{secret}/r1"),
                Some(&alice.token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{redaction}");
        // The same range read again, after the redaction: the message comes redacted.
        let again = sync(&node, &bob, &format!("since={since}")).await;
        let events = again["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let message = events
            .iter()
            .find(|e| e["event_id"] == secret.as_str())
            .expect("the message is in the range");
        assert_eq!(message["content"], json!({}), "{message}");
        assert!(
            events
                .iter()
                .any(|e| e["event_id"] == redaction["event_id"]),
            "the redaction follows it"
        );
    }
}
