//! Per-user data over HTTP: profiles, account data, tags, filters, push rules, pushers,
//! presence, typing and receipts.

use grove_server::StreamPosition;
use reqwest::{Method, StatusCode};
use ruma::{OwnedRoomId, UserId, event_id, room_id};
use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode};

#[track_caller]
fn check_error(got: (StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["errcode"], errcode, "{}", got.1);
}

#[tokio::test]
async fn profile_read_and_change() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let path = format!("/_matrix/client/v3/profile/{}", alice.user_id);
        // A new user is shown by their localpart.
        let (status, profile) = node.get(&path, Some(&bob.token)).await;
        assert_eq!(
            (status, profile),
            (StatusCode::OK, json!({ "displayname": "alice" }))
        );

        let (status, _) = node
            .put(
                &format!("{path}/displayname"),
                Some(&alice.token),
                json!({ "displayname": "Alice" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = node
            .put(
                &format!("{path}/avatar_url"),
                Some(&alice.token),
                json!({ "avatar_url": "mxc://example.org/abc" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, name) = node
            .get(&format!("{path}/displayname"), Some(&bob.token))
            .await;
        assert_eq!(name["displayname"], "Alice");
        let (_, avatar) = node
            .get(&format!("{path}/avatar_url"), Some(&bob.token))
            .await;
        assert_eq!(avatar["avatar_url"], "mxc://example.org/abc");
        let (_, whole) = node.get(&path, Some(&bob.token)).await;
        assert_eq!(
            whole,
            json!({ "displayname": "Alice", "avatar_url": "mxc://example.org/abc" })
        );

        check_error(
            node.put(
                &format!("{path}/displayname"),
                Some(&bob.token),
                json!({ "displayname": "x" }),
            )
            .await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        let nobody = format!("/_matrix/client/v3/profile/@nobody:{}", node.server_name());
        check_error(
            node.get(&nobody, Some(&bob.token)).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
    }
}

#[tokio::test]
async fn account_data_tags_and_filters() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let hs = node.node().homeserver();
        let user = UserId::parse(alice.user_id.as_str()).expect("user id");
        let base = format!("/_matrix/client/v3/user/{}", alice.user_id);

        let start = hs.notifier.current();
        let global = format!("{base}/account_data/org.example.settings");
        check_error(
            node.get(&global, Some(&alice.token)).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
        let (status, _) = node
            .put(&global, Some(&alice.token), json!({ "theme": "dark" }))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, got) = node.get(&global, Some(&alice.token)).await;
        assert_eq!((status, got), (StatusCode::OK, json!({ "theme": "dark" })));
        check_error(
            node.get(&global, Some(&bob.token)).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        check_error(
            node.put(
                &format!("{base}/account_data/m.push_rules"),
                Some(&alice.token),
                json!({}),
            )
            .await,
            StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
        );
        check_error(
            node.request(Method::PUT, &global, Some(&alice.token), Some(json!([1])))
                .await,
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        );

        let room: OwnedRoomId = room_id!("!room:example.org").to_owned();
        let room_data = format!("{base}/rooms/{room}/account_data/org.example.room");
        let (status, _) = node
            .put(&room_data, Some(&alice.token), json!({ "n": 1 }))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, got) = node.get(&room_data, Some(&alice.token)).await;
        assert_eq!(got, json!({ "n": 1 }));

        let tags = format!("{base}/rooms/{room}/tags");
        let (status, _) = node
            .put(
                &format!("{tags}/m.favourite"),
                Some(&alice.token),
                json!({ "order": 0.5 }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = node
            .put(&format!("{tags}/u.work"), Some(&alice.token), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, got) = node.get(&tags, Some(&alice.token)).await;
        assert_eq!(
            got,
            json!({ "tags": { "m.favourite": { "order": 0.5 }, "u.work": {} } })
        );
        let (status, _) = node
            .request(
                Method::DELETE,
                &format!("{tags}/u.work"),
                Some(&alice.token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, got) = node.get(&tags, Some(&alice.token)).await;
        assert_eq!(got, json!({ "tags": { "m.favourite": { "order": 0.5 } } }));

        // Sync sees exactly the changes after its token.
        let upto = hs.notifier.current();
        let globals = hs
            .userdata
            .global_account_data_since(&user, start, upto)
            .await
            .expect("global");
        let types: Vec<String> = globals
            .iter()
            .filter_map(|e| e.get_field::<String>("type").ok().flatten())
            .collect();
        assert_eq!(types, vec!["org.example.settings".to_owned()]);
        let initial = hs
            .userdata
            .global_account_data_since(&user, StreamPosition(0), upto)
            .await
            .expect("initial");
        assert!(initial.iter().any(
            |e| e.get_field::<String>("type").ok().flatten().as_deref() == Some("m.push_rules")
        ));
        let rooms = hs
            .userdata
            .room_account_data_since(&user, start, upto)
            .await
            .expect("rooms");
        let room_types: Vec<String> = rooms[&room]
            .iter()
            .filter_map(|e| e.get_field::<String>("type").ok().flatten())
            .collect();
        assert_eq!(
            room_types,
            vec!["org.example.room".to_owned(), "m.tag".to_owned()]
        );
        assert!(
            hs.userdata
                .room_account_data_since(&user, upto, upto)
                .await
                .expect("none")
                .is_empty()
        );

        let (status, created) = node
            .post(
                &format!("{base}/filter"),
                Some(&alice.token),
                json!({ "room": { "timeline": { "limit": 10 } } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        let id = created["filter_id"].as_str().expect("filter id");
        let (status, filter) = node
            .get(&format!("{base}/filter/{id}"), Some(&alice.token))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(filter["room"]["timeline"]["limit"], 10);
        check_error(
            node.get(&format!("{base}/filter/999"), Some(&alice.token))
                .await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
    }
}

#[tokio::test]
async fn push_rules_and_pushers() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let t = Some(alice.token.as_str());
        let (status, all) = node.get("/_matrix/client/v3/pushrules/", t).await;
        assert_eq!(status, StatusCode::OK, "{all}");
        let has = |all: &Value, kind: &str, id: &str| {
            all["global"][kind]
                .as_array()
                .is_some_and(|l| l.iter().any(|r| r["rule_id"] == id))
        };
        assert!(has(&all, "override", ".m.rule.master"));
        assert!(has(&all, "underride", ".m.rule.message"));

        let rule = "/_matrix/client/v3/pushrules/global/room/!r:example.org";
        let (status, body) = node.put(rule, t, json!({ "actions": ["notify"] })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, got) = node.get(rule, t).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["rule_id"], "!r:example.org");
        let (_, enabled) = node.get(&format!("{rule}/enabled"), t).await;
        assert_eq!(enabled["enabled"], true);
        let (status, _) = node
            .put(&format!("{rule}/enabled"), t, json!({ "enabled": false }))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, enabled) = node.get(&format!("{rule}/enabled"), t).await;
        assert_eq!(enabled["enabled"], false);
        let (status, _) = node
            .put(&format!("{rule}/actions"), t, json!({ "actions": [] }))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, actions) = node.get(&format!("{rule}/actions"), t).await;
        assert_eq!(actions["actions"], json!([]));

        // `before` and `after` place a new rule among the existing ones of its kind.
        let room_rule = |id: &str| format!("/_matrix/client/v3/pushrules/global/room/{id}");
        for (id, query) in [
            ("!a:x", ""),
            ("!b:x", "?after=!a:x"),
            ("!c:x", "?before=!a:x"),
        ] {
            let (status, body) = node
                .put(
                    &format!("{}{query}", room_rule(id)),
                    t,
                    json!({ "actions": [] }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let (_, all) = node.get("/_matrix/client/v3/pushrules/", t).await;
        let order: Vec<&str> = all["global"]["room"]
            .as_array()
            .map(|l| l.iter().filter_map(|r| r["rule_id"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(order, vec!["!c:x", "!a:x", "!b:x", "!r:example.org"]);
        check_error(
            node.put(
                &format!("{}?before=!nope:x", room_rule("!d:x")),
                t,
                json!({ "actions": [] }),
            )
            .await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );

        // Server-default rules can be toggled but not deleted.
        let master = "/_matrix/client/v3/pushrules/global/override/.m.rule.master";
        let (status, _) = node
            .put(&format!("{master}/enabled"), t, json!({ "enabled": true }))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, all) = node.get("/_matrix/client/v3/pushrules/", t).await;
        let master_rule = all["global"]["override"]
            .as_array()
            .and_then(|l| l.iter().find(|r| r["rule_id"] == ".m.rule.master"))
            .cloned();
        assert_eq!(master_rule.map(|r| r["enabled"].clone()), Some(json!(true)));
        let (status, _) = node.request(Method::DELETE, master, t, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (status, _) = node.request(Method::DELETE, rule, t, None).await;
        assert_eq!(status, StatusCode::OK);
        check_error(
            node.get(rule, t).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
        check_error(
            node.request(Method::DELETE, rule, t, None).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );

        let pusher = json!({
            "app_id": "org.example.app", "pushkey": "key1", "kind": "http",
            "app_display_name": "App", "device_display_name": "Phone", "lang": "en",
            "data": { "url": "https://push.example.org/_matrix/push/v1/notify" },
        });
        let (status, body) = node.post("/_matrix/client/v3/pushers/set", t, pusher).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, pushers) = node.get("/_matrix/client/v3/pushers", t).await;
        assert_eq!(pushers["pushers"][0]["pushkey"], "key1");
        let delete = json!({ "app_id": "org.example.app", "pushkey": "key1", "kind": null });
        let (status, body) = node.post("/_matrix/client/v3/pushers/set", t, delete).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, pushers) = node.get("/_matrix/client/v3/pushers", t).await;
        assert_eq!(pushers["pushers"], json!([]));
    }
}

#[tokio::test]
async fn presence_typing_and_receipts() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let hs = node.node().homeserver();
        let alice_id = UserId::parse(alice.user_id.as_str()).expect("user id");
        let bob_id = UserId::parse(bob.user_id.as_str()).expect("user id");

        let start = hs.notifier.current();
        let status_path = format!("/_matrix/client/v3/presence/{}/status", alice.user_id);
        let (status, _) = node
            .put(
                &status_path,
                Some(&alice.token),
                json!({ "presence": "online", "status_msg": "hi" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, got) = node.get(&status_path, Some(&bob.token)).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(
            (got["presence"].clone(), got["status_msg"].clone()),
            (json!("online"), json!("hi"))
        );
        check_error(
            node.put(
                &status_path,
                Some(&bob.token),
                json!({ "presence": "online" }),
            )
            .await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        let upto = hs.notifier.current();
        let changes = hs
            .userdata
            .presence_since(std::slice::from_ref(&alice_id), start, upto)
            .await
            .expect("presence");
        assert_eq!(changes.len(), 1);
        assert!(
            hs.userdata
                .presence_since(std::slice::from_ref(&bob_id), start, upto)
                .await
                .expect("none")
                .is_empty()
        );

        // Over HTTP, typing and receipts need membership; no room exists here, so they are
        // refused. The core behaviour below is what they store once membership checks pass.
        let room = room_id!("!room:example.org");
        check_error(
            node.put(
                &format!("/_matrix/client/v3/rooms/{room}/typing/{}", alice.user_id),
                Some(&alice.token),
                json!({ "typing": true, "timeout": 10000 }),
            )
            .await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        check_error(
            node.post(
                &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/$e:example.org"),
                Some(&alice.token),
                json!({}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );

        let rooms = vec![room.to_owned()];
        let before = hs.notifier.current();
        hs.userdata
            .set_typing(room, &alice_id, Some(std::time::Duration::from_millis(300)))
            .await
            .expect("typing");
        let event = event_id!("$event:example.org");
        hs.userdata
            .set_receipt(room, &alice_id, "m.read", None, event)
            .await
            .expect("receipt");
        hs.userdata
            .set_receipt(room, &alice_id, "m.read.private", Some("main"), event)
            .await
            .expect("private receipt");
        let upto = hs.notifier.current();
        let for_bob = hs
            .userdata
            .ephemeral_since(&bob_id, &rooms, before, upto)
            .await
            .expect("eph");
        let events: Vec<Value> = for_bob[room]
            .iter()
            .map(|e| serde_json::from_str(e.json().get()).expect("json"))
            .collect();
        assert_eq!(events.len(), 2, "{events:?}");
        let receipt = &events[0]["content"][event.as_str()];
        assert!(receipt["m.read"][alice.user_id.as_str()]["ts"].is_i64());
        assert!(
            receipt.get("m.read.private").is_none(),
            "private receipts are the owner's"
        );
        assert_eq!(events[1]["content"]["user_ids"], json!([alice.user_id]));
        let for_alice = hs
            .userdata
            .ephemeral_since(&alice_id, &rooms, before, upto)
            .await
            .expect("eph");
        let own: Value = serde_json::from_str(for_alice[room][0].json().get()).expect("json");
        assert_eq!(
            own["content"][event.as_str()]["m.read.private"][alice.user_id.as_str()]["thread_id"],
            "main"
        );
        // The receipt names an event this node does not hold: no read position comes of it.
        assert_eq!(
            hs.userdata
                .read_position(&alice_id, room)
                .await
                .expect("read"),
            None
        );

        // Typing expires by itself, and the expiry is a change sync sees.
        let wait = hs
            .notifier
            .wait_beyond(upto, std::time::Duration::from_secs(5))
            .await;
        assert!(wait > upto, "typing expiry takes a stream position");
        let later = hs
            .userdata
            .ephemeral_since(&bob_id, &rooms, upto, wait)
            .await
            .expect("eph");
        let typing: Value = serde_json::from_str(later[room][0].json().get()).expect("json");
        assert_eq!(typing["content"]["user_ids"], json!([]));
    }
}
