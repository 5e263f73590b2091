//! Hostile peers: bad hellos, garbage and oversized frames are refused and counted, never a
//! panic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use grove_overlay::driver::OverlayEvent;
use grove_overlay::hello::{CAPABILITIES, Hello, Negotiated};
use grove_overlay::link::{self, LinkKind};
use grove_overlay::tls::{self, Expect, Identity};

use crate::support::{TestNode, config, eventually, secret, subscribe};

const WAIT: Duration = Duration::from_secs(10);

/// A raw QUIC client holding a valid node certificate, speaking to `addr` by hand.
async fn raw_link(
    seed: u8,
    addr: SocketAddr,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let identity = Identity::new(&secret(seed)).expect("identity");
    let mut client = tls::client_config(&identity, Expect::AnyKey, tls::PEER_ALPN).expect("config");
    client.transport_config(Arc::new(link::transport_config()));
    let endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("endpoint");
    let conn = endpoint
        .connect_with(client, addr, tls::server_name())
        .expect("connect")
        .await
        .expect("handshake");
    let (send, recv) = conn.open_bi().await.expect("stream");
    (conn, send, recv)
}

#[tokio::test]
async fn newer_node_with_wider_range_peers_at_the_common_version() {
    subscribe();
    let mut node = TestNode::start(config(40));
    let (_conn, mut send, mut recv) = raw_link(41, node.handle.local_addr()).await;
    let newer = Hello {
        version: 7,
        capabilities: 0xff,
        network_id: None,
    };
    link::write_frame(&mut send, &newer.encode())
        .await
        .expect("write");
    let answer = Hello::decode(&link::read_frame(&mut recv).await.expect("answer")).expect("hello");
    assert_eq!(answer, Hello::ours(None));
    assert_eq!(
        newer.negotiate(&answer),
        Ok(Negotiated {
            version: 1,
            capabilities: CAPABILITIES
        })
    );
    node.wait_for(WAIT, |e| {
        matches!(
            e,
            OverlayEvent::PeerUp {
                kind: LinkKind::Inbound,
                ..
            }
        )
    })
    .await;
    let peers = node.handle.peers().await.expect("peers");
    assert_eq!(
        peers[0].negotiated,
        Negotiated {
            version: 1,
            capabilities: CAPABILITIES
        }
    );
}

#[tokio::test]
async fn node_with_no_common_version_is_refused_with_a_reason() {
    subscribe();
    let node = TestNode::start(config(42));
    let (conn, mut send, mut recv) = raw_link(43, node.handle.local_addr()).await;
    // Version 0 predates every version this build still speaks.
    let ancient = Hello {
        version: 0,
        capabilities: 0,
        network_id: None,
    };
    link::write_frame(&mut send, &ancient.encode())
        .await
        .expect("write");
    assert!(link::read_frame(&mut recv).await.is_err());
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, link::close::HELLO_REFUSED.into());
            assert_eq!(&c.reason[..], b"version");
        }
        other => panic!("unexpected close: {other}"),
    }
    assert!(
        node.handle
            .metrics()
            .contains("grove_overlay_hello_refused_total{reason=\"version\"} 1")
    );
}

#[tokio::test]
async fn garbage_instead_of_a_hello_is_refused() {
    subscribe();
    let node = TestNode::start(config(44));
    let (conn, mut send, _recv) = raw_link(45, node.handle.local_addr()).await;
    link::write_frame(&mut send, b"definitely not a hello")
        .await
        .expect("write");
    let _ = conn.closed().await;
    eventually(WAIT, || async {
        node.handle
            .metrics()
            .contains("grove_overlay_hello_refused_total{reason=\"malformed\"} 1")
    })
    .await;
    assert!(node.handle.peers().await.expect("peers").is_empty());
}

#[tokio::test]
async fn garbage_after_the_hello_drops_the_peer() {
    subscribe();
    let mut node = TestNode::start(config(46));
    let (conn, mut send, mut recv) = raw_link(47, node.handle.local_addr()).await;
    link::write_frame(&mut send, &Hello::ours(None).encode())
        .await
        .expect("write");
    link::read_frame(&mut recv).await.expect("answer");
    node.wait_for(WAIT, |e| matches!(e, OverlayEvent::PeerUp { .. }))
        .await;
    link::write_frame(&mut send, &[0xde, 0xad, 0xbe, 0xef])
        .await
        .expect("garbage");
    node.wait_for(WAIT, |e| matches!(e, OverlayEvent::PeerDown { .. }))
        .await;
    let _ = conn.closed().await;
    assert!(
        node.handle
            .metrics()
            .contains("grove_overlay_drops_total{reason=\"malformed\"} 1")
    );
    // Garbage datagrams are refused the same way.
    let (conn, mut send, mut recv) = raw_link(48, node.handle.local_addr()).await;
    link::write_frame(&mut send, &Hello::ours(None).encode())
        .await
        .expect("write");
    link::read_frame(&mut recv).await.expect("answer");
    node.wait_for(WAIT, |e| matches!(e, OverlayEvent::PeerUp { .. }))
        .await;
    conn.send_datagram(vec![0x77; 100].into())
        .expect("datagram");
    node.wait_for(WAIT, |e| matches!(e, OverlayEvent::PeerDown { .. }))
        .await;
}

#[tokio::test]
async fn an_oversized_frame_drops_the_peer_before_it_is_read() {
    subscribe();
    let mut node = TestNode::start(config(49));
    let (conn, mut send, mut recv) = raw_link(50, node.handle.local_addr()).await;
    link::write_frame(&mut send, &Hello::ours(None).encode())
        .await
        .expect("write");
    link::read_frame(&mut recv).await.expect("answer");
    node.wait_for(WAIT, |e| matches!(e, OverlayEvent::PeerUp { .. }))
        .await;
    // Announce 4 GiB; only the length is sent.
    send.write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("length");
    node.wait_for(WAIT, |e| matches!(e, OverlayEvent::PeerDown { .. }))
        .await;
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, link::close::PROTOCOL.into())
        }
        other => panic!("unexpected close: {other}"),
    }
    assert!(
        node.handle
            .metrics()
            .contains("grove_overlay_drops_total{reason=\"oversized_frame\"} 1")
    );
}

#[tokio::test]
async fn an_oversized_hello_is_refused() {
    subscribe();
    let node = TestNode::start(config(51));
    let (conn, mut send, _recv) = raw_link(52, node.handle.local_addr()).await;
    send.write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("length");
    let _ = conn.closed().await;
    eventually(WAIT, || async {
        node.handle
            .metrics()
            .contains("grove_overlay_link_failures_total{reason=\"stream\"} 1")
    })
    .await;
}
