//! Federation's TLS listener and overlay session streams against slow, idle and too many
//! connections, and every federation route against garbage: each is cut or answered in
//! bounded time, never with a panic, and the node goes on serving meanwhile.

use std::time::{Duration, Instant};

use grove_federation::tls;
use grove_server::storage::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName as TlsName;

use crate::support::{TestNode, enc};
use crate::{federation_tls::start_tls_node_with, tls_ca::TestCa};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS node whose listeners give up quickly: a second for a head or a stalled body, two for
/// an idle connection, and at most `max_connections` open.
async fn impatient(ca: &TestCa, max_connections: usize) -> TestNode {
    start_tls_node_with(Backend::Sqlite, ca, ca, |c| {
        c.client.header_timeout_secs = 1;
        c.client.body_timeout_secs = 1;
        c.client.idle_timeout_secs = 2;
        c.client.max_connections = max_connections;
    })
    .await
}

/// A TLS connection to `node`'s federation listener.
async fn connect(node: &TestNode, ca: &TestCa) -> std::io::Result<Tls> {
    let pem = std::fs::read(ca.ca_pem()).expect("CA PEM");
    let roots = tls::certificates_from_pem(&pem).expect("CA certificates");
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(&roots).expect("config"));
    let addr = node.node().federation_addr().expect("TLS listener");
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = TlsName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

/// Reads until the server closes (or `limit` passes): what it sent, and when it closed.
async fn read_until_closed(
    stream: &mut (impl AsyncRead + Unpin),
    limit: Duration,
) -> (String, Option<Duration>) {
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
            Ok(Ok(n)) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
        }
    }
}

/// Asserts that `node` counted at least one federation refusal of each of `reasons`.
async fn assert_refused(node: &TestNode, reasons: &[&str]) {
    for reason in reasons {
        let count = node
            .metric(&format!(
                "grove_federation_refused_total{{reason=\"{reason}\"}}"
            ))
            .await;
        assert!(count >= 1.0, "{reason}: {count}");
    }
}

const VERSION: &[u8] = b"GET /_matrix/federation/v1/version HTTP/1.1\r\nhost: localhost\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_idle_and_surplus_federation_connections_are_cut() {
    let ca = TestCa::new("listen");
    let node = impatient(&ca, 3).await;

    // A request head trickling in: cut after the header timeout.
    let mut slow = connect(&node, &ca).await.expect("connect");
    slow.write_all(b"GET /_matrix/federation/v1/version HTTP/1.1\r\nhost: l")
        .await
        .expect("write");
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    let closed = closed.expect("a slow head is cut");
    assert!(closed >= Duration::from_millis(800), "cut after {closed:?}");

    // A body that stalls: cut after the body timeout.
    let mut stalled = connect(&node, &ca).await.expect("connect");
    stalled
        .write_all(
            b"PUT /_matrix/federation/v1/send/t HTTP/1.1\r\nhost: localhost\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"pdus\"",
        )
        .await
        .expect("write");
    let (_, closed) = read_until_closed(&mut stalled, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "a stalled body is cut");

    // A keep-alive connection that went quiet after one request: closed after the idle
    // timeout, its answer sent.
    let mut used = connect(&node, &ca).await.expect("connect");
    used.write_all(VERSION).await.expect("write");
    let (answer, closed) = read_until_closed(&mut used, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed.is_some(), "an idle connection is closed");

    assert_refused(&node, &["header_timeout", "idle_timeout"]).await;

    // Three connections held open fill the cap: a fourth is closed without an answer, and
    // once one of the three goes, a new one is served.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&node, &ca).await.expect("connect"));
    }
    let surplus = async {
        let mut extra = connect(&node, &ca).await?;
        extra.write_all(VERSION).await?;
        let mut buf = [0u8; 64];
        let n = extra.read(&mut buf).await?;
        Ok::<usize, std::io::Error>(n)
    };
    match tokio::time::timeout(Duration::from_secs(5), surplus).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("a connection over the cap was served: {other:?}"),
    }
    assert_refused(&node, &["connection_cap"]).await;
    held.clear();
    let mut fresh = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(mut c) = connect(&node, &ca).await
            && c.write_all(VERSION).await.is_ok()
        {
            let (answer, _) = read_until_closed(&mut c, Duration::from_secs(5)).await;
            if answer.starts_with("HTTP/1.1 200") {
                fresh = Some(answer);
                break;
            }
        }
    }
    assert!(
        fresh.is_some(),
        "no connection served once the cap freed up"
    );
}

/// A node serving federation over the overlay only, its listeners as impatient as
/// [`impatient`]'s, and a second node peered with it.
async fn impatient_over_overlay(max_connections: usize) -> (TestNode, TestNode) {
    let victim = TestNode::start_with_config(Backend::Sqlite, |c| {
        c.overlay.enabled = true;
        c.overlay.listen = "127.0.0.1:0".parse().expect("addr");
        c.client.header_timeout_secs = 1;
        c.client.body_timeout_secs = 1;
        c.client.idle_timeout_secs = 2;
        c.client.max_connections = max_connections;
    })
    .await;
    let peer = TestNode::start_federated(Backend::Sqlite, vec![victim.peer_address()]).await;
    (victim, peer)
}

/// A federation session from `from` to `to` over the overlay, once a route exists.
async fn overlay_session(from: &TestNode, to: &TestNode) -> quinn::Connection {
    let overlay = from.node().overlay().expect("overlay");
    let key = to.node().overlay().expect("overlay").public_key();
    for _ in 0..100 {
        if let Ok(Ok(session)) = tokio::time::timeout(
            Duration::from_secs(2),
            overlay.open_session(key, grove_federation::client::ALPN),
        )
        .await
        {
            return session;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no overlay session to the victim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_idle_and_surplus_overlay_streams_are_cut() {
    let (victim, peer) = impatient_over_overlay(3).await;
    let session = overlay_session(&peer, &victim).await;

    // A request head trickling in on a session stream: cut after the header timeout.
    let (mut send, mut recv) = session.open_bi().await.expect("stream");
    send.write_all(b"GET /_matrix/federation/v1/version HTTP/1.1\r\nhost: l")
        .await
        .expect("write");
    let (_, closed) = read_until_closed(&mut recv, Duration::from_secs(10)).await;
    let closed = closed.expect("a slow head is cut");
    assert!(closed >= Duration::from_millis(800), "cut after {closed:?}");

    // A stream that went quiet after one request: its answer sent, then closed.
    let (mut send, mut recv) = session.open_bi().await.expect("stream");
    send.write_all(VERSION).await.expect("write");
    let (answer, closed) = read_until_closed(&mut recv, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed.is_some(), "an idle stream is closed");

    assert_refused(&victim, &["header_timeout", "idle_timeout"]).await;

    // Three streams held open fill the cap: a fourth is closed unanswered, and once the three
    // go, a new one is served.
    let mut held = Vec::new();
    for _ in 0..3 {
        let (mut send, recv) = session.open_bi().await.expect("stream");
        // A stream is only seen by the other side once something is sent on it.
        send.write_all(b"GET /").await.expect("write");
        held.push((send, recv));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut send, mut recv) = session.open_bi().await.expect("stream");
    send.write_all(VERSION).await.expect("write");
    let (answer, closed) = read_until_closed(&mut recv, Duration::from_secs(5)).await;
    assert!(
        closed.is_some() && !answer.starts_with("HTTP/1.1 200"),
        "a stream over the cap was served: {answer}"
    );
    assert_refused(&victim, &["connection_cap"]).await;
    held.clear();
    let mut fresh = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok((mut send, mut recv)) = session.open_bi().await else {
            continue;
        };
        if send.write_all(VERSION).await.is_ok() {
            let (answer, _) = read_until_closed(&mut recv, Duration::from_secs(5)).await;
            if answer.starts_with("HTTP/1.1 200") {
                fresh = Some(answer);
                break;
            }
        }
    }
    assert!(fresh.is_some(), "no stream served once the cap freed up");
}

/// Every federation route, with the path parameters filled by `param`.
fn routes(param: &str) -> Vec<(http::Method, String)> {
    let p = param;
    use http::Method as M;
    vec![
        (M::GET, "/_matrix/federation/v1/version".to_owned()),
        (M::GET, "/_matrix/key/v2/server".to_owned()),
        (M::GET, format!("/_matrix/federation/v1/make_join/{p}/{p}")),
        (M::PUT, format!("/_matrix/federation/v2/send_join/{p}/{p}")),
        (M::GET, format!("/_matrix/federation/v1/make_leave/{p}/{p}")),
        (M::PUT, format!("/_matrix/federation/v2/send_leave/{p}/{p}")),
        (M::PUT, format!("/_matrix/federation/v2/invite/{p}/{p}")),
        (M::PUT, format!("/_matrix/federation/v1/send/{p}")),
        (
            M::GET,
            format!("/_matrix/federation/v1/state_ids/{p}?event_id={p}"),
        ),
        (
            M::GET,
            format!("/_matrix/federation/v1/state/{p}?event_id={p}"),
        ),
        (M::GET, format!("/_matrix/federation/v1/event/{p}")),
        (M::GET, format!("/_matrix/federation/v1/event_auth/{p}/{p}")),
        (
            M::POST,
            format!("/_matrix/federation/v1/get_missing_events/{p}"),
        ),
        (
            M::GET,
            format!("/_matrix/federation/v1/backfill/{p}?v={p}&limit={p}"),
        ),
        (
            M::GET,
            format!("/_matrix/federation/v1/query/profile?user_id={p}&field={p}"),
        ),
        (
            M::GET,
            format!("/_matrix/federation/v1/query/directory?room_alias={p}"),
        ),
        (
            M::GET,
            format!("/_matrix/federation/v1/publicRooms?limit={p}&since={p}"),
        ),
        (M::POST, "/_matrix/federation/v1/publicRooms".to_owned()),
        (
            M::GET,
            format!("/_matrix/federation/v1/hierarchy/{p}?suggested_only={p}"),
        ),
        (M::POST, "/_matrix/federation/v1/user/keys/query".to_owned()),
        (M::POST, "/_matrix/federation/v1/user/keys/claim".to_owned()),
        (M::GET, format!("/_matrix/federation/v1/user/devices/{p}")),
        (M::GET, format!("/_matrix/federation/v1/media/download/{p}")),
        (
            M::GET,
            format!("/_matrix/federation/v1/media/thumbnail/{p}?width={p}&height={p}"),
        ),
    ]
}

/// Bodies no route expects.
fn garbage_bodies(room: &str, user: &str) -> Vec<Value> {
    let deep = (0..64).fold(json!(1), |inner, _| json!([inner]));
    vec![
        json!(null),
        json!([]),
        json!("text"),
        json!(9_007_199_254_740_991_u64),
        json!({}),
        json!({ "pdus": "x", "edus": 1, "origin": [] }),
        json!({ "pdus": [{ "room_id": room, "depth": -1, "prev_events": [[]], "auth_events": {} }] }),
        json!({ "pdus": [deep.clone()], "edus": [{ "edu_type": "m.typing", "content": deep }] }),
        json!({ "type": "m.room.member", "room_id": room, "sender": user, "state_key": user,
                "content": { "membership": ["join"] } }),
        json!({ "earliest_events": [1], "latest_events": "x", "limit": -5, "min_depth": "a" }),
        json!({ "device_keys": { user: "x" }, "one_time_keys": { user: { "d": 7 } } }),
        json!({ "limit": "many", "filter": { "generic_search_term": 5 }, "since": {} }),
        json!({ "event": "nope", "room_version": 99, "invite_room_state": 1 }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_federation_route_answers_garbage_without_a_panic() {
    let ca = TestCa::new("garbage");
    let node = start_tls_node_with(Backend::Sqlite, &ca, &ca, |_| {}).await;
    let peer = start_tls_node_with(Backend::Sqlite, &ca, &ca, |_| {}).await;
    let alice = node.register("alice").await;
    let room = node
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let pem = std::fs::read(ca.ca_pem()).expect("CA PEM");
    let roots = tls::certificates_from_pem(&pem).expect("CA certificates");
    let client = grove_federation::client::Client::new(
        peer.node().overlay().expect("overlay").clone(),
        peer.node().homeserver().key.clone(),
        ruma::ServerName::parse(peer.server_name()).expect("name"),
    )
    .with_tls(tls::client_config(&roots).expect("client config"));
    let target = ruma::ServerName::parse(node.server_name()).expect("name");
    let params = [
        enc(&room),
        enc(&alice.user_id),
        "%00".to_owned(),
        "x".repeat(5_000),
        "%F0%9F%92%A9".to_owned(),
        "-1".to_owned(),
        "99999999999999999999999".to_owned(),
        enc("$not:an:event"),
        "..%2F..%2F".to_owned(),
    ];
    let bodies = garbage_bodies(&room, &alice.user_id);
    let started = Instant::now();
    let mut asked = 0;
    for param in &params {
        for (method, path) in routes(param) {
            let with_body = method != http::Method::GET;
            let choices: Vec<Option<&Value>> = if with_body {
                bodies.iter().map(Some).collect()
            } else {
                vec![None]
            };
            for body in choices {
                asked += 1;
                let outcome = client.request(&target, method.clone(), &path, body).await;
                if let Err(grove_federation::error::RequestError::Remote { status, body }) =
                    &outcome
                {
                    assert!(*status < 500, "{method} {path}: {status} {body}");
                }
            }
        }
    }
    println!("{asked} garbage requests in {:?}", started.elapsed());
    assert_eq!(
        node.metric("grove_federation_refused_total{reason=\"panic\"}")
            .await,
        0.0,
        "the panic net was needed"
    );
    // Still serving.
    let (status, _) = node
        .get("/_matrix/client/v3/account/whoami", Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK);
}
