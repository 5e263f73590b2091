//! Invites across implementations: a Synapse user invites a Grove user to a private DM and
//! a Grove user invites a Synapse user; each invite shows its inviter in the stripped state,
//! is accepted with a join through the inviting server, and messages follow both ways. The
//! room state Grove sends with an invite passes Synapse's checks (full PDUs, create event
//! included).

use grove_server::storage::Backend;
use serde_json::{Value, json};

use crate::api::Api;
use crate::harness::{grove, shared};
use crate::support::{TestUser, enc, eventually};
use crate::unique;

/// Waits for `room`'s invite in `user`'s `/sync` and returns its stripped state events.
async fn wait_invite(api: &Api, user: &TestUser, room: &str) -> Vec<Value> {
    eventually(
        &format!("the invite to {room} on {}", api.server_name()),
        async || {
            let synced = api.sync_now(user, None).await;
            match synced["rooms"]["invite"][room]["invite_state"]["events"].as_array() {
                Some(events) => Ok(events.clone()),
                None => Err(synced["rooms"].to_string()),
            }
        },
    )
    .await
}

/// Invites `invitee` (of `to`) into a private room of `inviter` (of `from`); the invitee
/// sees the invite with the inviter's membership, accepts, and both speak.
async fn invite_and_accept(from: &Api, inviter: &TestUser, to: &Api, invitee: &TestUser) {
    let room = from
        .create_room(
            inviter,
            json!({
                "preset": "trusted_private_chat",
                "is_direct": true,
                "name": "a DM",
                "invite": [invitee.user_id],
            }),
        )
        .await;
    let state = wait_invite(to, invitee, &room).await;
    assert!(
        state.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == inviter.user_id.as_str()
            && e["content"]["membership"] == "join"),
        "the inviter in the invite's state: {state:?}"
    );
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "a DM"),
        "{state:?}"
    );
    to.post_ok(&format!("/join/{}", enc(&room)), invitee, json!({}))
        .await;
    from.wait_membership(inviter, &room, &invitee.user_id, "join")
        .await;
    from.send_text(inviter, &room, "hello").await;
    to.send_text(invitee, &room, "hi").await;
    for (api, user) in [(from, inviter), (to, invitee)] {
        api.wait_messages(user, &room, &["hello", "hi"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invites_cross_both_ways() {
    let shared = shared().await;
    let node = grove(shared, Backend::Sqlite).await;
    let (g, s) = (Api::of(&node), shared.synapse.api());
    let sam = s.register(&unique("sam")).await;
    let gus = g.register("gus").await;
    invite_and_accept(&s, &sam, &g, &gus).await;
    invite_and_accept(&g, &gus, &s, &sam).await;
    // Synapse checks the room state sent with an invite (full PDUs since Matrix 1.18) and
    // says in its log when it does not pass.
    let complaints: Vec<String> = shared
        .synapse
        .log_lines_with("failed to validate `invite_room_state`")
        .into_iter()
        .filter(|line| line.contains(&sam.user_id))
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
}
