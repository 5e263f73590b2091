//! Rooms through real HTTP on both backends: creation presets, aliases, pagination, context,
//! redaction and membership flows.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode, TestUser};

const V3: &str = "/_matrix/client/v3";

/// Creates a room and returns its ID.
pub(crate) async fn create_room(node: &TestNode, user: &TestUser, body: Value) -> String {
    let (status, resp) = node
        .post(&format!("{V3}/createRoom"), Some(&user.token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom: {resp}");
    resp["room_id"].as_str().expect("room_id").to_owned()
}

/// Sends a text message and returns its event ID.
pub(crate) async fn say(
    node: &TestNode,
    user: &TestUser,
    room: &str,
    body: &str,
    txn: &str,
) -> String {
    let (status, resp) = node
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/{txn}"),
            Some(&user.token),
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "send: {resp}");
    resp["event_id"].as_str().expect("event_id").to_owned()
}

/// Checks that a POST answers `status` (and `errcode`, when an error).
#[track_caller]
fn check(what: &str, got: (StatusCode, Value), status: StatusCode, errcode: Option<&str>) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    if let Some(code) = errcode {
        assert_eq!(got.1["errcode"], code, "{what}");
    }
}

async fn state(node: &TestNode, user: &TestUser, room: &str, path: &str) -> (StatusCode, Value) {
    node.get(
        &format!("{V3}/rooms/{room}/state/{path}"),
        Some(&user.token),
    )
    .await
}

#[tokio::test]
async fn create_room_presets_initial_state_and_invites() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let room = create_room(
            &node,
            &alice,
            json!({
                "preset": "private_chat",
                "name": "Garden",
                "topic": "plants",
                "invite": [bob.user_id],
                "is_direct": true,
                "room_alias_name": "garden",
                "initial_state": [{ "type": "org.grove.test", "state_key": "", "content": { "x": 1 } }],
            }),
        )
        .await;
        for (path, field, want) in [
            ("m.room.join_rules", "join_rule", json!("invite")),
            (
                "m.room.history_visibility",
                "history_visibility",
                json!("shared"),
            ),
            ("m.room.name", "name", json!("Garden")),
            ("m.room.topic", "topic", json!("plants")),
            ("org.grove.test", "x", json!(1)),
            ("m.room.guest_access", "guest_access", json!("can_join")),
        ] {
            let (status, content) = state(&node, &alice, &room, path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {content}");
            assert_eq!(content[field], want, "{path}");
        }
        let alias = format!("#garden:{}", node.server_name());
        let (status, content) = state(&node, &alice, &room, "m.room.canonical_alias").await;
        assert_eq!(
            (status, content["alias"].clone()),
            (StatusCode::OK, json!(alias))
        );
        let (_, member) = state(
            &node,
            &alice,
            &room,
            &format!("m.room.member/{}", bob.user_id),
        )
        .await;
        // The invite carries the invitee's profile, for clients to name them by.
        assert_eq!(
            member,
            json!({ "membership": "invite", "is_direct": true, "displayname": "bob" })
        );

        // Bob joins through the alias and can read the room.
        let encoded = alias.replace('#', "%23").replace(':', "%3A");
        let (status, joined) = node
            .post(&format!("{V3}/join/{encoded}"), Some(&bob.token), json!({}))
            .await;
        assert_eq!(
            (status, joined["room_id"].clone()),
            (StatusCode::OK, json!(room))
        );
        let (_, rooms) = node
            .get(&format!("{V3}/joined_rooms"), Some(&bob.token))
            .await;
        assert_eq!(rooms["joined_rooms"], json!([room]));

        // Public rooms are joinable by anyone and listed.
        let public = create_room(
            &node,
            &alice,
            json!({ "preset": "public_chat", "visibility": "public", "name": "Square" }),
        )
        .await;
        let carol = node.register("carol").await;
        check(
            "carol joins the public room",
            node.post(
                &format!("{V3}/rooms/{public}/join"),
                Some(&carol.token),
                json!({}),
            )
            .await,
            StatusCode::OK,
            None,
        );
        check(
            "carol joins the private room",
            node.post(
                &format!("{V3}/rooms/{room}/join"),
                Some(&carol.token),
                json!({}),
            )
            .await,
            StatusCode::FORBIDDEN,
            Some("M_FORBIDDEN"),
        );
        let (_, list) = node
            .get(&format!("{V3}/publicRooms"), Some(&carol.token))
            .await;
        let ids: Vec<&Value> = list["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .map(|r| &r["room_id"])
            .collect();
        assert_eq!(ids, vec![&json!(public)]);
        assert_eq!(list["chunk"][0]["num_joined_members"], 2);

        // trusted_private_chat gives invitees the creator's power.
        let trusted = create_room(
            &node,
            &alice,
            json!({ "preset": "trusted_private_chat", "invite": [bob.user_id], "room_version": "11" }),
        )
        .await;
        let (_, power) = state(&node, &alice, &trusted, "m.room.power_levels").await;
        assert_eq!(power["users"][&bob.user_id], 100);

        // Bad input changes nothing.
        check(
            "unknown room version",
            node.post(
                &format!("{V3}/createRoom"),
                Some(&alice.token),
                json!({ "room_version": "9" }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            Some("M_UNSUPPORTED_ROOM_VERSION"),
        );
        check(
            "alias taken",
            node.post(
                &format!("{V3}/createRoom"),
                Some(&alice.token),
                json!({ "room_alias_name": "garden" }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            Some("M_ROOM_IN_USE"),
        );
    }
}

fn bodies(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn messages_paginate_both_ways_and_context() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let room = create_room(&node, &alice, json!({})).await;
        let mut ids = Vec::new();
        for i in 0..12 {
            ids.push(say(&node, &alice, &room, &format!("m{i}"), &format!("t{i}")).await);
        }
        let url = |q: &str| format!("{V3}/rooms/{room}/messages?{q}");
        let (_, page) = node.get(&url("dir=b&limit=5"), Some(&alice.token)).await;
        assert_eq!(bodies(&page["chunk"]), ["m11", "m10", "m9", "m8", "m7"]);
        let end = page["end"].as_str().expect("end");
        let (_, page) = node
            .get(
                &url(&format!("dir=b&limit=5&from={end}")),
                Some(&alice.token),
            )
            .await;
        assert_eq!(bodies(&page["chunk"]), ["m6", "m5", "m4", "m3", "m2"]);
        let back = page["end"].as_str().expect("end").to_owned();
        let (_, page) = node
            .get(
                &url(&format!("dir=f&limit=3&from={back}")),
                Some(&alice.token),
            )
            .await;
        assert_eq!(bodies(&page["chunk"]), ["m2", "m3", "m4"]);
        let filter = "%7B%22types%22%3A%5B%22m.room.create%22%5D%7D";
        let (_, page) = node
            .get(
                &url(&format!("dir=b&limit=50&filter={filter}")),
                Some(&alice.token),
            )
            .await;
        let types: Vec<&Value> = page["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .map(|e| &e["type"])
            .collect();
        assert_eq!(types, vec![&json!("m.room.create")]);
        assert!(page.get("end").is_none(), "no more events: {page}");

        let (status, ctx) = node
            .get(
                &format!("{V3}/rooms/{room}/context/{}?limit=4", ids[6]),
                Some(&alice.token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{ctx}");
        assert_eq!(ctx["event"]["content"]["body"], "m6");
        assert_eq!(bodies(&ctx["events_before"]), ["m5", "m4"]);
        assert_eq!(bodies(&ctx["events_after"]), ["m7", "m8"]);
        assert!(ctx["state"].as_array().is_some_and(|s| !s.is_empty()));

        // Someone outside the room sees nothing.
        let eve = node.register("eve").await;
        check(
            "outsider reads messages",
            node.get(&url("dir=b"), Some(&eve.token)).await,
            StatusCode::FORBIDDEN,
            Some("M_FORBIDDEN"),
        );
    }
}

#[tokio::test]
async fn redaction_and_idempotent_sends() {
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
        let first = say(&node, &alice, &room, "secret", "same").await;
        let again = say(&node, &alice, &room, "secret", "same").await;
        assert_eq!(first, again, "same txn id, same event");

        check(
            "bob redacts alice's message",
            node.put(
                &format!("{V3}/rooms/{room}/redact/{first}/r1"),
                Some(&bob.token),
                json!({}),
            )
            .await,
            StatusCode::FORBIDDEN,
            Some("M_FORBIDDEN"),
        );
        let (status, redaction) = node
            .put(
                &format!("{V3}/rooms/{room}/redact/{first}/r1"),
                Some(&alice.token),
                json!({ "reason": "oops" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{redaction}");
        let (status, event) = node
            .get(
                &format!("{V3}/rooms/{room}/event/{first}"),
                Some(&bob.token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{event}");
        assert_eq!(event["content"], json!({}));
        assert_eq!(
            event["unsigned"]["redacted_because"]["event_id"],
            redaction["event_id"]
        );
        assert_eq!(
            event["unsigned"]["redacted_because"]["content"]["reason"],
            "oops"
        );
    }
}

#[tokio::test]
async fn membership_flows() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let room = create_room(&node, &alice, json!({ "preset": "private_chat" })).await;
        let r = |action: &str| format!("{V3}/rooms/{room}/{action}");
        let target = json!({ "user_id": bob.user_id, "reason": "because" });
        check(
            "join uninvited",
            node.post(&r("join"), Some(&bob.token), json!({})).await,
            StatusCode::FORBIDDEN,
            Some("M_FORBIDDEN"),
        );
        check(
            "invite",
            node.post(&r("invite"), Some(&alice.token), target.clone())
                .await,
            StatusCode::OK,
            None,
        );
        check(
            "join invited",
            node.post(&r("join"), Some(&bob.token), json!({})).await,
            StatusCode::OK,
            None,
        );
        check(
            "bob kicks alice",
            node.post(
                &r("kick"),
                Some(&bob.token),
                json!({ "user_id": alice.user_id }),
            )
            .await,
            StatusCode::FORBIDDEN,
            Some("M_FORBIDDEN"),
        );
        check(
            "kick",
            node.post(&r("kick"), Some(&alice.token), target.clone())
                .await,
            StatusCode::OK,
            None,
        );
        let (_, member) = node
            .get(
                &r(&format!("state/m.room.member/{}", bob.user_id)),
                Some(&alice.token),
            )
            .await;
        assert_eq!(
            member,
            json!({ "membership": "leave", "reason": "because" })
        );
        check(
            "rejoin after kick",
            node.post(&r("join"), Some(&bob.token), json!({})).await,
            StatusCode::FORBIDDEN,
            Some("M_FORBIDDEN"),
        );
        check(
            "ban",
            node.post(&r("ban"), Some(&alice.token), target.clone())
                .await,
            StatusCode::OK,
            None,
        );
        check(
            "invite banned",
            node.post(&r("invite"), Some(&alice.token), target.clone())
                .await,
            StatusCode::FORBIDDEN,
            Some("M_FORBIDDEN"),
        );
        check(
            "unban",
            node.post(&r("unban"), Some(&alice.token), target.clone())
                .await,
            StatusCode::OK,
            None,
        );
        check(
            "unban again",
            node.post(&r("unban"), Some(&alice.token), target.clone())
                .await,
            StatusCode::FORBIDDEN,
            Some("M_FORBIDDEN"),
        );
        check(
            "invite again",
            node.post(&r("invite"), Some(&alice.token), target.clone())
                .await,
            StatusCode::OK,
            None,
        );
        check(
            "join again",
            node.post(&r("join"), Some(&bob.token), json!({})).await,
            StatusCode::OK,
            None,
        );
        let (_, members) = node.get(&r("joined_members"), Some(&bob.token)).await;
        let mut joined: Vec<&String> = members["joined"]
            .as_object()
            .expect("joined")
            .keys()
            .collect();
        joined.sort();
        assert_eq!(joined, vec![&alice.user_id, &bob.user_id]);
        let (_, members) = node
            .get(&r("members?membership=join"), Some(&bob.token))
            .await;
        assert_eq!(members["chunk"].as_array().map(Vec::len), Some(2));
        check(
            "forget while joined",
            node.post(&r("forget"), Some(&bob.token), json!({})).await,
            StatusCode::BAD_REQUEST,
            None,
        );
        check(
            "leave",
            node.post(&r("leave"), Some(&bob.token), json!({})).await,
            StatusCode::OK,
            None,
        );
        check(
            "leave twice",
            node.post(&r("leave"), Some(&bob.token), json!({})).await,
            StatusCode::FORBIDDEN,
            Some("M_FORBIDDEN"),
        );
        check(
            "forget",
            node.post(&r("forget"), Some(&bob.token), json!({})).await,
            StatusCode::OK,
            None,
        );
        let (_, rooms) = node
            .get(&format!("{V3}/joined_rooms"), Some(&bob.token))
            .await;
        assert_eq!(rooms["joined_rooms"], json!([]));
        // Alias management: the creator adds and removes one; another user cannot remove it.
        let alias = format!("%23porch%3A{}", node.server_name());
        check(
            "add alias",
            node.put(
                &format!("{V3}/directory/room/{alias}"),
                Some(&alice.token),
                json!({ "room_id": room }),
            )
            .await,
            StatusCode::OK,
            None,
        );
        let (_, found) = node
            .get(&format!("{V3}/directory/room/{alias}"), Some(&bob.token))
            .await;
        assert_eq!(found["room_id"], json!(room));
        check(
            "alias taken",
            node.put(
                &format!("{V3}/directory/room/{alias}"),
                Some(&bob.token),
                json!({ "room_id": room }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            Some("M_ROOM_IN_USE"),
        );
        check(
            "bob deletes",
            node.request(
                reqwest::Method::DELETE,
                &format!("{V3}/directory/room/{alias}"),
                Some(&bob.token),
                None,
            )
            .await,
            StatusCode::FORBIDDEN,
            Some("M_FORBIDDEN"),
        );
        check(
            "alice deletes",
            node.request(
                reqwest::Method::DELETE,
                &format!("{V3}/directory/room/{alias}"),
                Some(&alice.token),
                None,
            )
            .await,
            StatusCode::OK,
            None,
        );
        check(
            "gone",
            node.get(&format!("{V3}/directory/room/{alias}"), Some(&bob.token))
                .await,
            StatusCode::NOT_FOUND,
            Some("M_NOT_FOUND"),
        );
    }
}

#[tokio::test]
async fn profile_changes_reach_rooms_and_user_directory() {
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
        let (status, body) = node
            .put(
                &format!("{V3}/profile/{}/displayname", bob.user_id),
                Some(&bob.token),
                json!({ "displayname": "Bobby Tables" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, members) = node
            .get(
                &format!("{V3}/rooms/{room}/joined_members"),
                Some(&alice.token),
            )
            .await;
        assert_eq!(
            members["joined"][&bob.user_id]["display_name"],
            "Bobby Tables"
        );

        let search_url = format!("{V3}/user_directory/search");
        let search = |term: &str| {
            node.post(
                &search_url,
                Some(&alice.token),
                json!({ "search_term": term, "limit": 10 }),
            )
        };
        let (_, found) = search("bobby").await;
        let ids: Vec<&Value> = found["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|u| &u["user_id"])
            .collect();
        assert_eq!(ids, vec![&json!(bob.user_id)]);
        assert_eq!(found["results"][0]["display_name"], "Bobby Tables");
        let (_, found) = search("nobody-here").await;
        assert_eq!(found["results"], json!([]));

        // Directory filter by name.
        node.put(
            &format!("{V3}/directory/list/room/{room}"),
            Some(&alice.token),
            json!({ "visibility": "public" }),
        )
        .await;
        node.put(
            &format!("{V3}/rooms/{room}/state/m.room.name"),
            Some(&alice.token),
            json!({ "name": "Allotment" }),
        )
        .await;
        let (_, list) = node
            .post(
                &format!("{V3}/publicRooms"),
                Some(&bob.token),
                json!({ "filter": { "generic_search_term": "allot" } }),
            )
            .await;
        assert_eq!(list["chunk"][0]["name"], "Allotment");
        let (_, list) = node
            .post(
                &format!("{V3}/publicRooms"),
                Some(&bob.token),
                json!({ "filter": { "generic_search_term": "zzz" } }),
            )
            .await;
        assert_eq!(list["chunk"], json!([]));
    }
}
