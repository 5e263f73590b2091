//! Simplified sliding sync (MSC4186) through real HTTP on both backends: lists in recency
//! order with counts and windows, required state with `$LAZY`/`$ME`/`*`, invites, only changed
//! rooms on later requests, long-poll wake-ups, `pos` handling, the extensions, and bad input.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode, TestUser, enc};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// One sliding sync request; `pos` and `timeout` go in the query.
async fn slide(
    node: &TestNode,
    user: &TestUser,
    pos: Option<&str>,
    timeout_ms: u64,
    body: Value,
) -> (StatusCode, Value) {
    let mut path = format!("{PATH}?timeout={timeout_ms}");
    if let Some(pos) = pos {
        path.push_str(&format!("&pos={}", enc(pos)));
    }
    node.post(&path, Some(&user.token), body).await
}

/// [`slide`], which must succeed.
async fn slide_ok(
    node: &TestNode,
    user: &TestUser,
    pos: Option<&str>,
    timeout_ms: u64,
    body: &Value,
) -> Value {
    let (status, resp) = slide(node, user, pos, timeout_ms, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "sliding sync: {resp}");
    resp
}

fn pos(resp: &Value) -> String {
    resp["pos"].as_str().expect("pos").to_owned()
}

/// The list Element X's room list sends, over `ranges`.
fn room_list(ranges: Value) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": { "all": {
            "ranges": ranges,
            "timeline_limit": 1,
            "required_state": [
                ["m.room.name", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
                ["m.room.create", ""], ["m.call.member", "*"]
            ],
        }},
    })
}

/// The rooms of a response in the order their `bump_stamp`s sort them, newest first.
fn by_recency(resp: &Value) -> Vec<String> {
    let mut rooms: Vec<(u64, String)> = resp["rooms"]
        .as_object()
        .map(|rooms| {
            rooms
                .iter()
                .map(|(id, r)| (r["bump_stamp"].as_u64().expect("bump_stamp"), id.clone()))
                .collect()
        })
        .unwrap_or_default();
    rooms.sort_by(|a, b| b.cmp(a));
    rooms.into_iter().map(|(_, id)| id).collect()
}

fn bodies(room: &Value) -> Vec<String> {
    crate::support::message_bodies(&room["timeline"])
}

fn state_types(room: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = room["required_state"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap_or_default().to_owned(),
                        e["state_key"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

async fn room_named(node: &TestNode, user: &TestUser, name: &str) -> String {
    node.create_room(user, json!({ "name": name })).await
}

#[tokio::test]
async fn lists_rooms_newest_first_then_only_what_changed() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let kitchen = room_named(&node, &alice, "Kitchen").await;
        let garden = room_named(&node, &alice, "Garden").await;
        let attic = room_named(&node, &alice, "Attic").await;
        node.send_text(&alice, &kitchen, "soup").await;
        node.send_text(&alice, &attic, "dust").await;

        let list = room_list(json!([[0, 9]]));
        let first = slide_ok(&node, &alice, None, 0, &list).await;
        assert_eq!(first["lists"]["all"]["count"], 3, "{first}");
        assert_eq!(
            by_recency(&first),
            [attic.clone(), kitchen.clone(), garden.clone()]
        );
        let room = &first["rooms"][&attic];
        assert_eq!(room["initial"], true);
        assert_eq!(room["name"], "Attic");
        assert_eq!(bodies(room), ["dust"]);
        assert_eq!(room["limited"], true, "one event of many: {room}");
        assert!(room["prev_batch"].is_string());
        assert_eq!(room["joined_count"], 1);
        assert_eq!(room["notification_count"], 0);
        // `$ME` and `$LAZY` (alice sent the timeline's event) name her member event once.
        assert_eq!(
            state_types(room),
            [
                ("m.room.create".to_owned(), String::new()),
                ("m.room.member".to_owned(), alice.user_id.clone()),
                ("m.room.name".to_owned(), String::new()),
            ]
        );

        // Nothing changed: a request without waiting answers no rooms.
        let quiet = slide_ok(&node, &alice, Some(&pos(&first)), 0, &list).await;
        assert!(
            quiet["rooms"].as_object().is_none_or(|r| r.is_empty()),
            "{quiet}"
        );

        // A message moves the garden to the top; only it is sent, with only the new event.
        node.send_text(&alice, &garden, "weeds").await;
        let next = slide_ok(&node, &alice, Some(&pos(&quiet)), 0, &list).await;
        let rooms = next["rooms"].as_object().expect("rooms");
        assert_eq!(rooms.len(), 1, "{next}");
        let room = &next["rooms"][&garden];
        assert!(room["initial"].is_null(), "{room}");
        assert_eq!(bodies(room), ["weeds"]);
        assert!(
            room["bump_stamp"].as_u64() > first["rooms"][&attic]["bump_stamp"].as_u64(),
            "{next}"
        );

        // Bob joins and speaks: alice's unread count and his lazy member event come along.
        let (status, _) = node
            .post(
                &format!("/_matrix/client/v3/rooms/{}/invite", enc(&kitchen)),
                Some(&alice.token),
                json!({ "user_id": bob.user_id }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = node
            .post(
                &format!("/_matrix/client/v3/join/{}", enc(&kitchen)),
                Some(&bob.token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        node.send_text(&bob, &kitchen, "hello alice").await;
        let after = slide_ok(&node, &alice, Some(&pos(&next)), 0, &list).await;
        let room = &after["rooms"][&kitchen];
        assert_eq!(bodies(room), ["hello alice"], "{room}");
        assert_eq!(room["limited"], true, "join events came before: {room}");
        assert_eq!(room["notification_count"], 1, "{room}");
        assert_eq!(room["joined_count"], 2);
        assert!(
            state_types(room).contains(&("m.room.member".to_owned(), bob.user_id.clone())),
            "{room}"
        );
        assert_eq!(by_recency(&after)[0], kitchen);
    }
}

#[tokio::test]
async fn a_waiting_request_wakes_on_a_message() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let room = node
            .create_room(&bob, json!({ "invite": [alice.user_id], "name": "Porch" }))
            .await;
        let other = room_named(&node, &alice, "Other").await;
        let list = room_list(json!([[0, 20]]));
        let first = slide_ok(&node, &alice, None, 0, &list).await;
        // The invite shows its stripped state, and no timeline.
        let invite = &first["rooms"][&room];
        let stripped = invite["invite_state"].as_array().expect("invite_state");
        assert!(
            stripped.iter().any(|e| e["type"] == "m.room.name"),
            "{invite}"
        );
        assert!(invite["timeline"].is_null());
        // A list of invites only.
        let invites = json!({ "conn_id": "invites", "lists": { "invites": {
            "ranges": [[0, 5]], "timeline_limit": 0, "filters": { "is_invite": true } } } });
        let only = slide_ok(&node, &alice, None, 0, &invites).await;
        assert_eq!(only["lists"]["invites"]["count"], 1, "{only}");

        let (status, _) = node
            .post(
                &format!("/_matrix/client/v3/join/{}", enc(&room)),
                Some(&alice.token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let joined = slide_ok(&node, &alice, Some(&pos(&first)), 0, &list).await;
        let porch = &joined["rooms"][&room];
        assert_eq!(
            porch["initial"], true,
            "an accepted invite comes whole: {porch}"
        );
        assert!(porch["invite_state"].is_null());
        assert_eq!(porch["name"], "Porch");

        let at = pos(&joined);
        let waiting = {
            let node_url = node.url();
            let token = alice.token.clone();
            let list = list.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let resp = reqwest::Client::new()
                    .post(format!("{node_url}{PATH}?timeout=20000&pos={}", enc(&at)))
                    .bearer_auth(token)
                    .json(&list)
                    .send()
                    .await
                    .expect("sent")
                    .json::<Value>()
                    .await
                    .expect("json");
                (resp, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        node.send_text(&bob, &room, "dinner").await;
        let (resp, _) = waiting.await.expect("waiter");
        let woke = sent.elapsed();
        assert!(woke < Duration::from_secs(1), "woke after {woke:?}");
        assert_eq!(bodies(&resp["rooms"][&room]), ["dinner"], "{resp}");
        assert!(resp["rooms"][&other].is_null());

        // With nothing to say, the wait ends at the timeout with a fresh pos.
        let started = Instant::now();
        let idle = slide_ok(&node, &alice, Some(&pos(&resp)), 300, &list).await;
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert_ne!(pos(&idle), pos(&resp));
    }
}

#[tokio::test]
async fn positions_are_checked_and_a_retry_is_answered() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let room = room_named(&node, &alice, "Den").await;
        let list = room_list(json!([[0, 9]]));
        let first = slide_ok(&node, &alice, None, 0, &list).await;
        for bad in ["nonsense", "99999999", "-1", ""] {
            let (status, body) = slide(&node, &alice, Some(bad), 0, list.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "pos {bad:?}: {body}");
            assert_eq!(body["errcode"], "M_UNKNOWN_POS", "pos {bad:?}");
        }
        // Another connection's pos is not this one's.
        let mut other = list.clone();
        other["conn_id"] = json!("other");
        let (status, body) = slide(&node, &alice, Some(&pos(&first)), 0, other).await;
        assert_eq!(body["errcode"], "M_UNKNOWN_POS", "{status} {body}");

        node.send_text(&alice, &room, "one").await;
        let second = slide_ok(&node, &alice, Some(&pos(&first)), 0, &list).await;
        // The answer was lost: the same request again gets the same rooms.
        let again = slide_ok(&node, &alice, Some(&pos(&first)), 0, &list).await;
        assert_eq!(bodies(&second["rooms"][&room]), ["one"]);
        assert_eq!(bodies(&again["rooms"][&room]), ["one"]);
        // Moving on from the newest acknowledges it; the first pos is then gone.
        slide_ok(&node, &alice, Some(&pos(&again)), 0, &list).await;
        let (_, body) = slide(&node, &alice, Some(&pos(&first)), 0, list.clone()).await;
        assert_eq!(body["errcode"], "M_UNKNOWN_POS");
        // A restart forgets every connection: the client is told to start over.
        let mut node = node;
        let latest = pos(&again);
        node.restart().await;
        let (_, body) = slide(&node, &alice, Some(&latest), 0, list.clone()).await;
        assert_eq!(body["errcode"], "M_UNKNOWN_POS");
        let fresh = slide_ok(&node, &alice, None, 0, &list).await;
        assert_eq!(fresh["rooms"][&room]["initial"], true);
    }
}

#[tokio::test]
async fn windows_scroll_over_many_rooms() {
    let node = TestNode::start(grove_server::storage::Backend::Sqlite).await;
    let alice = node.register("alice").await;
    let mut rooms = Vec::new();
    for i in 0..30 {
        rooms.push(room_named(&node, &alice, &format!("room {i:02}")).await);
    }
    // Newest first: the last created is first.
    rooms.reverse();
    let top = slide_ok(&node, &alice, None, 0, &room_list(json!([[0, 9]]))).await;
    assert_eq!(top["lists"]["all"]["count"], 30);
    assert_eq!(by_recency(&top), rooms[..10]);
    let mut scrolled = room_list(json!([[10, 19], [25, 1000]]));
    scrolled["conn_id"] = json!("room-list");
    let next = slide_ok(&node, &alice, Some(&pos(&top)), 0, &scrolled).await;
    let mut expected: Vec<String> = rooms[10..20].to_vec();
    expected.extend_from_slice(&rooms[25..]);
    assert_eq!(
        by_recency(&next),
        expected,
        "only rooms new to the connection"
    );
    // Past the end: no rooms and the count still right.
    let past = slide_ok(&node, &alice, None, 0, &room_list(json!([[100, 200]]))).await;
    assert_eq!(past["lists"]["all"]["count"], 30);
    assert!(past["rooms"].as_object().is_none_or(|r| r.is_empty()));
}

#[tokio::test]
async fn subscriptions_and_wildcards() {
    let node = TestNode::start(grove_server::storage::Backend::Sqlite).await;
    let alice = node.register("alice").await;
    let room = node
        .create_room(&alice, json!({ "name": "Loft", "topic": "up" }))
        .await;
    let body = json!({
        "room_subscriptions": { &room: {
            "timeline_limit": 50,
            "required_state": [["*", "*"]],
        }},
    });
    let resp = slide_ok(&node, &alice, None, 0, &body).await;
    let loft = &resp["rooms"][&room];
    let types = state_types(loft);
    for kind in [
        "m.room.create",
        "m.room.name",
        "m.room.topic",
        "m.room.power_levels",
    ] {
        assert!(types.iter().any(|(t, _)| t == kind), "{kind} in {types:?}");
    }
    // `limited` is left out when false.
    assert!(loft["limited"].is_null(), "the whole room fits: {loft}");
    let created = loft["timeline"].as_array().expect("timeline");
    assert_eq!(created[0]["type"], "m.room.create");
    // A room the user is not in is not shown, whatever the subscription says.
    let bob = node.register("bob").await;
    let (status, resp) = slide(&node, &bob, None, 0, body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        resp["rooms"].as_object().is_none_or(|r| r.is_empty()),
        "{resp}"
    );
}

#[tokio::test]
async fn extensions_carry_to_device_keys_account_data_receipts_and_typing() {
    let node = TestNode::start(grove_server::storage::Backend::Sqlite).await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = node
        .create_room(&alice, json!({ "invite": [bob.user_id], "name": "Hall" }))
        .await;
    let (status, _) = node
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let event = node.send_text(&bob, &room, "hi").await;
    let (status, _) = node
        .put(
            "/_matrix/client/v3/sendToDevice/m.room_key_request/t1",
            Some(&bob.token),
            json!({ "messages": { &alice.user_id: { &alice.device_id: { "n": 1 } } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = json!({
        "conn_id": "all",
        "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 1 } },
        "extensions": {
            "to_device": { "enabled": true },
            "e2ee": { "enabled": true },
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "lists": ["all", "no-such-list"] },
            "typing": { "enabled": true },
        },
    });
    let first = slide_ok(&node, &alice, None, 0, &body).await;
    let ext = &first["extensions"];
    let to_device = ext["to_device"]["events"].as_array().expect("to_device");
    assert_eq!(to_device.len(), 1, "{ext}");
    assert_eq!(to_device[0]["content"]["n"], 1);
    let since = ext["to_device"]["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    assert_eq!(
        ext["e2ee"]["device_one_time_keys_count"]["signed_curve25519"],
        0
    );
    assert!(ext["e2ee"]["device_unused_fallback_key_types"].is_array());
    let global = ext["account_data"]["global"].as_array().expect("global");
    assert!(global.iter().any(|e| e["type"] == "m.push_rules"), "{ext}");

    // Bob reads and types; alice tags the room.
    let (status, _) = node
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&event)
            ),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = node
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room),
                enc(&bob.user_id)
            ),
            Some(&bob.token),
            json!({ "typing": true, "timeout": 30000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = node
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/tags/u.work",
                enc(&alice.user_id),
                enc(&room)
            ),
            Some(&alice.token),
            json!({ "order": 0.5 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut next_body = body.clone();
    next_body["extensions"]["to_device"]["since"] = json!(since);
    let next = slide_ok(&node, &alice, Some(&pos(&first)), 0, &next_body).await;
    let ext = &next["extensions"];
    assert!(
        ext["to_device"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "acknowledged: {ext}"
    );
    let receipt = &ext["receipts"]["rooms"][&room]["content"][&event]["m.read"][&bob.user_id];
    assert!(receipt["ts"].is_u64(), "{ext}");
    let typing = &ext["typing"]["rooms"][&room]["content"]["user_ids"];
    assert_eq!(typing, &json!([bob.user_id]), "{ext}");
    let tags = ext["account_data"]["rooms"][&room]
        .as_array()
        .expect("room account data");
    assert!(tags.iter().any(|e| e["type"] == "m.tag"), "{ext}");
    assert!(
        ext["account_data"]["global"].is_null(),
        "unchanged global data: {ext}"
    );
}

#[tokio::test]
async fn bad_input_is_a_matrix_error() {
    let node = TestNode::start(grove_server::storage::Backend::Sqlite).await;
    let alice = node.register("alice").await;
    let many_pairs: Vec<Value> = (0..300)
        .map(|i| json!(["m.room.member", format!("@u{i}:x")]))
        .collect();
    let many_lists: serde_json::Map<String, Value> = (0..40)
        .map(|i| {
            (
                format!("l{i}"),
                json!({ "ranges": [[0, 1]], "timeline_limit": 1 }),
            )
        })
        .collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "reversed range",
            json!({ "lists": { "a": { "ranges": [[5, 1]], "timeline_limit": 1 } } }),
            "M_INVALID_PARAM",
        ),
        (
            "huge required_state",
            json!({ "lists": { "a": { "ranges": [[0, 1]], "timeline_limit": 1, "required_state": many_pairs } } }),
            "M_INVALID_PARAM",
        ),
        (
            "too many lists",
            json!({ "lists": many_lists }),
            "M_INVALID_PARAM",
        ),
        (
            "long conn_id",
            json!({ "conn_id": "x".repeat(5000) }),
            "M_INVALID_PARAM",
        ),
        (
            "ranges not numbers",
            json!({ "lists": { "a": { "ranges": [["a", "b"]], "timeline_limit": 1 } } }),
            "M_BAD_JSON",
        ),
        (
            "negative range",
            json!({ "lists": { "a": { "ranges": [[-1, 3]], "timeline_limit": 1 } } }),
            "M_BAD_JSON",
        ),
        (
            "lists not a map",
            json!({ "lists": [1, 2, 3] }),
            "M_BAD_JSON",
        ),
        (
            "bad room id",
            json!({ "room_subscriptions": { "not-a-room": { "timeline_limit": 1 } } }),
            "M_BAD_JSON",
        ),
        (
            "bad to-device token",
            json!({ "extensions": { "to_device": { "enabled": true, "since": "soon" } } }),
            "M_INVALID_PARAM",
        ),
    ];
    for (what, body, errcode) in cases {
        let (status, resp) = slide(&node, &alice, None, 0, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {resp}");
        assert_eq!(resp["errcode"], errcode, "{what}: {resp}");
    }
    // Not JSON at all.
    let resp = reqwest::Client::new()
        .post(format!("{}{PATH}", node.url()))
        .bearer_auth(&alice.token)
        .body("{{{{")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert!(
        matches!(body["errcode"].as_str(), Some("M_NOT_JSON" | "M_BAD_JSON")),
        "{body}"
    );
    // No token.
    let (status, resp) = node
        .request(Method::POST, PATH, None, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{resp}");
    // A range far past the end, and the largest numbers JSON allows, are only empty windows.
    let huge = json!({ "lists": { "a": { "ranges": [[9007199254740990u64, 9007199254740991u64]], "timeline_limit": 9007199254740991u64 } } });
    let (status, resp) = slide(&node, &alice, None, 0, huge).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["lists"]["a"]["count"], 0);
    // The server says it speaks it.
    let (_, versions) = node.get("/_matrix/client/versions", None).await;
    assert_eq!(
        versions["unstable_features"]["org.matrix.simplified_msc3575"],
        true
    );
}

/// The rooms one list with `filters` holds (a fresh connection, a window over all of them).
async fn filtered(node: &TestNode, user: &TestUser, filters: Value) -> Vec<String> {
    let body = json!({
        "conn_id": "filtered",
        "lists": { "only": { "ranges": [[0, 99]], "timeline_limit": 0, "filters": filters } },
    });
    let resp = slide_ok(node, user, None, 0, &body).await;
    let mut rooms: Vec<String> = resp["rooms"]
        .as_object()
        .map(|rooms| rooms.keys().cloned().collect())
        .unwrap_or_default();
    rooms.sort();
    assert_eq!(resp["lists"]["only"]["count"], rooms.len(), "{resp}");
    rooms
}

/// A room of Element X's kinds: `kind` is its create type, `encrypted` whether it starts so.
async fn kinded_room(
    node: &TestNode,
    user: &TestUser,
    kind: Option<&str>,
    encrypted: bool,
) -> String {
    let mut body = json!({ "name": "kinded" });
    if let Some(kind) = kind {
        body["creation_content"] = json!({ "type": kind });
    }
    if encrypted {
        body["initial_state"] = json!([{
            "type": "m.room.encryption", "state_key": "",
            "content": { "algorithm": "m.megolm.v1.aes-sha2" },
        }]);
    }
    node.create_room(user, body).await
}

#[tokio::test]
async fn filters_by_room_type_and_encryption_also_after_the_migration() {
    for backend in BACKENDS {
        let mut node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let plain = kinded_room(&node, &alice, None, false).await;
        let secret = kinded_room(&node, &alice, None, true).await;
        let space = kinded_room(&node, &alice, Some("m.space"), false).await;
        // Encryption turned on after the room was made.
        let later = kinded_room(&node, &alice, None, false).await;
        let (status, resp) = node
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.encryption/",
                    enc(&later)
                ),
                Some(&alice.token),
                json!({ "algorithm": "m.megolm.v1.aes-sha2" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        // An invite into bob's encrypted space.
        let bobs = kinded_room(&node, &bob, Some("m.space"), true).await;
        let (status, resp) = node
            .post(
                &format!("/_matrix/client/v3/rooms/{}/invite", enc(&bobs)),
                Some(&bob.token),
                json!({ "user_id": alice.user_id }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{resp}");

        let sorted = |mut rooms: Vec<&String>| {
            rooms.sort();
            rooms.into_iter().cloned().collect::<Vec<String>>()
        };
        let cases = [
            (
                json!({ "is_encrypted": true }),
                sorted(vec![&secret, &later, &bobs]),
            ),
            (
                json!({ "is_encrypted": false }),
                sorted(vec![&plain, &space]),
            ),
            (
                json!({ "room_types": ["m.space"] }),
                sorted(vec![&space, &bobs]),
            ),
            (
                json!({ "room_types": [null] }),
                sorted(vec![&plain, &secret, &later]),
            ),
            (
                json!({ "not_room_types": ["m.space"], "is_encrypted": true }),
                sorted(vec![&secret, &later]),
            ),
            (
                json!({ "room_types": ["m.space", null], "not_room_types": ["m.space"] }),
                sorted(vec![&plain, &secret, &later]),
            ),
            (
                json!({ "room_types": ["m.space"], "is_invite": true }),
                sorted(vec![&bobs]),
            ),
            (json!({ "room_types": ["org.example.unknown"] }), vec![]),
        ];
        for (filters, expected) in &cases {
            assert_eq!(
                filtered(&node, &alice, filters.clone()).await,
                *expected,
                "{backend:?}: {filters}"
            );
        }

        // Rooms held before the index existed: the migration fills it from their state.
        let stopped = node.node.take().expect("node running");
        let addr = stopped.client_addr();
        stopped.shutdown().await;
        let pool = sqlx::AnyPool::connect(&node.db.url)
            .await
            .expect("database");
        for statement in [
            "ALTER TABLE rooms DROP COLUMN room_type",
            "ALTER TABLE rooms DROP COLUMN encrypted",
            "DELETE FROM _sqlx_migrations WHERE version = 14",
        ] {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        pool.close().await;
        node.restart_at(addr).await;
        for (filters, expected) in &cases {
            assert_eq!(
                filtered(&node, &alice, filters.clone()).await,
                *expected,
                "{backend:?} after the migration: {filters}"
            );
        }
    }
}
