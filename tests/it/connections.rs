//! The client API listener against slow, idle and too many connections: each is cut or
//! answered in bounded time, and ordinary clients (long-polling `/sync` included) go on
//! meanwhile.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{BACKENDS, TestNode};

/// A node whose listener gives up quickly: a second for a head or a stalled body, two for an
/// idle connection, and at most `max_connections` open.
async fn impatient_node(max_connections: usize) -> TestNode {
    TestNode::start_with_config(grove_server::storage::Backend::Sqlite, |c| {
        c.client.header_timeout_secs = 1;
        c.client.body_timeout_secs = 1;
        c.client.idle_timeout_secs = 2;
        c.client.max_connections = max_connections;
    })
    .await
}

async fn connect(node: &TestNode) -> TcpStream {
    TcpStream::connect(node.node().client_addr())
        .await
        .expect("connect")
}

/// Reads until the server closes the connection (or `limit` passes), returning what it sent
/// and how long it took; a reset counts as a close.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(started.elapsed()),
                );
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
        }
    }
}

async fn versions_ok(node: &TestNode) {
    let (status, body) = node.get("/_matrix/client/versions", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let node = impatient_node(64).await;
    let mut idle = connect(&node).await;
    // A keep-alive connection that served one request, then went quiet.
    let mut used = connect(&node).await;
    used.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    let closed = closed.expect("idle connection closed");
    assert!(
        closed >= Duration::from_millis(1500),
        "closed after {closed:?}"
    );
    let (answer, closed) = read_until_closed(&mut used, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed.is_some(), "used connection closed once idle");
    assert!(
        node.metric("grove_client_refused_total{reason=\"idle_timeout\"}")
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn a_slowloris_head_is_cut_while_others_are_served() {
    let node = impatient_node(64).await;
    let mut slow = connect(&node).await;
    let head =
        b"GET /_matrix/client/versions HTTP/1.1\r\nhost: x\r\nx-pad: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut cut = false;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        // Others are served meanwhile.
        versions_ok(&node).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    if !cut {
        let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "slow head still open; got {answer:?}");
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        node.metric("grove_client_refused_total{reason=\"header_timeout\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_body_shorter_than_its_length_is_answered_and_closed() {
    let node = impatient_node(64).await;
    let alice = node.register("alice").await;
    let mut short = connect(&node).await;
    let request = format!(
        "POST /_matrix/client/v3/createRoom HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":",
        alice.token
    );
    short.write_all(request.as_bytes()).await.expect("write");
    let (answer, closed) = read_until_closed(&mut short, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "short body still open; got {answer:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    versions_ok(&node).await;
}

#[tokio::test]
async fn connections_past_the_cap_are_answered_at_once() {
    let node = impatient_node(4).await;
    // Four silent connections hold every slot (within the idle timeout).
    let mut holders = Vec::new();
    for _ in 0..4 {
        holders.push(connect(&node).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let fresh = reqwest::Client::new();
    let resp = fresh
        .get(format!("{}/_matrix/client/versions", node.url()))
        .send()
        .await
        .expect("over the cap: answered");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        node.metric("grove_client_refused_total{reason=\"connection_cap\"}")
            .await
            >= 1.0
    );
    // A slot freed is a slot taken.
    holders.pop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = fresh
        .get(format!("{}/_matrix/client/versions", node.url()))
        .send()
        .await
        .expect("under the cap");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_long_poll_outlasts_the_idle_timeout() {
    for backend in BACKENDS {
        let node = TestNode::start_with_config(backend, |c| {
            c.client.header_timeout_secs = 1;
            c.client.idle_timeout_secs = 1;
        })
        .await;
        let alice = node.register("alice").await;
        let first = node.sync_now(&alice, None).await;
        let since = first["next_batch"].as_str().expect("next_batch").to_owned();
        let started = Instant::now();
        let (status, body) = node
            .get(
                &format!("/_matrix/client/v3/sync?since={since}&timeout=3000"),
                Some(&alice.token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert!(started.elapsed() >= Duration::from_millis(2500));
    }
}
