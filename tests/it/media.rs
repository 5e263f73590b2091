//! The content repository over real HTTP: uploads, downloads with their safe headers,
//! thumbnails, limits, asynchronous uploads, restarts, and media fetched from another node over
//! the overlay.

use grove::Node;
use grove_server::{
    storage::Backend,
    testing::{TestDb, dimensions, png},
};
use reqwest::{StatusCode, header};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{BACKENDS, TestNode, TestUser, eventually, subscribe};

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; object-src 'self';";

/// Uploads `bytes`; returns the status and the JSON answer.
async fn upload(
    node: &TestNode,
    user: &TestUser,
    bytes: Vec<u8>,
    content_type: &str,
    filename: Option<&str>,
) -> (StatusCode, Value) {
    let mut url = format!("{}/_matrix/media/v3/upload", node.url());
    if let Some(name) = filename {
        url.push_str(&format!("?filename={}", crate::support::enc(name)));
    }
    let response = node
        .http
        .post(url)
        .bearer_auth(&user.token)
        .header(header::CONTENT_TYPE, content_type)
        .body(bytes)
        .send()
        .await
        .expect("upload sent");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Uploads `bytes` successfully; returns `(server name, media ID)`.
async fn upload_ok(
    node: &TestNode,
    user: &TestUser,
    bytes: Vec<u8>,
    content_type: &str,
    filename: Option<&str>,
) -> (String, String) {
    let (status, body) = upload(node, user, bytes, content_type, filename).await;
    assert_eq!(status, StatusCode::OK, "upload: {body}");
    let uri = body["content_uri"].as_str().expect("content_uri");
    let (server, id) = uri
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .expect("an mxc URI");
    (server.to_owned(), id.to_owned())
}

/// GETs a path; returns the status, headers and raw body.
async fn fetch(
    node: &TestNode,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, header::HeaderMap, Vec<u8>) {
    let mut request = node.http.get(format!("{}{path}", node.url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    (status, headers, body)
}

fn errcode(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["errcode"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn header<'a>(headers: &'a header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[track_caller]
fn check_safe_headers(headers: &header::HeaderMap) {
    assert_eq!(header(headers, "content-security-policy"), CSP);
    assert_eq!(
        header(headers, "cross-origin-resource-policy"),
        "cross-origin"
    );
}

#[tokio::test]
async fn upload_download_and_thumbnails() {
    for backend in BACKENDS {
        let mut node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let picture = png(64, 48);
        let (server, id) = upload_ok(
            &node,
            &alice,
            picture.clone(),
            "image/png",
            Some("holiday pic.png"),
        )
        .await;
        assert_eq!(server, node.server_name());
        assert!(id.len() >= 24, "{id}");

        let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
        let (status, headers, body) = fetch(&node, &path, Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, picture, "byte-identical");
        assert_eq!(header(&headers, "content-type"), "image/png");
        assert_eq!(
            header(&headers, "content-disposition"),
            r#"inline; filename="holiday pic.png""#
        );
        check_safe_headers(&headers);

        let (status, headers, body) = fetch(
            &node,
            &format!("{path}/other%20name.png"),
            Some(&alice.token),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, picture);
        assert_eq!(
            header(&headers, "content-disposition"),
            r#"inline; filename="other name.png""#
        );

        // The older unauthenticated route serves the same; the new one needs a token.
        let legacy = format!("/_matrix/media/v3/download/{server}/{id}");
        let (status, headers, body) = fetch(&node, &legacy, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, picture);
        check_safe_headers(&headers);
        let (status, _, body) = fetch(&node, &path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(errcode(&body), "M_MISSING_TOKEN");

        // A page is never shown inline.
        let page = b"<html><script>alert(1)</script></html>".to_vec();
        let (_, page_id) = upload_ok(&node, &alice, page.clone(), "text/html", None).await;
        let (status, headers, body) = fetch(
            &node,
            &format!("/_matrix/client/v1/media/download/{server}/{page_id}"),
            Some(&alice.token),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, page);
        assert_eq!(header(&headers, "content-type"), "text/html");
        assert_eq!(header(&headers, "content-disposition"), "attachment");
        check_safe_headers(&headers);

        // Thumbnails fit the box asked for.
        let thumb = |w: u32, h: u32, method: &str| {
            format!(
                "/_matrix/client/v1/media/thumbnail/{server}/{id}?width={w}&height={h}&method={method}"
            )
        };
        let (status, headers, body) =
            fetch(&node, &thumb(32, 32, "crop"), Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, "content-type"), "image/png");
        check_safe_headers(&headers);
        assert_eq!(dimensions(&body), (32, 32));
        let (status, _, body) = fetch(&node, &thumb(40, 40, "scale"), Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK);
        let (w, h) = dimensions(&body);
        assert!(w <= 40 && h <= 40, "{w}x{h}");
        assert_eq!((w, h), (40, 30), "aspect ratio kept");
        let (status, _, body) = fetch(
            &node,
            &format!("/_matrix/media/v3/thumbnail/{server}/{id}?width=16&height=16"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(dimensions(&body), (16, 12));
        let (status, _, body) = fetch(&node, &thumb(32, 32, "stretch"), Some(&alice.token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(errcode(&body), "M_INVALID_PARAM");
        let (status, _, body) = fetch(
            &node,
            &format!("/_matrix/client/v1/media/thumbnail/{server}/{page_id}?width=8&height=8"),
            Some(&alice.token),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a page has no thumbnail");
        assert_eq!(errcode(&body), "M_NOT_FOUND");

        // Unknown media.
        for path in [
            format!("/_matrix/client/v1/media/download/{server}/NoSuchMediaHere"),
            format!("/_matrix/media/v3/download/{server}/NoSuchMediaHere"),
            format!("/_matrix/client/v1/media/download/{server}/bad%2Fid"),
            "/_matrix/client/v1/media/download/not%20a%20server/x".to_owned(),
            format!("/_matrix/client/v1/media/thumbnail/{server}/NoSuchMediaHere?width=8&height=8"),
        ] {
            let (status, _, body) = fetch(&node, &path, Some(&alice.token)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(errcode(&body), "M_NOT_FOUND", "{path}");
        }

        let (status, config) = node
            .get("/_matrix/client/v1/media/config", Some(&alice.token))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(config["m.upload.size"], 50 * 1024 * 1024);

        // Media survives a restart.
        node.restart().await;
        let (status, headers, body) = fetch(&node, &path, Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, picture);
        assert_eq!(header(&headers, "content-type"), "image/png");
    }
}

/// A node whose media limit is `max` bytes.
async fn start_limited(backend: Backend, max: u64) -> TestNode {
    subscribe();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestDb::new(backend).await;
    let node = Node::builder()
        .data_dir(dir.path())
        .database_url(db.url.clone())
        .client_listen("127.0.0.1:0".parse().expect("addr"))
        .overlay(false)
        .multicast(false)
        .max_upload_bytes(max)
        .start()
        .await
        .expect("node starts");
    TestNode::running(node, dir, db)
}

/// Uploads `len` bytes in chunked encoding (no length announced) over a raw connection;
/// returns the status line and the body.
async fn chunked_upload(node: &TestNode, token: &str, len: usize) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(node.node().client_addr())
        .await
        .expect("connect");
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let chunk = [b'x'; 100];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        let frame = format!("{n:x}\r\n");
        // The server may answer and close before the whole body is sent.
        if stream.write_all(frame.as_bytes()).await.is_err()
            || stream.write_all(&chunk[..n]).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
        sent += n;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.lines().next().unwrap_or_default().to_owned();
    (status, answer)
}

#[tokio::test]
async fn uploads_over_the_limit_are_refused() {
    for backend in BACKENDS {
        let node = start_limited(backend, 1000).await;
        let alice = node.register("alice").await;
        let (_, _) = upload_ok(
            &node,
            &alice,
            vec![7; 1000],
            "application/octet-stream",
            None,
        )
        .await;
        let (status, body) = upload(
            &node,
            &alice,
            vec![7; 1001],
            "application/octet-stream",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["errcode"], "M_TOO_LARGE");

        // Without a declared length the limit holds all the same.
        let (status, answer) = chunked_upload(&node, &alice.token, 5000).await;
        assert!(status.contains(" 413 "), "{answer}");
        assert!(answer.contains("M_TOO_LARGE"), "{answer}");
        let (status, answer) = chunked_upload(&node, &alice.token, 900).await;
        assert!(status.contains(" 200 "), "{answer}");

        let (status, config) = node
            .get("/_matrix/client/v1/media/config", Some(&alice.token))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(config["m.upload.size"], 1000);

        // Nothing half-written is left behind.
        let tmp = node.dir.path().join("media").join("tmp");
        assert_eq!(std::fs::read_dir(tmp).expect("tmp").count(), 0);
    }
}

#[tokio::test]
async fn asynchronous_uploads() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let (status, created) = node
            .post("/_matrix/media/v1/create", Some(&alice.token), Value::Null)
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        assert!(created["unused_expires_at"].as_i64().is_some());
        let uri = created["content_uri"].as_str().expect("content_uri");
        let (server, id) = uri
            .strip_prefix("mxc://")
            .and_then(|rest| rest.split_once('/'))
            .expect("an mxc URI");
        let download = format!("/_matrix/client/v1/media/download/{server}/{id}");
        let (status, _, body) = fetch(
            &node,
            &format!("{download}?timeout_ms=0"),
            Some(&alice.token),
        )
        .await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(errcode(&body), "M_NOT_YET_UPLOADED");
        let (status, _, body) = fetch(
            &node,
            &format!("{download}?timeout_ms=300"),
            Some(&bob.token),
        )
        .await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "waited, then gave up");
        assert_eq!(errcode(&body), "M_NOT_YET_UPLOADED");
        // A download that waits (the default 20 s) gets the content once it is uploaded.
        let waiting = {
            let path = download.clone();
            let token = bob.token.clone();
            let url = node.url();
            let http = node.http.clone();
            tokio::spawn(async move {
                let response = http
                    .get(format!("{url}{path}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("sent");
                (response.status(), response.bytes().await.expect("body"))
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "the download did not wait");

        let put = |token: String, bytes: &'static [u8]| {
            let url = format!("{}/_matrix/media/v3/upload/{server}/{id}", node.url());
            let http = node.http.clone();
            async move {
                let response = http
                    .put(url)
                    .bearer_auth(token)
                    .header(header::CONTENT_TYPE, "text/plain")
                    .body(bytes)
                    .send()
                    .await
                    .expect("sent");
                let status = response.status();
                (
                    status,
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            }
        };
        let (status, body) = put(bob.token.clone(), b"not yours").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = put(alice.token.clone(), b"later").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, waited) = waiting.await.expect("waiting download");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&waited[..], b"later");
        let (status, body) = put(alice.token.clone(), b"again").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["errcode"], "M_CANNOT_OVERWRITE_MEDIA");

        let (status, headers, body) = fetch(&node, &download, Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"later");
        assert_eq!(header(&headers, "content-type"), "text/plain");
    }
}

async fn media_across_nodes(backend_a: Backend, backend_b: Backend) {
    let mut a = TestNode::start_federated(backend_a, Vec::new()).await;
    let b = TestNode::start_federated(backend_b, vec![a.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let picture = png(50, 100);
    let (server, id) = upload_ok(&a, &alice, picture.clone(), "image/png", Some("a.png")).await;

    let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
    let (headers, body) = eventually("bob downloads alice's media through B", async || {
        let (status, headers, body) = fetch(&b, &path, Some(&bob.token)).await;
        if status == StatusCode::OK {
            Ok((headers, body))
        } else {
            Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
        }
    })
    .await;
    assert_eq!(body, picture, "byte-identical across nodes");
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_eq!(
        header(&headers, "content-disposition"),
        "inline; filename=a.png"
    );
    check_safe_headers(&headers);

    // Unknown media of A is unknown on B too.
    let (status, _, body) = fetch(
        &b,
        &format!("/_matrix/client/v1/media/download/{server}/NoSuchMediaHere"),
        Some(&bob.token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(errcode(&body), "M_NOT_FOUND");

    // The federation thumbnail endpoint itself: B's server asks A for a thumbnail and gets a
    // multipart answer whose second part is an image of the asked-for size bound.
    let fed = grove_federation::client::Client::new(
        b.node().overlay().expect("overlay").clone(),
        b.node().homeserver().key.clone(),
        ruma::ServerName::parse(b.server_name()).expect("B's name"),
    );
    let a_name = ruma::ServerName::parse(a.server_name()).expect("A's name");
    let answer = fed
        .request_raw(
            &a_name,
            http::Method::GET,
            &format!("/_matrix/federation/v1/media/thumbnail/{id}?width=20&height=20&method=scale"),
            None,
            1 << 20,
        )
        .await
        .expect("thumbnail over federation");
    assert_eq!(answer.status(), http::StatusCode::OK);
    let content_type = answer
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("multipart boundary")
        .trim_matches('"')
        .to_owned();
    assert!(
        content_type.starts_with("multipart/mixed"),
        "{content_type}"
    );
    let body = answer.body();
    let marker = format!("--{boundary}");
    let parts: Vec<&[u8]> = split_bytes(body, marker.as_bytes());
    let image_part = parts
        .iter()
        .find(|p| p.windows(9).any(|w| w == b"image/png"))
        .expect("an image part");
    let start = image_part
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("part headers end")
        + 4;
    let image = image_part[start..]
        .strip_suffix(b"\r\n")
        .unwrap_or(&image_part[start..]);
    assert_eq!(dimensions(image), (10, 20));
    let unknown = fed
        .request_raw(
            &a_name,
            http::Method::GET,
            "/_matrix/federation/v1/media/thumbnail/NoSuchMediaHere?width=20&height=20",
            None,
            1 << 20,
        )
        .await
        .expect_err("unknown media refused");
    assert!(unknown.to_string().contains("M_NOT_FOUND"), "{unknown}");

    // With A gone, B serves its copy, and thumbnails of it.
    let node = a.node.take().expect("A running");
    node.shutdown().await;
    let (status, _, body) = fetch(&b, &path, Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "served from B's copy");
    assert_eq!(body, picture);
    let (status, _, body) = fetch(
        &b,
        &format!(
            "/_matrix/client/v1/media/thumbnail/{server}/{id}?width=20&height=20&method=scale"
        ),
        Some(&bob.token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dimensions(&body), (10, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_across_nodes_sqlite_to_postgres() {
    media_across_nodes(Backend::Sqlite, Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_across_nodes_postgres_to_sqlite() {
    media_across_nodes(Backend::Postgres, Backend::Sqlite).await;
}

#[test]
fn media_section_is_read() {
    let config =
        grove::Config::from_toml("[media]\ndir = \"/srv/media\"\nmax_upload_bytes = 1234\n")
            .expect("valid media config");
    assert_eq!(config.media.max_upload_bytes, 1234);
    assert_eq!(
        config.media.dir.as_deref(),
        Some(std::path::Path::new("/srv/media"))
    );
    assert_eq!(
        grove::Config::default().media.max_upload_bytes,
        50 * 1024 * 1024
    );
    let err = grove::Config::from_toml("[media]\nmax_upload_bytes = 0").expect_err("zero limit");
    assert!(err.contains("max_upload_bytes"), "{err}");
    let err = grove::Config::from_toml("[media]\nsize = 1").expect_err("unknown key");
    assert!(err.contains("size"), "{err}");
    let err = grove::Config::from_toml("[media]\nmax_upload_bytes = -1").expect_err("negative");
    assert!(err.contains("max_upload_bytes"), "{err}");
}

/// `bytes` cut at every occurrence of `marker`.
fn split_bytes<'a>(bytes: &'a [u8], marker: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest.windows(marker.len()).position(|w| w == marker) {
        parts.push(&rest[..at]);
        rest = &rest[at + marker.len()..];
    }
    parts.push(rest);
    parts
}
