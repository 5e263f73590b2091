//! `make_join` runs the join through the auth rules: no template for a user who may not join.

use grove_server::storage::Backend;
use http::Method;
use reqwest::StatusCode;
use serde_json::json;

use super::{Scene, assert_refused};
use crate::support::{enc, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn make_join_refuses_who_may_not_join() {
    let scene = Scene::new(Backend::Sqlite).await;
    let private = scene
        .victim
        .create_room(&scene.alice, json!({ "preset": "private_chat" }))
        .await;
    let make_join = |room: &str, user: &str| {
        format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=12",
            enc(room),
            enc(user)
        )
    };
    let mallory = scene.mallory.user_id.clone();
    let answer = scene
        .ask(Method::GET, &make_join(&private, &mallory), None)
        .await;
    assert_refused(answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Invited, the same user gets a template.
    eventually("mallory invited", async || {
        let (status, body) = scene
            .victim
            .post(
                &format!("/_matrix/client/v3/rooms/{}/invite", enc(&private)),
                Some(&scene.alice.token),
                json!({ "user_id": mallory }),
            )
            .await;
        (status == StatusCode::OK)
            .then_some(())
            .ok_or(format!("{status} {body}"))
    })
    .await;
    let answer = scene
        .ask(Method::GET, &make_join(&private, &mallory), None)
        .await
        .expect("template for an invited user");
    assert_eq!(answer["event"]["content"]["membership"], "join", "{answer}");

    // Banned from a public room: no template.
    let public = scene
        .victim
        .create_room(&scene.alice, json!({ "preset": "public_chat" }))
        .await;
    let (status, body) = scene
        .victim
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&public)),
            Some(&scene.alice.token),
            json!({ "user_id": mallory }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = scene
        .ask(Method::GET, &make_join(&public, &mallory), None)
        .await;
    assert_refused(answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    scene.stop().await;
}
