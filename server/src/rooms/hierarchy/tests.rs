use serde_json::{Value, json};

use super::SpaceRoom;

fn child(room: &str, via: Value, order: Option<&str>, ts: u64, suggested: bool) -> Value {
    let mut content = json!({ "via": via, "suggested": suggested });
    if let Some(order) = order {
        content["order"] = order.into();
    }
    json!({ "type": "m.space.child", "state_key": room, "sender": "@a:x.org",
        "origin_server_ts": ts, "content": content })
}

/// The room IDs `space`'s children come in, read from an answer as another server sends it.
#[track_caller]
fn check(children: Vec<Value>, suggested_only: bool, expected: &[&str]) {
    let answer = json!({ "room_id": "!space:x.org", "num_joined_members": 1,
        "world_readable": false, "guest_can_join": false, "children_state": children });
    let space = SpaceRoom::from_chunk(&answer).expect("a valid room");
    let got: Vec<String> = space
        .children(suggested_only)
        .into_iter()
        .map(|c| c.room.to_string())
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn children_sort_by_order_then_time_then_id() {
    check(
        vec![
            child("!c:x.org", json!(["x.org"]), None, 1, false),
            child("!b:x.org", json!(["x.org"]), Some("b"), 9, false),
            child("!a:x.org", json!(["x.org"]), Some("b"), 3, false),
            child("!d:x.org", json!(["x.org"]), Some("a"), 9, false),
            child("!e:x.org", json!(["x.org"]), None, 0, false),
        ],
        false,
        &["!d:x.org", "!a:x.org", "!b:x.org", "!e:x.org", "!c:x.org"],
    );
}

#[test]
fn removed_and_malformed_children_are_dropped() {
    check(
        vec![
            child("!gone:x.org", json!([]), None, 1, false),
            child("!bad:x.org", json!("x.org"), None, 1, false),
            child("not a room", json!(["x.org"]), None, 1, false),
            child("!ok:x.org", json!([7, "x.org"]), Some("\u{7f}"), 1, false),
        ],
        false,
        &["!ok:x.org"],
    );
}

#[test]
fn suggested_only_keeps_suggested_children() {
    check(
        vec![
            child("!a:x.org", json!(["x.org"]), None, 1, false),
            child("!b:x.org", json!(["x.org"]), None, 2, true),
        ],
        true,
        &["!b:x.org"],
    );
}

#[test]
fn an_answer_without_a_room_id_is_refused() {
    assert!(SpaceRoom::from_chunk(&json!({ "name": "no id" })).is_none());
    assert!(SpaceRoom::from_chunk(&json!({ "room_id": "nonsense" })).is_none());
    assert!(SpaceRoom::from_chunk(&json!([])).is_none());
}
