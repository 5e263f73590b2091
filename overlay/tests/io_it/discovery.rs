//! LAN discovery on loopback: two nodes find each other with no configuration but the port.

use std::time::Duration;

use grove_overlay::discovery::DiscoveryConfig;
use grove_overlay::driver::OverlayEvent;
use grove_overlay::link::LinkKind;
use grove_overlay::wire::Beacon;

use crate::support::{TestNode, config, eventually, secret, subscribe};

fn loopback_discovery(port: u16) -> DiscoveryConfig {
    DiscoveryConfig {
        enabled: true,
        port,
        include_loopback: true,
        // Loopback only: tests never send beyond this host.
        only_interfaces: Some(vec!["lo".to_owned()]),
    }
}

#[tokio::test]
async fn two_nodes_on_loopback_find_each_other() {
    subscribe();
    // A port of its own, so parallel test runs do not see each other's beacons.
    let port = 40000 + (std::process::id() % 10000) as u16;
    let mut a_cfg = config(60);
    a_cfg.discovery = loopback_discovery(port);
    let mut b_cfg = config(61);
    b_cfg.discovery = loopback_discovery(port);
    let mut a = TestNode::start(a_cfg);
    let mut b = TestNode::start(b_cfg);
    let (ka, kb) = (a.key(), b.key());
    let up = a
        .wait_for(Duration::from_secs(10), |e| {
            matches!(e, OverlayEvent::PeerUp { .. })
        })
        .await;
    assert!(matches!(up, OverlayEvent::PeerUp { key, .. } if key == kb));
    let up = b
        .wait_for(Duration::from_secs(10), |e| {
            matches!(e, OverlayEvent::PeerUp { .. })
        })
        .await;
    assert!(matches!(up, OverlayEvent::PeerUp { key, .. } if key == ka));
    let peers = a.handle.peers().await.expect("peers");
    assert_eq!(peers.len(), 1);
    assert!(matches!(peers[0].kind, LinkKind::Lan | LinkKind::Inbound));
    assert!(
        a.handle
            .metrics()
            .contains("grove_overlay_beacons_total{reason=\"accepted\"}")
    );
}

#[tokio::test]
async fn bad_beacons_are_dropped_and_counted_and_discovery_can_be_off() {
    subscribe();
    let port = 50000 + (std::process::id() % 10000) as u16;
    let mut cfg = config(62);
    cfg.discovery = loopback_discovery(port);
    let node = TestNode::start(cfg);
    // A node with discovery off on the same host: it sends no beacons and is never dialled.
    let quiet = TestNode::start(config(63));

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("socket");
    let to = ("127.0.0.1", port);
    sock.send_to(b"garbage", to).await.expect("send");
    let beacon = |seed: u8, network: Option<&[u8; 32]>| {
        let s = secret(seed);
        Beacon::new(s.public_key(), 1234, network)
            .encode_signed(&s)
            .expect("beacon")
    };
    let mut forged = beacon(64, None);
    forged[40] ^= 0x01;
    sock.send_to(&forged, to).await.expect("send");
    let other_net = beacon(65, Some(&[9; 32]));
    sock.send_to(&other_net, to).await.expect("send");

    eventually(Duration::from_secs(10), || async {
        let m = node.handle.metrics();
        m.contains("grove_overlay_beacons_total{reason=\"malformed\"} 1")
            && m.contains("grove_overlay_beacons_total{reason=\"bad_signature\"} 1")
            && m.contains("grove_overlay_beacons_total{reason=\"other_network\"} 1")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(node.handle.peers().await.expect("peers").is_empty());
    assert!(quiet.handle.peers().await.expect("peers").is_empty());
    assert!(
        quiet
            .handle
            .metrics()
            .contains("grove_overlay_beacons_sent_total 0")
    );
}
