//! An event whose content does not match its content hash (signed, then altered) is kept in
//! its redacted form, as the spec asks, rather than dropped.

use grove_server::{rooms::EventTemplate, storage::Backend};
use serde_json::json;

use super::Scene;

async fn altered_event_is_kept_redacted(backend: Backend) {
    let scene = Scene::new(backend).await;
    let room = scene.shared_room(json!({})).await;
    let (mut pdu, id) = scene
        .forge(
            &room,
            &scene.mallory.user_id,
            &EventTemplate::message(
                "m.room.message",
                json!({ "msgtype": "m.text", "body": "signed" }),
            ),
            |_| {},
        )
        .await;
    // The signature covers the redacted form only, so it stays good; the hash does not.
    pdu["content"]["body"] = json!("altered");
    let answer = scene.send_txn("hash1", vec![pdu], Vec::new()).await;
    assert_eq!(answer[&id], json!({}), "{answer}");
    let stored = scene.stored(&id).await.expect("kept");
    assert_eq!(stored["content"], json!({}), "kept redacted: {stored}");
    assert_eq!(
        scene
            .victim
            .metric("grove_federation_pdus_redacted_total")
            .await,
        1.0
    );
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_with_a_bad_content_hash_is_kept_redacted_sqlite() {
    altered_event_is_kept_redacted(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_with_a_bad_content_hash_is_kept_redacted_postgres() {
    altered_event_is_kept_redacted(Backend::Postgres).await;
}
