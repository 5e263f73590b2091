//! Rejoining a room on Synapse from a Grove node that has no one left in it: after a leave and
//! after a kick the rejoin goes through `make_join`/`send_join` and Synapse shows it; a ban
//! made meanwhile (or while joined) refuses it, and Grove never shows the banned user joined;
//! after an unban the rejoin goes through again.

use std::time::Duration;

use grove_server::storage::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::api::Api;
use crate::harness::{grove, shared};
use crate::support::{TestUser, eventually};
use crate::unique;

/// Whether Grove shows `user` joined to `room`, in `/joined_rooms` or in `/sync`.
async fn shown_joined(g: &Api, user: &TestUser, room: &str) -> bool {
    let (status, body) = g.get("/joined_rooms", user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = body["joined_rooms"]
        .as_array()
        .is_some_and(|rooms| rooms.iter().any(|r| r == room));
    let synced = g.sync_now(user, None).await;
    listed || synced["rooms"]["join"][room].is_object()
}

/// Waits until Grove no longer shows `user` joined to `room` (a kick or ban arrived).
async fn wait_not_joined(g: &Api, user: &TestUser, room: &str) {
    eventually(
        &format!("{} out of {room} on Grove", user.user_id),
        async || {
            if shown_joined(g, user, room).await {
                Err("still shown joined".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await
}

/// Joins, is seen joined by Synapse, and says something Synapse's admin sees.
async fn join_and_speak(g: &Api, s: &Api, user: &TestUser, admin: &TestUser, room: &str) {
    g.join_ok(user, room, s.server_name()).await;
    s.wait_membership(admin, room, &user.user_id, "join").await;
    let said = format!("{} is here", user.user_id);
    g.send_text(user, room, &said).await;
    s.wait_messages(admin, room, &[said.as_str()]).await;
}

/// `user`'s join is refused, Synapse keeps the ban, and Grove shows no join, now or a moment
/// later (when anything sent in a plain transaction would have landed).
async fn join_refused(g: &Api, s: &Api, user: &TestUser, admin: &TestUser, room: &str) {
    let (status, body) = g.join(user, room, s.server_name()).await;
    assert_ne!(status, StatusCode::OK, "a banned user's join: {body}");
    assert!(
        !shown_joined(g, user, room).await,
        "shown joined after a refused join"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !shown_joined(g, user, room).await,
        "shown joined after a refused join"
    );
    assert_eq!(s.membership_of(admin, room, &user.user_id).await, "ban");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejoins_after_leave_kick_and_ban() {
    let shared = shared().await;
    let node = grove(shared, Backend::Sqlite).await;
    let (g, s) = (Api::of(&node), shared.synapse.api());
    let alice = s.register(&unique("alice")).await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let (lea, kim, ben, bea) = (
        g.register("lea").await,
        g.register("kim").await,
        g.register("ben").await,
        g.register("bea").await,
    );

    // Left, with no one of Grove's in the room: the rejoin is made through Synapse.
    join_and_speak(&g, &s, &lea, &alice, &room).await;
    g.membership(&lea, &room, "leave", None).await;
    s.wait_membership(&alice, &room, &lea.user_id, "leave")
        .await;
    join_and_speak(&g, &s, &lea, &alice, &room).await;
    g.membership(&lea, &room, "leave", None).await;
    s.wait_membership(&alice, &room, &lea.user_id, "leave")
        .await;

    // Kicked on Synapse.
    join_and_speak(&g, &s, &kim, &alice, &room).await;
    s.membership(&alice, &room, "kick", Some(&kim.user_id))
        .await;
    wait_not_joined(&g, &kim, &room).await;
    join_and_speak(&g, &s, &kim, &alice, &room).await;
    g.membership(&kim, &room, "leave", None).await;
    s.wait_membership(&alice, &room, &kim.user_id, "leave")
        .await;

    // Banned after leaving: Grove, with no one in the room, never heard of the ban.
    join_and_speak(&g, &s, &ben, &alice, &room).await;
    g.membership(&ben, &room, "leave", None).await;
    s.wait_membership(&alice, &room, &ben.user_id, "leave")
        .await;
    s.membership(&alice, &room, "ban", Some(&ben.user_id)).await;
    join_refused(&g, &s, &ben, &alice, &room).await;

    // Banned while joined.
    join_and_speak(&g, &s, &bea, &alice, &room).await;
    s.membership(&alice, &room, "ban", Some(&bea.user_id)).await;
    wait_not_joined(&g, &bea, &room).await;
    join_refused(&g, &s, &bea, &alice, &room).await;

    // Unbanned: the way back in is open again.
    s.membership(&alice, &room, "unban", Some(&ben.user_id))
        .await;
    join_and_speak(&g, &s, &ben, &alice, &room).await;
}
