//! `left` in `/keys/changes` and `/sync`'s `device_lists`: users who no longer share any
//! encrypted room with the requester between two tokens.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    rooms::create_room,
    support::{BACKENDS, TestNode, TestUser},
};

const V3: &str = "/_matrix/client/v3";

async fn key_changes(node: &TestNode, user: &TestUser, from: &str, to: &str) -> Value {
    let (status, body) = node
        .get(
            &format!("{V3}/keys/changes?from={from}&to={to}"),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn post_ok(node: &TestNode, user: &TestUser, path: &str) {
    let (status, body) = node.post(path, Some(&user.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
}

async fn encrypted_room(node: &TestNode, owner: &TestUser) -> String {
    create_room(
        node,
        owner,
        json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.encryption",
            "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }] }),
    )
    .await
}

#[tokio::test]
async fn users_who_stop_sharing_encrypted_rooms_are_left() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let carol = node.register("carol").await;
        let dave = node.register("dave").await;
        let secret = encrypted_room(&node, &alice).await;
        let other_secret = encrypted_room(&node, &alice).await;
        let plain = create_room(&node, &alice, json!({ "preset": "public_chat" })).await;
        for user in [&bob, &dave] {
            post_ok(&node, user, &format!("{V3}/rooms/{secret}/join")).await;
        }
        post_ok(&node, &dave, &format!("{V3}/rooms/{other_secret}/join")).await;
        post_ok(&node, &carol, &format!("{V3}/rooms/{plain}/join")).await;
        let start = node.sync_now(&alice, None).await["next_batch"]
            .as_str()
            .expect("next_batch")
            .to_owned();

        // Bob leaves the only encrypted room he shares with Alice; Dave leaves one of two;
        // Carol leaves a room that is not encrypted.
        for (user, room) in [(&bob, &secret), (&dave, &secret), (&carol, &plain)] {
            post_ok(&node, user, &format!("{V3}/rooms/{room}/leave")).await;
        }
        let synced = node.sync_now(&alice, Some(&start)).await;
        assert_eq!(
            synced["device_lists"]["left"],
            json!([bob.user_id]),
            "{synced}"
        );
        let after_leaves = synced["next_batch"]
            .as_str()
            .expect("next_batch")
            .to_owned();
        let changes = key_changes(&node, &alice, &start, &after_leaves).await;
        assert_eq!(changes["left"], json!([bob.user_id]), "{changes}");
        assert_eq!(changes["changed"], json!([]), "{changes}");

        // Bob comes back: he is changed, no longer left.
        post_ok(&node, &bob, &format!("{V3}/rooms/{secret}/join")).await;
        let synced = node.sync_now(&alice, Some(&after_leaves)).await;
        assert_eq!(synced["device_lists"]["changed"], json!([bob.user_id]));
        assert!(
            synced["device_lists"]
                .get("left")
                .is_none_or(|l| l == &json!([]))
        );
        let back = synced["next_batch"]
            .as_str()
            .expect("next_batch")
            .to_owned();
        let changes = key_changes(&node, &alice, &after_leaves, &back).await;
        assert_eq!(changes["changed"], json!([bob.user_id]), "{changes}");
        assert_eq!(changes["left"], json!([]), "{changes}");
        // Across both steps Bob shared a room at both ends: neither left nor newly shared.
        let changes = key_changes(&node, &alice, &start, &back).await;
        assert_eq!(changes["left"], json!([]), "{changes}");

        // When Alice herself leaves, everyone she shared only that room with is left.
        post_ok(&node, &alice, &format!("{V3}/rooms/{secret}/leave")).await;
        let synced = node.sync_now(&alice, Some(&back)).await;
        assert_eq!(synced["device_lists"]["left"], json!([bob.user_id]));
        let alone = synced["next_batch"]
            .as_str()
            .expect("next_batch")
            .to_owned();

        // A room turning encrypted makes its members tracked: Carol rejoined the plain room,
        // and only the encryption event falls in the range asked about.
        post_ok(&node, &carol, &format!("{V3}/rooms/{plain}/join")).await;
        let rejoined = node.sync_now(&alice, Some(&alone)).await["next_batch"]
            .as_str()
            .expect("next_batch")
            .to_owned();
        let (status, body) = node
            .put(
                &format!("{V3}/rooms/{plain}/state/m.room.encryption"),
                Some(&alice.token),
                json!({ "algorithm": "m.megolm.v1.aes-sha2" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let synced = node.sync_now(&alice, Some(&rejoined)).await;
        assert_eq!(synced["device_lists"]["changed"], json!([carol.user_id]));
    }
}

/// The `device_lists.changed` of a sync of `user` from `since`, and its `next_batch`.
async fn changed_since(node: &TestNode, user: &TestUser, since: &str) -> (Value, String) {
    let synced = node.sync_now(user, Some(since)).await;
    let next = synced["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    (synced["device_lists"]["changed"].clone(), next)
}

#[tokio::test]
async fn own_key_changes_reach_own_sync() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let start = node.sync_now(&alice, None).await["next_batch"]
            .as_str()
            .expect("next_batch")
            .to_owned();

        // New device keys: the client learns its own user changed and fetches the keys again.
        let (status, body) = node
            .post(
                &format!("{V3}/keys/upload"),
                Some(&alice.token),
                json!({ "device_keys": crate::e2ee::device_keys(&alice) }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (changed, uploaded) = changed_since(&node, &alice, &start).await;
        assert_eq!(changed, json!([alice.user_id]));

        // Cross-signing keys, through the unstable path older clients still call.
        let (status, body) = node
            .post(
                "/_matrix/client/unstable/keys/device_signing/upload",
                Some(&alice.token),
                json!({
                    "master_key": crate::e2ee::cross_key(&alice.user_id, "master", "M"),
                    "self_signing_key": crate::e2ee::cross_key(&alice.user_id, "self_signing", "S"),
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (changed, _) = changed_since(&node, &alice, &uploaded).await;
        assert_eq!(changed, json!([alice.user_id]));
    }
}
