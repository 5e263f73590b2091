//! Presence across servers.
//!
//! - Sent: [`announce_presence`] watches the node-wide stream for presence changes of local
//!   users and queues one `m.presence` EDU per change for every other server sharing a joined
//!   room with the user, through the sender's EDU queue (keyed by user, so only the latest
//!   state waits for a server that is away).
//! - Received: [`handle_presence`] stores the presence of the origin's own users who share a
//!   room with a local user; it then reaches `/sync` and `GET /presence/{userId}/status` like a
//!   local user's.

use std::{sync::Weak, time::Duration};

use ruma::{ServerName, UserId};
use serde_json::{Value, json};
use tracing::debug;

use crate::Ctx;

/// How long the announcer sleeps between checks when nothing wakes it.
const ANNOUNCE_IDLE: Duration = Duration::from_secs(30);
/// Updates taken from one received `m.presence` EDU, at most.
const MAX_PUSH: usize = 100;
/// Longest status message taken from another server, in bytes.
const MAX_STATUS_BYTES: usize = 1024;

/// Watches the stream for presence changes of local users and queues them for the servers
/// sharing a room with each. Changes made while federation was not running are not sent.
pub(crate) async fn announce_presence(ctx: Weak<Ctx>) {
    crate::follow_stream(
        ctx,
        ANNOUNCE_IDLE,
        grove_server::storage::Change::Presence,
        async |ctx, from, upto| {
            let changes = ctx
                .hs
                .userdata
                .presence_changes_of(&ctx.hs.config.server_name, from, upto)
                .await
                .map_err(|e| format!("reading presence changes: {e}"))?;
            for (user, presence) in changes {
                announce(ctx, &user, &presence).await;
            }
            Ok(())
        },
    )
    .await
}

/// Queues `user`'s presence for every other server sharing a joined room with them.
async fn announce(ctx: &Ctx, user: &UserId, presence: &grove_server::userdata::Presence) {
    let servers = ctx.servers_sharing_with(user).await;
    if servers.is_empty() {
        return;
    }
    let ago = (now_ms() - presence.last_active_ts).max(0);
    let mut update = json!({
        "user_id": user,
        "presence": presence.state,
        "last_active_ago": ago,
        "currently_active": presence.state == "online",
    });
    if let Some(msg) = &presence.status_msg {
        update["status_msg"] = msg.as_str().into();
    }
    let edu = json!({ "edu_type": "m.presence", "content": { "push": [update] } });
    for server in servers {
        ctx.sender
            .queue_edu(&server, Some(format!("m.presence {user}")), edu.clone());
    }
}

/// Stores the presence updates of an `m.presence` EDU from `origin`: only for its own users,
/// and only for those sharing a joined room with a local user.
pub(crate) async fn handle_presence(ctx: &Ctx, origin: &ServerName, content: &Value) {
    let Some(push) = content["push"].as_array() else {
        return;
    };
    for update in push.iter().take(MAX_PUSH) {
        let Some(user) = update["user_id"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok())
        else {
            continue;
        };
        if user.server_name() != origin {
            debug!(%origin, %user, "presence for another server's user ignored");
            continue;
        }
        if !shares_room_with_local(ctx, &user).await {
            continue;
        }
        let Some(state) = update["presence"].as_str() else {
            continue;
        };
        let status_msg = update["status_msg"]
            .as_str()
            .filter(|m| m.len() <= MAX_STATUS_BYTES);
        let ago = update["last_active_ago"]
            .as_u64()
            .and_then(|a| i64::try_from(a).ok())
            .unwrap_or(0);
        let last_active = now_ms().saturating_sub(ago);
        if let Err(e) = ctx
            .hs
            .userdata
            .set_remote_presence(&user, state, status_msg, last_active)
            .await
        {
            debug!(%origin, %user, error = %e, "presence EDU not applied");
        }
    }
}

async fn shares_room_with_local(ctx: &Ctx, user: &UserId) -> bool {
    let ours = &ctx.hs.config.server_name;
    ctx.hs
        .rooms
        .users_sharing_rooms_with(user)
        .await
        .is_ok_and(|users| users.iter().any(|u| u.server_name() == ours))
}

fn now_ms() -> i64 {
    i64::try_from(u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get())).unwrap_or(i64::MAX)
}
