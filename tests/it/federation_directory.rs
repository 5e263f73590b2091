//! Directory features across two nodes federated over real loopback QUIC: another node's
//! public room directory listed with `?server=`, space hierarchies whose rooms live on another
//! node, presence sent and received as EDUs, and users of another node found in the user
//! directory once they share a room.

use grove_server::storage::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode, TestUser, enc, eventually};

const V3: &str = "/_matrix/client/v3";

/// Two peered nodes, A and B, with a user on each.
async fn pair(backend: Backend) -> (TestNode, TestNode, TestUser, TestUser) {
    let a = TestNode::start_federated(backend, Vec::new()).await;
    let b = TestNode::start_federated(backend, vec![a.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    (a, b, alice, bob)
}

async fn create_room(node: &TestNode, user: &TestUser, body: Value) -> String {
    let (status, created) = node
        .post(&format!("{V3}/createRoom"), Some(&user.token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom: {created}");
    created["room_id"].as_str().expect("room_id").to_owned()
}

fn room_ids(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["room_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn public_rooms_of_another_server() {
    for backend in BACKENDS {
        let (a, b, alice, bob) = pair(backend).await;
        let orchard = create_room(
            &a,
            &alice,
            json!({ "preset": "public_chat", "visibility": "public", "name": "Orchard" }),
        )
        .await;
        let meadow = create_room(
            &a,
            &alice,
            json!({ "preset": "public_chat", "visibility": "public", "name": "Meadow",
                "topic": "grass" }),
        )
        .await;
        // Not published: never listed.
        create_room(
            &a,
            &alice,
            json!({ "preset": "public_chat", "name": "Hidden" }),
        )
        .await;

        let server = a.server_name();
        let listed = eventually("A's directory seen from B", async || {
            let (status, page) = b
                .get(
                    &format!("{V3}/publicRooms?server={server}"),
                    Some(&bob.token),
                )
                .await;
            if status == StatusCode::OK {
                Ok(page)
            } else {
                Err(format!("{status} {page}"))
            }
        })
        .await;
        let mut ids = room_ids(&listed);
        ids.sort();
        let mut expected = vec![orchard.clone(), meadow.clone()];
        expected.sort();
        assert_eq!(ids, expected, "{listed}");
        assert_eq!(listed["total_room_count_estimate"], 2);
        // B's own directory is empty: the rooms are A's.
        let (status, own) = b.get(&format!("{V3}/publicRooms"), Some(&bob.token)).await;
        assert_eq!(status, StatusCode::OK, "{own}");
        assert_eq!(room_ids(&own), Vec::<String>::new());

        // Filtered, over POST.
        let (status, found) = b
            .post(
                &format!("{V3}/publicRooms?server={server}"),
                Some(&bob.token),
                json!({ "filter": { "generic_search_term": "orch" }, "include_all_networks": true }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(room_ids(&found), vec![orchard.clone()]);
        assert_eq!(found["chunk"][0]["name"], "Orchard");
        let (_, found) = b
            .post(
                &format!("{V3}/publicRooms?server={server}"),
                Some(&bob.token),
                json!({ "filter": { "generic_search_term": "grass" } }),
            )
            .await;
        assert_eq!(room_ids(&found), vec![meadow.clone()]);

        // Paged one room at a time with A's own tokens.
        let (status, first) = b
            .get(
                &format!("{V3}/publicRooms?server={server}&limit=1"),
                Some(&bob.token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(room_ids(&first).len(), 1);
        let next = first["next_batch"].as_str().expect("next_batch").to_owned();
        let (status, second) = b
            .get(
                &format!(
                    "{V3}/publicRooms?server={server}&limit=1&since={}",
                    enc(&next)
                ),
                Some(&bob.token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{second}");
        assert_eq!(room_ids(&second).len(), 1);
        assert_ne!(room_ids(&first), room_ids(&second));
        assert!(second.get("next_batch").is_none(), "{second}");
        assert!(second["prev_batch"].is_string(), "{second}");

        // A bad token is A's error, passed on; an unknown server is not found.
        let (status, body) = b
            .get(
                &format!("{V3}/publicRooms?server={server}&since=nonsense"),
                Some(&bob.token),
            )
            .await;
        assert!(status.is_client_error(), "{status} {body}");
        let stranger = "example.org";
        let (status, body) = b
            .get(
                &format!("{V3}/publicRooms?server={stranger}"),
                Some(&bob.token),
            )
            .await;
        assert!(status.is_client_error(), "{status} {body}");
    }
}

/// Lists `child` in `space` with an `m.space.child` event.
async fn add_child(
    node: &TestNode,
    user: &TestUser,
    space: &str,
    child: &str,
    via: &str,
    extra: Value,
) {
    let mut content = json!({ "via": [via] });
    if let (Some(content), Some(extra)) = (content.as_object_mut(), extra.as_object()) {
        content.extend(extra.clone());
    }
    let (status, body) = node
        .put(
            &format!(
                "{V3}/rooms/{}/state/m.space.child/{}",
                enc(space),
                enc(child)
            ),
            Some(&user.token),
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "m.space.child: {body}");
}

fn hierarchy_ids(page: &Value) -> Vec<String> {
    page["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["room_id"].as_str().map(str::to_owned))
        .collect()
}

async fn get_hierarchy(node: &TestNode, user: &TestUser, room: &str, query: &str) -> Value {
    let (status, page) = node
        .get(
            &format!("/_matrix/client/v1/rooms/{}/hierarchy?{query}", enc(room)),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "hierarchy {query}: {page}");
    page
}

#[tokio::test]
async fn space_with_children_on_one_node() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let server = node.server_name();
        let space = create_room(
            &node,
            &alice,
            json!({ "preset": "public_chat", "name": "Garden",
                "creation_content": { "type": "m.space" } }),
        )
        .await;
        let lawn = create_room(
            &node,
            &alice,
            json!({ "preset": "public_chat", "name": "Lawn" }),
        )
        .await;
        let shed = create_room(
            &node,
            &alice,
            json!({ "preset": "private_chat", "name": "Shed" }),
        )
        .await;
        // Bob's private room: Alice may not see it, so it is left out.
        let den = create_room(
            &node,
            &bob,
            json!({ "preset": "private_chat", "name": "Den" }),
        )
        .await;
        add_child(
            &node,
            &alice,
            &space,
            &lawn,
            &server,
            json!({ "order": "a", "suggested": true }),
        )
        .await;
        add_child(
            &node,
            &alice,
            &space,
            &shed,
            &server,
            json!({ "order": "b" }),
        )
        .await;
        add_child(
            &node,
            &alice,
            &space,
            &den,
            &server,
            json!({ "order": "c" }),
        )
        .await;

        let page = get_hierarchy(&node, &alice, &space, "").await;
        assert_eq!(
            hierarchy_ids(&page),
            vec![space.clone(), lawn.clone(), shed.clone()]
        );
        assert_eq!(page["rooms"][0]["room_type"], "m.space");
        assert_eq!(page["rooms"][0]["name"], "Garden");
        assert_eq!(
            page["rooms"][0]["children_state"].as_array().map(Vec::len),
            Some(3)
        );
        assert_eq!(page["rooms"][1]["name"], "Lawn");
        assert_eq!(page["rooms"][2]["join_rule"], "invite");
        assert!(page.get("next_batch").is_none(), "{page}");

        // Paged one room at a time.
        let first = get_hierarchy(&node, &alice, &space, "limit=2").await;
        assert_eq!(hierarchy_ids(&first), vec![space.clone(), lawn.clone()]);
        let from = first["next_batch"].as_str().expect("next_batch");
        let rest = get_hierarchy(&node, &alice, &space, &format!("limit=2&from={from}")).await;
        assert_eq!(hierarchy_ids(&rest), vec![shed.clone()]);
        assert!(rest.get("next_batch").is_none(), "{rest}");

        // Depth and suggestions.
        let top = get_hierarchy(&node, &alice, &space, "max_depth=0").await;
        assert_eq!(hierarchy_ids(&top), vec![space.clone()]);
        let suggested = get_hierarchy(&node, &alice, &space, "suggested_only=true").await;
        assert_eq!(hierarchy_ids(&suggested), vec![space.clone(), lawn.clone()]);

        // Bob sees the public rooms and his own; a removed child (empty content) is gone.
        let page = get_hierarchy(&node, &bob, &space, "").await;
        assert_eq!(
            hierarchy_ids(&page),
            vec![space.clone(), lawn.clone(), den.clone()]
        );
        let (status, body) = node
            .put(
                &format!(
                    "{V3}/rooms/{}/state/m.space.child/{}",
                    enc(&space),
                    enc(&lawn)
                ),
                Some(&alice.token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = get_hierarchy(&node, &bob, &space, "").await;
        assert_eq!(hierarchy_ids(&page), vec![space.clone(), den.clone()]);

        // A private root the user is not in, an unknown room and a bad token.
        let (status, body) = node
            .get(
                &format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&shed)),
                Some(&bob.token),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let unknown = format!("!nowhere:{server}");
        let (status, body) = node
            .get(
                &format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&unknown)),
                Some(&bob.token),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = node
            .get(
                &format!("/_matrix/client/v1/rooms/{}/hierarchy?from=x", enc(&space)),
                Some(&alice.token),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn space_children_on_another_node() {
    for backend in BACKENDS {
        let (a, b, alice, bob) = pair(backend).await;
        // On B: a public sub-space listing a public room and a private one.
        let sub = create_room(
            &b,
            &bob,
            json!({ "preset": "public_chat", "name": "Allotments",
                "creation_content": { "type": "m.space" } }),
        )
        .await;
        let plot = create_room(&b, &bob, json!({ "preset": "public_chat", "name": "Plot" })).await;
        let hut = create_room(&b, &bob, json!({ "preset": "private_chat", "name": "Hut" })).await;
        let b_name = b.server_name();
        add_child(&b, &bob, &sub, &plot, &b_name, json!({ "suggested": true })).await;
        add_child(&b, &bob, &sub, &hut, &b_name, json!({})).await;
        // On A: a space listing B's sub-space.
        let space = create_room(
            &a,
            &alice,
            json!({ "preset": "public_chat", "name": "Parish",
                "creation_content": { "type": "m.space" } }),
        )
        .await;
        add_child(
            &a,
            &alice,
            &space,
            &sub,
            &b_name,
            json!({ "suggested": true }),
        )
        .await;

        let page = eventually("B's rooms in A's hierarchy", async || {
            let page = get_hierarchy(&a, &alice, &space, "").await;
            if hierarchy_ids(&page).len() == 3 {
                Ok(page)
            } else {
                Err(page.to_string())
            }
        })
        .await;
        assert_eq!(
            hierarchy_ids(&page),
            vec![space.clone(), sub.clone(), plot.clone()]
        );
        assert_eq!(page["rooms"][1]["name"], "Allotments");
        assert_eq!(page["rooms"][1]["room_type"], "m.space");
        assert_eq!(
            page["rooms"][1]["children_state"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(page["rooms"][2]["name"], "Plot");
        assert_eq!(page["rooms"][2]["num_joined_members"], 1);

        // Depth 1 stops at the sub-space; suggested_only still follows suggested children.
        let top = get_hierarchy(&a, &alice, &space, "max_depth=1").await;
        assert_eq!(hierarchy_ids(&top), vec![space.clone(), sub.clone()]);
        let suggested = get_hierarchy(&a, &alice, &space, "suggested_only=true").await;
        assert_eq!(
            hierarchy_ids(&suggested),
            vec![space.clone(), sub.clone(), plot.clone()]
        );

        // The federation endpoints themselves, as A asks B: a private room B's users are in
        // alone is unknown to A, and bad parameters are refused.
        let client = grove_federation::client::Client::new(
            a.node().overlay().expect("overlay").clone(),
            a.node().homeserver().key.clone(),
            ruma::ServerName::parse(a.server_name()).expect("server name"),
        );
        let b_server = ruma::ServerName::parse(b.server_name()).expect("server name");
        let ask = |path: String| {
            let client = client.clone();
            let b_server = b_server.clone();
            async move {
                client
                    .request(&b_server, http::Method::GET, &path, None)
                    .await
            }
        };
        let answer = ask(format!("/_matrix/federation/v1/hierarchy/{}", enc(&sub)))
            .await
            .expect("hierarchy");
        assert_eq!(answer["room"]["room_id"], sub.as_str(), "{answer}");
        assert_eq!(answer["children"][0]["room_id"], plot.as_str(), "{answer}");
        assert_eq!(answer["inaccessible_children"], json!([hut]), "{answer}");
        let err = ask(format!("/_matrix/federation/v1/hierarchy/{}", enc(&hut)))
            .await
            .expect_err("a private room");
        assert!(err.to_string().contains("M_NOT_FOUND"), "{err}");
        let err = ask(format!(
            "/_matrix/federation/v1/hierarchy/{}?suggested_only=maybe",
            enc(&sub)
        ))
        .await
        .expect_err("a bad flag");
        assert!(err.to_string().contains("M_INVALID_PARAM"), "{err}");
        let err = ask("/_matrix/federation/v1/publicRooms?limit=many".to_owned())
            .await
            .expect_err("a bad limit");
        assert!(err.to_string().contains("M_INVALID_PARAM"), "{err}");
        let err = client
            .request(
                &b_server,
                http::Method::POST,
                "/_matrix/federation/v1/publicRooms",
                Some(&json!({ "filter": { "generic_search_term": 7 } })),
            )
            .await
            .expect_err("a search term that is not a string");
        assert!(err.to_string().contains("M_BAD_JSON"), "{err}");
    }
}

async fn set_presence(node: &TestNode, user: &TestUser, presence: &str, msg: &str) {
    let (status, body) = node
        .put(
            &format!("{V3}/presence/{}/status", enc(&user.user_id)),
            Some(&user.token),
            json!({ "presence": presence, "status_msg": msg }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "set presence: {body}");
}

async fn presence_of(node: &TestNode, viewer: &TestUser, user: &str) -> Value {
    let (status, body) = node
        .get(
            &format!("{V3}/presence/{}/status", enc(user)),
            Some(&viewer.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "presence of {user}: {body}");
    body
}

/// Syncs `user` from `since` until the presence section holds `who` with `status_msg`.
async fn sync_presence(
    node: &TestNode,
    user: &TestUser,
    since: &mut Option<String>,
    who: &str,
    status_msg: &str,
) -> Value {
    eventually(
        &format!("{who}'s presence in {}'s sync", user.user_id),
        async || {
            let body = node.sync_now(user, since.as_deref()).await;
            *since = body["next_batch"].as_str().map(str::to_owned);
            body["presence"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["sender"] == who && e["content"]["status_msg"] == status_msg)
                .cloned()
                .ok_or_else(|| body["presence"].to_string())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_across_nodes() {
    for backend in BACKENDS {
        let (a, b, alice, bob) = pair(backend).await;
        let room = create_room(&a, &alice, json!({ "preset": "public_chat" })).await;
        b.join_via(&bob, &room, &a.server_name()).await;
        let mut alice_since = Some(
            a.sync_now(&alice, None).await["next_batch"]
                .as_str()
                .expect("next_batch")
                .to_owned(),
        );
        let mut bob_since = Some(
            b.sync_now(&bob, None).await["next_batch"]
                .as_str()
                .expect("next_batch")
                .to_owned(),
        );

        // Alice's presence reaches Bob's sync and B's presence endpoint.
        set_presence(&a, &alice, "online", "pruning").await;
        let event = sync_presence(&b, &bob, &mut bob_since, &alice.user_id, "pruning").await;
        assert_eq!(event["content"]["presence"], "online", "{event}");
        assert_eq!(event["content"]["currently_active"], true, "{event}");
        let seen = presence_of(&b, &bob, &alice.user_id).await;
        assert_eq!(seen["presence"], "online", "{seen}");
        assert_eq!(seen["status_msg"], "pruning", "{seen}");

        // And Bob's reaches Alice.
        set_presence(&b, &bob, "unavailable", "at the allotment").await;
        let event = sync_presence(
            &a,
            &alice,
            &mut alice_since,
            &bob.user_id,
            "at the allotment",
        )
        .await;
        assert_eq!(event["content"]["presence"], "unavailable", "{event}");
        let seen = presence_of(&a, &alice, &bob.user_id).await;
        assert_eq!(seen["presence"], "unavailable", "{seen}");

        // Forged updates, as A: one for a user of B, one for a user of A who shares no room
        // with anyone on B. Both are dropped; a real one in the same EDU is taken.
        let client = grove_federation::client::Client::new(
            a.node().overlay().expect("overlay").clone(),
            a.node().homeserver().key.clone(),
            ruma::ServerName::parse(a.server_name()).expect("server name"),
        );
        let b_name = ruma::ServerName::parse(b.server_name()).expect("server name");
        let loner = format!("@loner:{}", a.server_name());
        let update = |user: &str, msg: &str| {
            json!({ "user_id": user, "presence": "online", "status_msg": msg,
                "last_active_ago": 5 })
        };
        let body = json!({ "origin": a.server_name(), "origin_server_ts": 0, "pdus": [],
            "edus": [{ "edu_type": "m.presence", "content": { "push": [
                update(&bob.user_id, "forged"),
                update(&loner, "alone"),
                update(&alice.user_id, "weeding"),
            ] } }] });
        client
            .request(
                &b_name,
                http::Method::PUT,
                "/_matrix/federation/v1/send/presence1",
                Some(&body),
            )
            .await
            .expect("send transaction");
        let seen = presence_of(&b, &bob, &alice.user_id).await;
        assert_eq!(seen["status_msg"], "weeding", "{seen}");
        let seen = presence_of(&b, &bob, &bob.user_id).await;
        assert_eq!(seen["status_msg"], "at the allotment", "{seen}");
        let seen = presence_of(&b, &bob, &loner).await;
        assert_eq!(seen["presence"], "offline", "{seen}");
        assert!(seen.get("status_msg").is_none(), "{seen}");
    }
}

/// The user IDs and display names `searcher` finds for `term`.
async fn search_users(node: &TestNode, searcher: &TestUser, term: &str) -> Vec<(Value, Value)> {
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
        .into_iter()
        .flatten()
        .map(|u| (u["user_id"].clone(), u["display_name"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_users_in_the_user_directory() {
    for backend in BACKENDS {
        let (a, b, alice, bob) = pair(backend).await;
        let (status, body) = b
            .put(
                &format!("{V3}/profile/{}/displayname", enc(&bob.user_id)),
                Some(&bob.token),
                json!({ "displayname": "Bob Gardener" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // Before they share a room, A does not know Bob.
        assert_eq!(search_users(&a, &alice, "gardener").await, Vec::new());

        let room = create_room(&a, &alice, json!({ "preset": "private_chat" })).await;
        let (status, body) = a
            .post(
                &format!("{V3}/rooms/{}/invite", enc(&room)),
                Some(&alice.token),
                json!({ "user_id": bob.user_id }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "invite: {body}");
        b.join_via(&bob, &room, &a.server_name()).await;

        // Found by display name and by user ID, with the name of his member event.
        let found = eventually("Bob in A's user directory", async || {
            let found = search_users(&a, &alice, "gardener").await;
            if found.is_empty() {
                Err("not yet".to_owned())
            } else {
                Ok(found)
            }
        })
        .await;
        assert_eq!(found, vec![(json!(bob.user_id), json!("Bob Gardener"))]);
        let found = search_users(&a, &alice, "bob").await;
        assert_eq!(found, vec![(json!(bob.user_id), json!("Bob Gardener"))]);

        // A renamed Bob is found under his new name; a user of A sharing no room with him
        // does not find him in a private room.
        let (status, body) = b
            .put(
                &format!("{V3}/profile/{}/displayname", enc(&bob.user_id)),
                Some(&bob.token),
                json!({ "displayname": "Robert Digger" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        eventually("Bob's new name on A", async || {
            let found = search_users(&a, &alice, "digger").await;
            if found == vec![(json!(bob.user_id), json!("Robert Digger"))] {
                Ok(())
            } else {
                Err(format!("{found:?}"))
            }
        })
        .await;
        assert_eq!(search_users(&a, &alice, "gardener").await, Vec::new());
        let dave = a.register("dave").await;
        assert_eq!(search_users(&a, &dave, "digger").await, Vec::new());
        // Bob on B finds Alice too.
        let found = search_users(&b, &bob, "alice").await;
        assert_eq!(
            found.first().map(|f| f.0.clone()),
            Some(json!(alice.user_id))
        );
    }
}
