//! Sessions between directly peered nodes: end-to-end QUIC carried in link datagrams.

use std::time::Duration;

use grove_overlay::driver::OverlayEvent;
use grove_overlay::driver::statics::StaticPeer;
use sha2::{Digest, Sha256};

use crate::support::{TestNode, config, subscribe};

const WAIT: Duration = Duration::from_secs(10);
const ALPN: &[u8] = b"grove-test/1";

/// Deterministic bytes, different at every offset within a 251-byte cycle.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Starts `n` nodes, every pair linked, and waits until all links are up.
async fn mesh(seeds: &[u8]) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for &seed in seeds {
        let mut cfg = config(seed);
        for n in &nodes {
            cfg.static_peers.push(StaticPeer {
                addr: n.handle.local_addr(),
                key: Some(n.key()),
            });
        }
        nodes.push(TestNode::start(cfg));
    }
    for n in &mut nodes {
        let want = seeds.len() - 1;
        let mut seen = 0;
        while seen < want {
            n.wait_for(WAIT, |e| matches!(e, OverlayEvent::PeerUp { .. }))
                .await;
            seen += 1;
        }
    }
    nodes
}

/// Sends `len` bytes from `from` to `to` on a new session; returns what the receiver hashed.
async fn transfer(from: &TestNode, to: &TestNode, len: usize) -> ([u8; 32], [u8; 32]) {
    let mut listener = to.handle.listen(ALPN).expect("listen");
    let sender_key = from.key();
    let receiver = tokio::spawn(async move {
        let incoming = listener.accept().await.expect("incoming session");
        assert_eq!(incoming.remote, sender_key);
        let (mut send, mut recv) = incoming.connection.accept_bi().await.expect("stream");
        let data = recv.read_to_end(len + 1).await.expect("read");
        let digest: [u8; 32] = Sha256::digest(&data).into();
        send.write_all(&digest).await.expect("reply");
        send.finish().expect("finish");
        // Keep the connection until the sender has read the reply.
        let _ = incoming.connection.closed().await;
        digest
    });
    let conn = from
        .handle
        .open_session(to.key(), ALPN)
        .await
        .expect("open session");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let data = pattern(len);
    send.write_all(&data).await.expect("write");
    send.finish().expect("finish");
    let reply = recv.read_to_end(64).await.expect("reply");
    conn.close(0u32.into(), b"done");
    let echoed: [u8; 32] = reply.as_slice().try_into().expect("digest");
    let received = receiver.await.expect("receiver");
    assert_eq!(echoed, received);
    (Sha256::digest(&data).into(), received)
}

#[tokio::test]
async fn a_session_carries_ten_megabytes_intact() {
    subscribe();
    let nodes = mesh(&[20, 21]).await;
    let (sent, received) = transfer(&nodes[0], &nodes[1], 10 * 1024 * 1024).await;
    assert_eq!(sent, received);
    let metrics = nodes[0].handle.metrics();
    assert!(
        metrics.contains("grove_overlay_frames_out_total{channel=\"datagram\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn three_nodes_hold_sessions_between_every_pair() {
    subscribe();
    let nodes = mesh(&[22, 23, 24]).await;
    for (i, j) in [(0, 1), (1, 2), (2, 0)] {
        let (sent, received) = transfer(&nodes[i], &nodes[j], 256 * 1024).await;
        assert_eq!(sent, received, "{i} -> {j}");
    }
}

#[tokio::test]
async fn a_session_to_an_unreachable_node_fails() {
    subscribe();
    let nodes = mesh(&[25, 26]).await;
    let stranger = crate::support::secret(27).public_key();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        nodes[0].handle.open_session(stranger, ALPN),
    )
    .await
    .expect("open_session gives up by itself");
    assert!(
        matches!(result, Err(grove_overlay::session::SessionError::Timeout)),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_session_pinned_to_a_key_refuses_another_node() {
    subscribe();
    let nodes = mesh(&[28, 29]).await;
    let _listener = nodes[1].handle.listen(ALPN).expect("listen");
    // Open to node 1 but with another ALPN nobody listens on: refused, not hung.
    let result = nodes[0]
        .handle
        .open_session(nodes[1].key(), b"nobody/1")
        .await;
    assert!(result.is_err());
}
