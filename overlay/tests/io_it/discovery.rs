//! LAN discovery on loopback: two nodes find each other with no configuration but the port.

use std::time::Duration;

use grove_overlay::discovery::DiscoveryConfig;
use grove_overlay::driver::OverlayEvent;
use grove_overlay::link::LinkKind;

use crate::support::{TestNode, config, subscribe};

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
    let port = 40000 + (std::process::id() % 20000) as u16;
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
