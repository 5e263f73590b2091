//! Prometheus metrics: requests are counted by route pattern and status.

use grove::Node;

#[tokio::test]
async fn requests_are_counted_by_route() {
    crate::support::subscribe();
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::builder()
        .data_dir(dir.path())
        .client_listen("127.0.0.1:0".parse().expect("addr"))
        .metrics_listen("127.0.0.1:0".parse().expect("addr"))
        .overlay(false)
        .start()
        .await
        .expect("node starts");
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let resp = http
            .get(format!(
                "{}/_matrix/client/v3/rooms/!a:b/state",
                node.client_url()
            ))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 401);
    }
    let url = node.metrics_url().expect("metrics served").to_owned();
    let text = http
        .get(url)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("grove_client_requests_total")
                && l.contains("endpoint=\"/_matrix/client/v3/rooms/{room_id}/state\"")
                && l.contains("status=\"401\"")
        })
        .unwrap_or_else(|| panic!("no counter for the state route in:\n{text}"));
    assert!(line.ends_with(" 3"), "{line}");
    node.shutdown().await;
}
