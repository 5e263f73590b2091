//! A hostile client: garbage bodies on every route, login bodies ruma's parser chokes on,
//! rooms made in the same millisecond, aliases for rooms one is not in, oversized events and
//! guessed passwords. Every request gets a Matrix answer; nothing panics or drops the line.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode, TestUser, enc};

/// Bodies no client should send: empty, the wrong JSON types, numbers out of range, deep
/// nesting, a NUL, not JSON at all.
fn garbage_bodies() -> Vec<Vec<u8>> {
    let deep_array = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(3000), "}".repeat(3000));
    [
        "",
        "{}",
        "[]",
        "null",
        "\"text\"",
        "18446744073709551616000",
        "{\"type\":5,\"room_id\":[],\"user_id\":{},\"limit\":1e400,\"timeout\":-1}",
        "{\"type\":null,\"identifier\":[],\"auth\":7,\"device_keys\":\"x\",\"one_time_keys\":[1]}",
        "{\"limit\":18446744073709551616,\"from\":-99999999999999999999,\"content\":{}}",
        "{\"msgtype\":{},\"body\":[],\"url\":5,\"membership\":true,\"state_key\":1}",
        "{\"\\u0000\":\"\\u0000\"}",
        "{not json",
        &deep_array,
        &deep_object,
    ]
    .iter()
    .map(|b| b.as_bytes().to_vec())
    .collect()
}

/// Every client API route pattern, read from the client API's sources so that a new route is
/// walked too.
fn client_routes() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clientapi/src");
    let mut files = vec![root];
    let mut routes = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read clientapi/src") {
                files.push(entry.expect("dir entry").path());
            }
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        for piece in text.split('"').skip(1).step_by(2) {
            if piece.starts_with("/_matrix/") && !piece.contains(' ') {
                routes.push(piece.to_owned());
            }
        }
    }
    routes.sort();
    routes.dedup();
    // Logging out last, so that everything before runs with a valid token.
    routes.sort_by_key(|r| r.contains("logout") || r.contains("deactivate"));
    routes
}

/// Fills a route pattern's parameters with values that reach the handler.
fn fill(route: &str, room: &str, user: &TestUser, n: u64) -> String {
    let mut out = String::new();
    let mut rest = route;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + end];
        let value = match name {
            "room_id" | "room_id_or_alias" => enc(room),
            "user_id" => enc(&user.user_id),
            "event_id" => enc("$nowhere"),
            "event_type" => "m.room.message".to_owned(),
            "txn_id" => format!("garbage{n}"),
            "device_id" => enc(&user.device_id),
            "room_alias" => enc(&format!("#garbage{n}:x")),
            "receipt_type" => "m.read".to_owned(),
            "kind" => "override".to_owned(),
            _ => "x".to_owned(),
        };
        out.push_str(&value);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn every_client_route_answers_garbage_with_a_matrix_error() {
    let node = TestNode::start(grove_server::storage::Backend::Sqlite).await;
    let alice = node.register("alice").await;
    let room = node.create_room(&alice, json!({})).await;
    let routes = client_routes();
    assert!(routes.len() > 60, "routes found: {routes:?}");
    let bodies = garbage_bodies();
    let counter = AtomicU64::new(0);
    let garbage_query = "?limit=18446744073709551616&from=%ff&timeout=-5&filter=%7Bnope&dir=x";
    for route in &routes {
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            for body in &bodies {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let path = fill(route, &room, &alice, n);
                let query = if method == Method::GET && body.is_empty() {
                    garbage_query
                } else {
                    ""
                };
                let url = format!("{}{path}{query}", node.url());
                let resp = node
                    .http
                    .request(method.clone(), &url)
                    .bearer_auth(&alice.token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "{method} {path} with {:?}: no answer: {e}",
                            String::from_utf8_lossy(&body[..body.len().min(60)])
                        )
                    });
                let status = resp.status();
                let bytes = resp.bytes().await.unwrap_or_else(|e| {
                    panic!("{method} {path}: answer cut off: {e}");
                });
                assert!(
                    status != StatusCode::INTERNAL_SERVER_ERROR,
                    "{method} {path} with {:?}: {status} {}",
                    String::from_utf8_lossy(&body[..body.len().min(60)]),
                    String::from_utf8_lossy(&bytes)
                );
                if status.is_client_error() {
                    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    assert!(
                        json["errcode"].is_string() || json["flows"].is_array(),
                        "{method} {path}: {status} without a Matrix error: {}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
        }
    }
    // No parser and no handler panicked, not even behind the safety nets.
    for reason in ["panic", "parse_panic"] {
        assert_eq!(
            node.metric(&format!(
                "grove_client_refused_total{{reason=\"{reason}\"}}"
            ))
            .await,
            0.0,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn login_without_a_type_is_bad_json_and_keeps_the_connection() {
    let node = TestNode::start(grove_server::storage::Backend::Sqlite).await;
    node.register("alice").await;
    // One connection for everything: a panic would have closed it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    for body in [
        "{\"identifier\":{\"type\":\"m.id.user\",\"user\":\"alice\"},\"password\":\"x\"}",
        "{}",
        "",
        "{\"type\":null}",
        "{\"type\":7}",
    ] {
        let resp = http
            .post(format!("{}/_matrix/client/v3/login", node.url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("login with {body:?}: no answer: {e}"));
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let json: Value = resp.json().await.expect("json");
        assert_eq!(json["errcode"], "M_BAD_JSON", "{body:?}: {json}");
    }
    // The same connection still logs in.
    let resp = http
        .post(format!("{}/_matrix/client/v3/login", node.url()))
        .json(&json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "alice" },
            "password": "correct horse battery",
        }))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        node.metric("grove_client_refused_total{reason=\"parse_panic\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn rooms_created_at_once_by_one_user_all_succeed() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let http = node.http.clone();
                let url = format!("{}/_matrix/client/v3/createRoom", node.url());
                let token = alice.token.clone();
                tokio::spawn(async move {
                    let resp = http
                        .post(url)
                        .bearer_auth(token)
                        .json(&json!({}))
                        .send()
                        .await
                        .expect("createRoom sent");
                    let status = resp.status();
                    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            let (status, body) = task.await.expect("task");
            assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
            ids.push(body["room_id"].as_str().expect("room_id").to_owned());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 200, "{backend:?}: room IDs must differ");
    }
}

#[tokio::test]
async fn only_members_may_give_a_room_an_alias() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let room = node.create_room(&alice, json!({})).await;
        let server = node.server_name();
        let path = format!(
            "/_matrix/client/v3/directory/room/{}",
            enc(&format!("#bobs:{server}"))
        );
        let (status, body) = node
            .put(&path, Some(&bob.token), json!({ "room_id": room }))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{backend:?}: {body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN");
        let (status, body) = node.get(&path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{backend:?}: {body}");
        let (status, body) = node
            .put(&path, Some(&alice.token), json!({ "room_id": room }))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
    }
}

#[tokio::test]
async fn an_event_over_64_kib_is_too_large() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let room = node.create_room(&alice, json!({})).await;
        let body = "x".repeat(70 * 1024);
        let (status, answer) = node
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/big",
                    enc(&room)
                ),
                Some(&alice.token),
                json!({ "msgtype": "m.text", "body": body }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{backend:?}: {answer}"
        );
        assert_eq!(answer["errcode"], "M_TOO_LARGE");
        let (status, answer) = node
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
                    enc(&room)
                ),
                Some(&alice.token),
                json!({ "topic": "y".repeat(70 * 1024) }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{backend:?}: {answer}"
        );
        assert_eq!(answer["errcode"], "M_TOO_LARGE");
    }
}

async fn login(node: &TestNode, user: &str, password: &str) -> (StatusCode, Value) {
    node.post(
        "/_matrix/client/v3/login",
        None,
        json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        }),
    )
    .await
}

#[tokio::test]
async fn one_users_typos_do_not_lock_out_another_on_loopback() {
    let node = TestNode::start(grove_server::storage::Backend::Sqlite).await;
    node.register("alice").await;
    node.register("bob").await;
    // Successful logins do not count.
    for _ in 0..15 {
        let (status, body) = login(&node, "alice", "correct horse battery").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut limited = false;
    for _ in 0..30 {
        let (status, body) = login(&node, "alice", "wrong").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
            limited = true;
            break;
        }
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    assert!(limited, "guessing alice's password is limited");
    // Alice's own account waits; bob, from the same 127.0.0.1, does not.
    let (status, _) = login(&node, "alice", "correct horse battery").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, body) = login(&node, "bob", "correct horse battery").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn login_limits_are_configurable() {
    let node = TestNode::start_with_config(grove_server::storage::Backend::Sqlite, |c| {
        c.rate_limits.login_burst = 2;
        c.rate_limits.login_per_second = 0.01;
    })
    .await;
    node.register("alice").await;
    for _ in 0..2 {
        let (status, body) = login(&node, "alice", "wrong").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, body) = login(&node, "alice", "wrong").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 10_000),
        "{body}"
    );
}
