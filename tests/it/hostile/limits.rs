//! One server cannot drain a user's one-time keys or flood a user with invites: past the
//! per-origin allowance it is answered `429 M_LIMIT_EXCEEDED` with `retry_after_ms`.

use grove_server::{config::RemoteLimits, rooms::EventTemplate, storage::Backend};
use http::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Scene, assert_refused};
use crate::support::enc;

/// An invite of `target` by mallory to `room` (a room of the hostile node), the `n`th.
pub(crate) async fn invite(
    scene: &Scene,
    room: &str,
    target: &str,
    n: usize,
    state: Vec<Value>,
) -> Result<Value, (u16, Value)> {
    let (event, id) = scene
        .forge(
            room,
            &scene.mallory.user_id,
            &EventTemplate::state(
                "m.room.member",
                target,
                json!({ "membership": "invite", "reason": format!("invite {n}") }),
            ),
            |_| {},
        )
        .await;
    let path = format!("/_matrix/federation/v2/invite/{}/{}", enc(room), enc(&id));
    let body = json!({ "room_version": "12", "event": event, "invite_room_state": state });
    scene.ask(Method::PUT, &path, Some(&body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_claims_and_invites_are_rate_limited_per_origin() {
    let scene = Scene::new(Backend::Sqlite).await;
    let limits = RemoteLimits::default();
    let claim = json!({ "one_time_keys": { scene.alice.user_id.clone(): {
        scene.alice.device_id.clone(): "signed_curve25519" } } });
    for n in 0..limits.key_claims_per_minute {
        let answer = scene
            .ask(
                Method::POST,
                "/_matrix/federation/v1/user/keys/claim",
                Some(&claim),
            )
            .await;
        assert!(answer.is_ok(), "claim {n}: {answer:?}");
    }
    let answer = scene
        .ask(
            Method::POST,
            "/_matrix/federation/v1/user/keys/claim",
            Some(&claim),
        )
        .await;
    let Err((_, body)) = &answer else {
        panic!("claim past the allowance answered: {answer:?}");
    };
    assert!(
        body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{body}"
    );
    assert_refused(answer, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");

    let room = scene
        .evil
        .create_room(&scene.mallory, json!({ "preset": "public_chat" }))
        .await;
    for n in 0..limits.invites_per_minute as usize {
        let answer = invite(&scene, &room, &scene.alice.user_id, n, Vec::new()).await;
        assert!(answer.is_ok(), "invite {n}: {answer:?}");
    }
    let answer = invite(&scene, &room, &scene.alice.user_id, 99, Vec::new()).await;
    assert_refused(answer, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let text = scene.victim.metrics().await;
    assert!(
        text.contains("grove_federation_rate_limited_total{kind=\"key_claim\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("grove_federation_rate_limited_total{kind=\"invite\"} 1"),
        "{text}"
    );
    scene.stop().await;
}
