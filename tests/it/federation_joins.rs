//! Joining rooms of another node as a client sees it: the room's recent history in the first
//! sync after the join (with `limited` set while older history remains), a DM invite named
//! after its inviter and the invitee, the join carrying the invite it replaced, and a rejoin
//! after leaving made through the room's other servers, so that a ban made meanwhile holds.

use grove_server::storage::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestNode, TestUser, enc, eventually, message_bodies};

const V3: &str = "/_matrix/client/v3";

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

/// `user`'s membership of `room` as `node` holds it (empty when none).
async fn membership_on(node: &TestNode, user: &TestUser, room: &str) -> String {
    let pool = node.node().homeserver().storage.pool();
    sqlx::query_scalar::<_, String>(
        "SELECT membership FROM memberships WHERE room_id = $1 AND user_id = $2",
    )
    .bind(room)
    .bind(&user.user_id)
    .fetch_optional(pool)
    .await
    .expect("membership")
    .unwrap_or_default()
}

async fn wait_membership_on(node: &TestNode, user: &TestUser, room: &str, expected: &str) {
    eventually(
        &format!("{} {expected} on a node", user.user_id),
        async || {
            let m = membership_on(node, user, room).await;
            if m == expected { Ok(()) } else { Err(m) }
        },
    )
    .await;
}

async fn post_ok(node: &TestNode, user: &TestUser, path: &str, body: Value) -> Value {
    let (status, answer) = node.post(path, Some(&user.token), body).await;
    assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    answer
}

async fn joins_across_nodes(backend: Backend) {
    let a = TestNode::start_federated(backend, Vec::new()).await;
    let b = TestNode::start_federated(backend, vec![a.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (status, body) = b
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&bob.user_id)),
            Some(&bob.token),
            json!({ "displayname": "Bob B" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A room with more said in it than one sync shows, and more than the join fetches.
    let town = a
        .create_room(&alice, json!({ "preset": "public_chat", "name": "Town" }))
        .await;
    for i in 0..60 {
        a.send_text(&alice, &town, &format!("m {i}")).await;
    }
    let since = next_batch(&b.sync_now(&bob, None).await);
    b.join_via(&bob, &town, &a.server_name()).await;
    let synced = b.sync_now(&bob, Some(&since)).await;
    let timeline = &synced["rooms"]["join"][town.as_str()]["timeline"];
    let bodies = message_bodies(&timeline["events"]);
    assert!(
        bodies.last().map(String::as_str) == Some("m 59"),
        "the join's sync shows what was said before it: {timeline}"
    );
    assert_eq!(timeline["limited"], json!(true), "{timeline}");
    let initial = b.sync_now(&bob, None).await;
    let timeline = &initial["rooms"]["join"][town.as_str()]["timeline"];
    assert_eq!(timeline["limited"], json!(true), "{timeline}");
    assert!(
        message_bodies(&timeline["events"]).contains(&"m 59".to_owned()),
        "{timeline}"
    );
    // A timeline long enough for all B holds still says that more came before.
    let filter = enc(r#"{"room":{"timeline":{"limit":200}}}"#);
    let (status, wide) = b
        .get(&format!("{V3}/sync?filter={filter}"), Some(&bob.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{wide}");
    let timeline = &wide["rooms"]["join"][town.as_str()]["timeline"];
    let held = message_bodies(&timeline["events"]);
    assert!(
        held.len() < 60 && held.contains(&"m 59".to_owned()),
        "{held:?}"
    );
    assert_eq!(timeline["limited"], json!(true), "older history remains");

    // A DM: the invite names its inviter and the invitee, the join what it replaced.
    let since = next_batch(&b.sync_now(&bob, None).await);
    let dm = a
        .create_room(
            &alice,
            json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id] }),
        )
        .await;
    a.send_text(&alice, &dm, "hello bob").await;
    let invite_state = eventually("the invite on B", async || {
        let synced = b.sync_now(&bob, Some(&since)).await;
        match synced["rooms"]["invite"][dm.as_str()]["invite_state"]["events"].as_array() {
            Some(events) => Ok(events.clone()),
            None => Err(synced.to_string()),
        }
    })
    .await;
    let member = |user: &str| {
        invite_state
            .iter()
            .rev()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == user)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(member(&alice.user_id)["content"]["membership"], "join");
    let invite = member(&bob.user_id);
    assert_eq!(
        invite["content"]["membership"], "invite",
        "{invite_state:?}"
    );
    assert_eq!(invite["content"]["is_direct"], true);
    assert_eq!(invite["content"]["displayname"], "Bob B", "{invite}");
    let since = next_batch(&b.sync_now(&bob, None).await);
    b.join_via(&bob, &dm, &a.server_name()).await;
    let synced = b.sync_now(&bob, Some(&since)).await;
    let events = &synced["rooms"]["join"][dm.as_str()]["timeline"]["events"];
    assert!(
        message_bodies(events).contains(&"hello bob".to_owned()),
        "the first message of the DM: {events}"
    );
    let join = events
        .as_array()
        .and_then(|e| {
            e.iter()
                .rev()
                .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(join["content"]["membership"], "join", "{events}");
    assert_eq!(
        join["unsigned"]["prev_content"]["membership"], "invite",
        "{join}"
    );
    assert_eq!(join["unsigned"]["prev_sender"], alice.user_id.as_str());

    // Bob leaves the town; while B has nobody there, Alice renames it and bans Bob.
    post_ok(
        &b,
        &bob,
        &format!("{V3}/rooms/{}/leave", enc(&town)),
        json!({}),
    )
    .await;
    wait_membership_on(&a, &bob, &town, "leave").await;
    let path = format!("{V3}/rooms/{}/state/m.room.name", enc(&town));
    let (status, body) = a
        .put(&path, Some(&alice.token), json!({ "name": "Renamed" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    post_ok(
        &a,
        &alice,
        &format!("{V3}/rooms/{}/ban", enc(&town)),
        json!({ "user_id": bob.user_id }),
    )
    .await;
    let join_path = format!("{V3}/join/{}?via={}", enc(&town), a.server_name());
    let (status, body) = b.post(&join_path, Some(&bob.token), json!({})).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a banned user rejoins: {body}"
    );
    assert_eq!(membership_on(&b, &bob, &town).await, "leave");
    assert_eq!(membership_on(&a, &bob, &town).await, "ban");

    // Unbanned, he rejoins through A and B learns what changed while it was out.
    post_ok(
        &a,
        &alice,
        &format!("{V3}/rooms/{}/unban", enc(&town)),
        json!({ "user_id": bob.user_id }),
    )
    .await;
    b.join_via(&bob, &town, &a.server_name()).await;
    let (status, name) = b.get(&path, Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{name}");
    assert_eq!(name["name"], "Renamed");
    wait_membership_on(&a, &bob, &town, "join").await;
    a.send_text(&alice, &town, "welcome back").await;
    eventually("the room goes on after the rejoin", async || {
        let (_, page) = b
            .get(
                &format!("{V3}/rooms/{}/messages?dir=b&limit=5", enc(&town)),
                Some(&bob.token),
            )
            .await;
        let bodies = message_bodies(&page["chunk"]);
        if bodies.first().map(String::as_str) == Some("welcome back") {
            Ok(())
        } else {
            Err(page.to_string())
        }
    })
    .await;
}

#[tokio::test]
async fn joins_across_nodes_sqlite() {
    joins_across_nodes(Backend::Sqlite).await;
}

#[tokio::test]
async fn joins_across_nodes_postgres() {
    joins_across_nodes(Backend::Postgres).await;
}
