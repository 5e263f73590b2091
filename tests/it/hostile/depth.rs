//! One PDU at the greatest depth canonical JSON can carry must not lock the room: local
//! events after it take the same depth instead of one more.

use grove_server::{
    rooms::{EventTemplate, builder::MAX_DEPTH},
    storage::Backend,
};
use reqwest::StatusCode;
use ruma::CanonicalJsonValue;
use serde_json::json;

use super::Scene;
use crate::support::{TestUser, enc, eventually};

async fn deepest_pdu_does_not_lock_the_room(backend: Backend) {
    let mut scene = Scene::new(backend).await;
    let room = scene.shared_room(json!({})).await;
    let (pdu, id) = scene
        .forge(
            &room,
            &scene.mallory.user_id,
            &EventTemplate::message(
                "m.room.message",
                json!({ "msgtype": "m.text", "body": "deep" }),
            ),
            |o| {
                o.insert("depth".into(), CanonicalJsonValue::Integer(ruma::Int::MAX));
            },
        )
        .await;
    let answer = scene.send_txn("deep1", vec![pdu], Vec::new()).await;
    assert_eq!(answer[&id], json!({}), "{answer}");
    let stored = scene.stored(&id).await.expect("deep event stored");
    assert_eq!(stored["depth"], json!(MAX_DEPTH));

    // Every local action still works, also after a restart.
    let alice = scene.alice.clone();
    let after = scene.victim.send_text(&alice, &room, "after").await;
    let after = scene.stored(&after).await.expect("stored");
    assert_eq!(after["depth"], json!(MAX_DEPTH), "capped, not one more");
    scene.victim.restart().await;
    scene.victim.send_text(&alice, &room, "after restart").await;
    let (status, body) = scene
        .victim
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
                enc(&room)
            ),
            Some(&alice.token),
            json!({ "topic": "still here" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bob: TestUser = scene.victim.register("bob").await;
    eventually("bob joins", async || {
        let (status, body) = scene
            .victim
            .post(
                &format!("/_matrix/client/v3/join/{}", enc(&room)),
                Some(&bob.token),
                json!({}),
            )
            .await;
        (status == StatusCode::OK)
            .then_some(())
            .ok_or(format!("{status} {body}"))
    })
    .await;
    let (status, body) = scene
        .victim
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pdu_at_the_depth_cap_does_not_lock_the_room_sqlite() {
    deepest_pdu_does_not_lock_the_room(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pdu_at_the_depth_cap_does_not_lock_the_room_postgres() {
    deepest_pdu_does_not_lock_the_room(Backend::Postgres).await;
}
