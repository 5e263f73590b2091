//! Bad input: malformed JSON, wrong types, huge bodies, unknown endpoints, bad tokens and events
//! that fail authorization. Each gets the right Matrix error, and nothing is stored.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode};

/// Sends raw bytes and returns the status and JSON body.
async fn raw(
    node: &TestNode,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = node
        .http
        .request(method, format!("{}{}", node.url(), path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[track_caller]
fn check(got: (StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["errcode"], errcode, "body: {}", got.1);
    assert!(got.1["error"].is_string(), "error text missing: {}", got.1);
}

#[tokio::test]
async fn bad_requests_get_matrix_errors_and_change_nothing() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let token = Some(alice.token.as_str());

        // Unknown endpoints and methods.
        check(
            node.get("/_matrix/client/v3/no/such/thing", token).await,
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
        );
        check(
            node.get("/nowhere", None).await,
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
        );
        check(
            node.request(Method::DELETE, "/_matrix/client/v3/createRoom", token, None)
                .await,
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
        );

        // Tokens.
        check(
            node.get("/_matrix/client/v3/account/whoami", None).await,
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
        );
        check(
            node.get("/_matrix/client/v3/account/whoami", Some("not-a-token"))
                .await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );

        // Bodies that are not JSON, JSON of the wrong shape, and bodies that are too large.
        let create = "/_matrix/client/v3/createRoom";
        check(
            raw(&node, Method::POST, create, token, b"{not json".to_vec()).await,
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
        );
        check(
            raw(&node, Method::POST, create, token, vec![0xff, 0xfe, 0x00]).await,
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
        );
        check(
            node.post(create, token, json!({ "name": 5 })).await,
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        );
        check(
            node.post(create, token, json!({ "preset": "everyone_is_admin" }))
                .await,
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        );
        check(
            node.post(create, token, json!([1, 2, 3])).await,
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        );
        let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
        check(
            raw(&node, Method::POST, create, token, huge.into_bytes()).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
        );
        check(
            node.post(
                "/_matrix/client/v3/login",
                None,
                json!({ "type": "m.login.password", "identifier": 7 }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        );

        // None of that created a room.
        let (status, rooms) = node.get("/_matrix/client/v3/joined_rooms", token).await;
        assert_eq!(status, StatusCode::OK, "{rooms}");
        assert_eq!(rooms["joined_rooms"], json!([]), "{rooms}");

        // Events that fail authorization: bob is not in alice's room; bob cannot set state in
        // a room he joined without power.
        let (status, created) = node
            .post(create, token, json!({ "preset": "public_chat" }))
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        let room = created["room_id"].as_str().expect("room_id").to_owned();
        let bob = node.register("bob").await;
        let send = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1");
        check(
            node.put(
                &send,
                Some(&bob.token),
                json!({ "msgtype": "m.text", "body": "hi" }),
            )
            .await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        let (status, body) = node
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/join"),
                Some(&bob.token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        check(
            node.put(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
                Some(&bob.token),
                json!({ "name": "bob's now" }),
            )
            .await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        check(
            node.post(
                &format!("/_matrix/client/v3/rooms/{room}/invite"),
                Some(&bob.token),
                json!({ "user_id": "not a user id" }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        );
        check(
            node.get(
                &format!("/_matrix/client/v3/rooms/{room}/event/$nope"),
                token,
            )
            .await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );

        // The room still has exactly the state it was created with.
        let (status, name) = node
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
                token,
            )
            .await;
        check((status, name), StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let (status, members) = node
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
                token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{members}");
        assert_eq!(
            members["joined"].as_object().map(|m| m.len()),
            Some(2),
            "{members}"
        );
    }
}

#[tokio::test]
async fn cors_preflight_is_answered() {
    let node = TestNode::start(grove_server::storage::Backend::Sqlite).await;
    let resp = node
        .http
        .request(
            Method::OPTIONS,
            format!("{}/_matrix/client/v3/login", node.url()),
        )
        .header("origin", "https://app.element.io")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .expect("ascii");
    assert!(
        methods.contains("POST") && methods.contains("PUT"),
        "{methods}"
    );
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
}
