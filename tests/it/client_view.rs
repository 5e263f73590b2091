//! What clients read to name and file rooms: a DM invite's stripped state names its inviter,
//! an invite carries the invitee's profile, state events carry what they replaced
//! (`unsigned.prev_content`, `prev_sender`, `replaces_state`) wherever they are served, and
//! one room's `initialSync` answers as the user may see the room.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode, TestUser, enc};

const V3: &str = "/_matrix/client/v3";

/// The member event of `user` among `events`, the last one when several.
fn member_of(events: &Value, user: &TestUser) -> Value {
    events
        .as_array()
        .and_then(|e| {
            e.iter()
                .rev()
                .find(|e| e["type"] == "m.room.member" && e["state_key"] == user.user_id.as_str())
        })
        .cloned()
        .unwrap_or_default()
}

#[track_caller]
fn check_replaced(event: &Value, membership: &str, sender: &TestUser) {
    assert_eq!(
        event["unsigned"]["prev_content"]["membership"], membership,
        "{event}"
    );
    assert_eq!(event["unsigned"]["prev_sender"], sender.user_id.as_str());
    assert!(event["unsigned"]["replaces_state"].is_string(), "{event}");
}

#[tokio::test]
async fn a_dm_invite_names_both_sides_and_the_join_what_it_replaced() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let (status, body) = node
            .put(
                &format!("{V3}/profile/{}/displayname", enc(&bob.user_id)),
                Some(&bob.token),
                json!({ "displayname": "Bob" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let dm = node
            .create_room(
                &alice,
                json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id] }),
            )
            .await;
        node.send_text(&alice, &dm, "hi").await;

        let synced = node.sync_now(&bob, None).await;
        let stripped = &synced["rooms"]["invite"][dm.as_str()]["invite_state"]["events"];
        assert_eq!(
            member_of(stripped, &alice)["content"]["membership"],
            "join",
            "the inviter's member event: {stripped}"
        );
        let invite = member_of(stripped, &bob);
        assert_eq!(invite["content"]["displayname"], "Bob", "{invite}");
        assert_eq!(invite["content"]["is_direct"], true);

        let since = synced["next_batch"]
            .as_str()
            .expect("next_batch")
            .to_owned();
        let (status, body) = node
            .post(
                &format!("{V3}/rooms/{}/join", enc(&dm)),
                Some(&bob.token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // The join replaced the invite: in the sync timeline, /messages, /event, /state and
        // /members alike.
        let synced = node.sync_now(&bob, Some(&since)).await;
        let room = &synced["rooms"]["join"][dm.as_str()];
        let join = member_of(&room["timeline"]["events"], &bob);
        check_replaced(&join, "invite", &alice);
        let join_id = join["event_id"].as_str().expect("event_id").to_owned();
        let (_, page) = node
            .get(
                &format!("{V3}/rooms/{}/messages?dir=f&limit=50", enc(&dm)),
                Some(&bob.token),
            )
            .await;
        check_replaced(&member_of(&page["chunk"], &bob), "invite", &alice);
        let (_, event) = node
            .get(
                &format!("{V3}/rooms/{}/event/{}", enc(&dm), enc(&join_id)),
                Some(&bob.token),
            )
            .await;
        check_replaced(&event, "invite", &alice);
        let (_, state) = node
            .get(&format!("{V3}/rooms/{}/state", enc(&dm)), Some(&bob.token))
            .await;
        check_replaced(&member_of(&state, &bob), "invite", &alice);
        let (_, members) = node
            .get(
                &format!("{V3}/rooms/{}/members", enc(&dm)),
                Some(&bob.token),
            )
            .await;
        check_replaced(&member_of(&members["chunk"], &bob), "invite", &alice);
        // Alice's later full sync carries it in the room's state.
        let full = node.sync_now(&alice, None).await;
        let state = &full["rooms"]["join"][dm.as_str()]["state"]["events"];
        let timeline = &full["rooms"]["join"][dm.as_str()]["timeline"]["events"];
        let seen = match member_of(timeline, &bob) {
            Value::Null => member_of(state, &bob),
            found => found,
        };
        check_replaced(&seen, "invite", &alice);
        // A first state event replaced nothing.
        let create = state
            .as_array()
            .and_then(|e| e.iter().find(|e| e["type"] == "m.room.create"))
            .cloned()
            .unwrap_or_default();
        assert!(create["unsigned"].get("prev_content").is_none(), "{create}");
    }
}

#[tokio::test]
async fn room_initial_sync_answers_as_the_user_may_see() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let eve = node.register("eve").await;
        let room = node
            .create_room(&alice, json!({ "preset": "private_chat", "name": "Den" }))
            .await;
        for i in 0..3 {
            node.send_text(&alice, &room, &format!("m {i}")).await;
        }
        let path = format!("{V3}/rooms/{}/initialSync", enc(&room));
        let (status, body) = node.get(&path, Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["room_id"], room.as_str());
        assert_eq!(body["membership"], "join");
        assert_eq!(body["visibility"], "private");
        let bodies = crate::support::message_bodies(&body["messages"]["chunk"]);
        assert_eq!(bodies, ["m 0", "m 1", "m 2"], "oldest first: {body}");
        assert!(body["messages"]["start"].is_string());
        assert!(body["messages"]["end"].is_string());
        let name = body["state"]
            .as_array()
            .and_then(|s| s.iter().find(|e| e["type"] == "m.room.name"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(name["content"]["name"], "Den", "{body}");
        assert!(body["account_data"].is_array() && body["receipts"].is_array());

        // Someone never in a private room sees nothing of it.
        let (status, body) = node.get(&path, Some(&eve.token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, _) = node.get(&path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
