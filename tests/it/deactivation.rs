//! Deactivating an account takes the user out of every room, logs out every device and erases
//! the profile from the user directory.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    rooms::create_room,
    support::{BACKENDS, TestNode, TestUser},
};

const V3: &str = "/_matrix/client/v3";
const PASSWORD: &str = "correct horse battery";

/// The membership of `user` in `room` as `viewer` sees it in `/members`.
async fn membership(node: &TestNode, viewer: &TestUser, room: &str, user: &str) -> Value {
    let (status, members) = node
        .get(&format!("{V3}/rooms/{room}/members"), Some(&viewer.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{members}");
    members["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .find(|e| e["state_key"] == user)
        .map_or(Value::Null, |e| e["content"]["membership"].clone())
}

/// The user IDs `searcher` finds in the user directory for `term`.
async fn directory(node: &TestNode, searcher: &TestUser, term: &str) -> Vec<Value> {
    let (status, found) = node
        .post(
            &format!("{V3}/user_directory/search"),
            Some(&searcher.token),
            json!({ "search_term": term, "limit": 10 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    found["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|u| u["user_id"].clone())
        .collect()
}

#[tokio::test]
async fn deactivation_leaves_rooms_logs_out_and_erases_the_profile() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        // A second device of Alice's, to see every device logged out.
        let (status, other) = node
            .post(
                &format!("{V3}/login"),
                None,
                json!({ "type": "m.login.password", "identifier": { "type": "m.id.user",
                    "user": "alice" }, "password": PASSWORD }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{other}");
        let other = other["access_token"].as_str().expect("token").to_owned();

        // Alice is joined to one room and invited to another.
        let joined = create_room(&node, &bob, json!({ "preset": "public_chat" })).await;
        let (status, body) = node
            .post(
                &format!("{V3}/rooms/{joined}/join"),
                Some(&alice.token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let invited = create_room(
            &node,
            &bob,
            json!({ "preset": "private_chat", "invite": [alice.user_id] }),
        )
        .await;
        assert_eq!(
            membership(&node, &bob, &invited, &alice.user_id).await,
            "invite"
        );
        let (status, body) = node
            .put(
                &format!("{V3}/profile/{}/displayname", alice.user_id),
                Some(&alice.token),
                json!({ "displayname": "Wonderland" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            directory(&node, &bob, "wonderland").await,
            vec![json!(alice.user_id)]
        );

        let path = format!("{V3}/account/deactivate");
        let (status, uia) = node.post(&path, Some(&alice.token), json!({})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uia}");
        let (status, body) = node
            .post(
                &path,
                Some(&alice.token),
                json!({ "auth": { "type": "m.login.password", "session": uia["session"],
                    "identifier": { "type": "m.id.user", "user": alice.user_id },
                    "password": PASSWORD } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");

        assert_eq!(
            membership(&node, &bob, &joined, &alice.user_id).await,
            "leave"
        );
        assert_eq!(
            membership(&node, &bob, &invited, &alice.user_id).await,
            "leave",
            "the invite is rejected"
        );
        for token in [&alice.token, &other] {
            let (status, body) = node.get(&format!("{V3}/account/whoami"), Some(token)).await;
            assert_eq!(
                (status, &body["errcode"]),
                (StatusCode::UNAUTHORIZED, &json!("M_UNKNOWN_TOKEN"))
            );
        }
        assert_eq!(
            directory(&node, &bob, "wonderland").await,
            Vec::<Value>::new()
        );
        assert_eq!(directory(&node, &bob, "alice").await, Vec::<Value>::new());
        let (_, profile) = node
            .get(&format!("{V3}/profile/{}", alice.user_id), Some(&bob.token))
            .await;
        assert!(profile.get("displayname").is_none(), "{profile}");
        assert!(profile.get("avatar_url").is_none(), "{profile}");
    }
}
