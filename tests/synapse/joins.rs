//! Each side's users join the other side's rooms: the joiner's first sync holds what was said
//! before the join (`limited` while more remains), older history comes by backfill through
//! `/messages`, and messages go both ways.

use grove_server::storage::Backend;
use serde_json::json;

use crate::api::Api;
use crate::harness::{grove, shared};
use crate::support::message_bodies;
use crate::{next_batch, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grove_user_joins_a_room_on_synapse() {
    let shared = shared().await;
    let node = grove(shared, Backend::Sqlite).await;
    let (g, s) = (Api::of(&node), shared.synapse.api());
    let alice = s.register(&unique("alice")).await;
    let bob = g.register("bob").await;
    let room = s
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "name": "on Synapse" }),
        )
        .await;
    for i in 0..30 {
        s.send_text(&alice, &room, &format!("before {i}")).await;
    }

    let since = next_batch(&g.sync_now(&bob, None).await);
    g.join_ok(&bob, &room, s.server_name()).await;
    let synced = g.sync_now(&bob, Some(&since)).await;
    let timeline = &synced["rooms"]["join"][room.as_str()]["timeline"];
    let bodies = message_bodies(&timeline["events"]);
    assert_eq!(
        bodies.last().map(String::as_str),
        Some("before 29"),
        "the join's sync shows what was said before it: {timeline}"
    );
    assert_eq!(timeline["limited"], json!(true), "{timeline}");
    // Paging back reaches the room's first message, fetched from Synapse.
    let history = g.messages(&bob, &room, 100).await;
    let older = message_bodies(&serde_json::Value::Array(history));
    assert!(older.contains(&"before 0".to_owned()), "{older:?}");

    s.wait_membership(&alice, &room, &bob.user_id, "join").await;
    g.send_text(&bob, &room, "from Grove").await;
    s.send_text(&alice, &room, "from Synapse").await;
    for (api, user) in [(&g, &bob), (&s, &alice)] {
        api.wait_messages(user, &room, &["from Grove", "from Synapse"])
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_synapse_user_joins_a_room_on_grove() {
    let shared = shared().await;
    let node = grove(shared, Backend::Sqlite).await;
    let (g, s) = (Api::of(&node), shared.synapse.api());
    let alice = g.register("alice").await;
    let bob = s.register(&unique("bob")).await;
    let room = g
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "name": "on Grove" }),
        )
        .await;
    for i in 0..30 {
        g.send_text(&alice, &room, &format!("before {i}")).await;
    }

    let since = next_batch(&s.sync_now(&bob, None).await);
    s.join_ok(&bob, &room, g.server_name()).await;
    // Synapse holds nothing from before the join but its state (its own way), says so with
    // `limited`, and pages back through Grove's backfill to the first message.
    let synced = s.sync_now(&bob, Some(&since)).await;
    let timeline = &synced["rooms"]["join"][room.as_str()]["timeline"];
    assert_eq!(timeline["limited"], json!(true), "{timeline}");
    let history = s.messages(&bob, &room, 100).await;
    let older = message_bodies(&serde_json::Value::Array(history));
    assert_eq!(
        older.first().map(String::as_str),
        Some("before 29"),
        "{older:?}"
    );
    assert!(older.contains(&"before 0".to_owned()), "{older:?}");

    g.wait_membership(&alice, &room, &bob.user_id, "join").await;
    g.send_text(&alice, &room, "from Grove").await;
    s.send_text(&bob, &room, "from Synapse").await;
    for (api, user) in [(&g, &alice), (&s, &bob)] {
        api.wait_messages(user, &room, &["from Grove", "from Synapse"])
            .await;
    }
}
