//! Redactions across implementations: a message redacted on Synapse loses its content on
//! Grove (`/event` and `/messages`, with `unsigned.redacted_because`), one redacted on Grove
//! loses it on Synapse, and a room admin on Synapse may redact a Grove user's message.

use grove_server::storage::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::Api;
use crate::harness::{grove, shared};
use crate::support::{TestUser, eventually};
use crate::unique;

/// Waits until `user` on `api` can read `id` with its body.
async fn wait_body(api: &Api, user: &TestUser, room: &str, id: &str) {
    eventually(&format!("{id} on {}", api.server_name()), async || {
        let (status, body) = api.event(user, room, id).await;
        if status == StatusCode::OK && body["content"]["body"].is_string() {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await
}

/// Waits until `id` is redacted by `redaction` in `user`'s view on `api`, through `/event`
/// and through `/messages`.
async fn wait_redacted(api: &Api, user: &TestUser, room: &str, id: &str, redaction: &str) {
    let check = |event: &Value| -> Result<(), String> {
        let because = &event["unsigned"]["redacted_because"];
        if event["content"] == json!({}) && because["event_id"] == redaction {
            Ok(())
        } else {
            Err(event.to_string())
        }
    };
    eventually(
        &format!("{id} redacted on {}", api.server_name()),
        async || {
            let (status, event) = api.event(user, room, id).await;
            if status != StatusCode::OK {
                return Err(format!("{status} {event}"));
            }
            check(&event)?;
            let listed = api.messages(user, room, 50).await;
            let listed = listed
                .iter()
                .find(|e| e["event_id"] == id)
                .ok_or_else(|| format!("{id} not in /messages"))?;
            check(listed)
        },
    )
    .await;
}

/// In a room of `version` on Synapse (v10 names the target at the top level, v11 and later
/// in the content).
async fn redactions_cross_both_ways(version: &str) {
    let shared = shared().await;
    let node = grove(shared, Backend::Sqlite).await;
    let (g, s) = (Api::of(&node), shared.synapse.api());
    let alice = s.register(&unique("alice")).await;
    let bob = g.register("bob").await;
    let room = s
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "room_version": version }),
        )
        .await;
    g.join_ok(&bob, &room, s.server_name()).await;
    s.wait_membership(&alice, &room, &bob.user_id, "join").await;

    // Made on Synapse, applied on Grove.
    let secret = s.send_text(&alice, &room, "secret from Synapse").await;
    wait_body(&g, &bob, &room, &secret).await;
    let redaction = s.redact(&alice, &room, &secret).await;
    wait_redacted(&g, &bob, &room, &secret, &redaction).await;

    // Made on Grove, applied on Synapse.
    let secret = g.send_text(&bob, &room, "secret from Grove").await;
    wait_body(&s, &alice, &room, &secret).await;
    let redaction = g.redact(&bob, &room, &secret).await;
    wait_redacted(&s, &alice, &room, &secret, &redaction).await;
    wait_redacted(&g, &bob, &room, &secret, &redaction).await;

    // Synapse's room admin redacts a Grove user's message: allowed by power, not by origin.
    let secret = g.send_text(&bob, &room, "moderated").await;
    wait_body(&s, &alice, &room, &secret).await;
    let redaction = s.redact(&alice, &room, &secret).await;
    wait_redacted(&g, &bob, &room, &secret, &redaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redactions_cross_both_ways_in_a_v10_room() {
    redactions_cross_both_ways("10").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redactions_cross_both_ways_in_a_v12_room() {
    redactions_cross_both_ways("12").await;
}
