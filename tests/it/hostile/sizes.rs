//! Sizes the spec allows are taken: a transaction of 50 PDUs at the PDU size limit beside 100
//! EDUs, and a PDU of exactly 65,536 bytes. Larger is refused, in Matrix JSON.

use grove_server::{rooms::EventTemplate, storage::Backend};
use http::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Scene, assert_refused};

/// A message of mallory's in `room` whose signed JSON is exactly `size` bytes.
async fn message_of_size(scene: &Scene, room: &str, size: usize) -> (Value, String) {
    let forge = async |pad: usize| {
        scene
            .forge(
                room,
                &scene.mallory.user_id,
                &EventTemplate::message(
                    "m.room.message",
                    json!({ "msgtype": "m.text", "body": "x".repeat(pad) }),
                ),
                |_| {},
            )
            .await
    };
    let (empty, _) = forge(0).await;
    let base = serde_json::to_string(&empty).expect("JSON").len();
    let (pdu, id) = forge(size - base).await;
    assert_eq!(serde_json::to_string(&pdu).expect("JSON").len(), size);
    (pdu, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legal_sizes_are_taken_and_larger_refused_in_matrix_json() {
    let scene = Scene::new(Backend::Sqlite).await;
    let room = scene.shared_room(json!({})).await;

    // 50 PDUs of 64 KiB and 100 EDUs: about 3.3 MB, a legal transaction.
    let filler = "y".repeat(65_000);
    let pdus: Vec<Value> = (0..50).map(|i| json!({ "n": i, "pad": filler })).collect();
    let edus: Vec<Value> = (0..100)
        .map(|i| json!({ "edu_type": "m.presence", "content": { "push": [], "n": i } }))
        .collect();
    let body =
        json!({ "origin": scene.evil_name(), "origin_server_ts": 1, "pdus": pdus, "edus": edus });
    assert!(body.to_string().len() > 3_200_000);
    let answer = scene
        .ask(Method::PUT, "/_matrix/federation/v1/send/big1", Some(&body))
        .await;
    assert!(answer.is_ok(), "a legal transaction is taken: {answer:?}");

    // Past the body limit: refused in Matrix JSON.
    let huge =
        json!({ "origin": scene.evil_name(), "pdus": [], "pad": "z".repeat(9 * 1024 * 1024) });
    let answer = scene
        .ask(Method::PUT, "/_matrix/federation/v1/send/big2", Some(&huge))
        .await;
    assert_refused(answer, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");

    // A PDU of exactly 65,536 bytes is taken; one byte more is refused with a readable reason.
    let (at_limit, at_id) = message_of_size(&scene, &room, 65_536).await;
    let answer = scene.send_txn("size1", vec![at_limit], Vec::new()).await;
    assert_eq!(answer[&at_id], json!({}), "{answer}");
    assert!(scene.stored(&at_id).await.is_some());
    let (over, over_id) = message_of_size(&scene, &room, 65_537).await;
    let answer = scene.send_txn("size2", vec![over], Vec::new()).await;
    let error = answer[&over_id]["error"].as_str().expect("refused");
    assert!(error.contains("65536"), "{error}");
    assert!(!error.contains('{'), "{error}");
    assert!(scene.stored(&over_id).await.is_none());
    scene.stop().await;
}
