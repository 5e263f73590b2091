//! `GET /event/{eventId}` answers what the asking server's users may see, as backfill does:
//! a message from before they joined a `joined` room comes redacted.

use grove_server::storage::Backend;
use http::Method;
use serde_json::json;

use super::Scene;
use crate::support::enc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_from_before_the_join_is_answered_redacted() {
    let scene = Scene::new(Backend::Sqlite).await;
    let room = scene
        .victim
        .create_room(
            &scene.alice,
            json!({
                "preset": "public_chat",
                "initial_state": [{
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": { "history_visibility": "joined" },
                }],
            }),
        )
        .await;
    let secret = scene.victim.send_text(&scene.alice, &room, "secret").await;
    scene
        .evil
        .join_via(&scene.mallory, &room, &scene.victim.server_name())
        .await;
    let public = scene.victim.send_text(&scene.alice, &room, "public").await;

    let event = |id: &str| format!("/_matrix/federation/v1/event/{}", enc(id));
    let answer = scene
        .ask(Method::GET, &event(&secret), None)
        .await
        .expect("answered");
    let pdu = &answer["pdus"][0];
    assert_eq!(pdu["type"], "m.room.message", "{answer}");
    assert_eq!(pdu["content"], json!({}), "withheld content: {answer}");
    let answer = scene
        .ask(Method::GET, &event(&public), None)
        .await
        .expect("answered");
    assert_eq!(answer["pdus"][0]["content"]["body"], "public", "{answer}");
    scene.stop().await;
}
