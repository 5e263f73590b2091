//! Peer links: set-up, refusal, duplicates, reconnection.

use std::time::Duration;

use grove_overlay::driver::OverlayEvent;
use grove_overlay::driver::statics::StaticPeer;
use grove_overlay::link::LinkKind;
use grove_overlay::tls::keys::NodeKey;

use crate::support::{TestNode, config, eventually, secret, subscribe};

const WAIT: Duration = Duration::from_secs(10);

fn is_up(key: NodeKey) -> impl Fn(&OverlayEvent) -> bool {
    move |e| matches!(e, OverlayEvent::PeerUp { key: k, .. } if *k == key)
}

#[tokio::test]
async fn static_peer_links_up_both_ways() {
    subscribe();
    let mut a = TestNode::start(config(1));
    let mut cfg = config(2);
    cfg.static_peers.push(StaticPeer {
        addr: a.handle.local_addr(),
        key: Some(a.key()),
    });
    let mut b = TestNode::start(cfg);

    let up = b.wait_for(WAIT, is_up(a.key())).await;
    assert_eq!(
        up,
        OverlayEvent::PeerUp {
            key: a.key(),
            kind: LinkKind::Static
        }
    );
    let up = a.wait_for(WAIT, is_up(b.key())).await;
    assert_eq!(
        up,
        OverlayEvent::PeerUp {
            key: b.key(),
            kind: LinkKind::Inbound
        }
    );
    a.wait_for(WAIT, |e| *e == OverlayEvent::NodeReachable(b.key()))
        .await;

    let peers = b.handle.peers().await.expect("peers");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].key, a.key());
    assert_eq!(peers[0].negotiated.version, 1);
    let snapshot = a.handle.snapshot().await.expect("snapshot");
    assert_eq!(snapshot["peers"][0]["key"], b.key().to_hex());
    assert_eq!(snapshot["routing"]["peers"][0]["key"], b.key().to_hex());
    assert!(
        a.handle.metrics().contains("grove_overlay_peers 1"),
        "{}",
        a.handle.metrics()
    );

    b.handle.shutdown().await.expect("shutdown");
    let down = a
        .wait_for(WAIT, |e| matches!(e, OverlayEvent::PeerDown { .. }))
        .await;
    assert_eq!(
        down,
        OverlayEvent::PeerDown {
            key: b.key(),
            kind: LinkKind::Inbound
        }
    );
    a.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn address_only_static_peer_learns_the_key() {
    subscribe();
    let a = TestNode::start(config(3));
    let mut cfg = config(4);
    cfg.static_peers.push(StaticPeer {
        addr: a.handle.local_addr(),
        key: None,
    });
    let mut b = TestNode::start(cfg);
    b.wait_for(WAIT, is_up(a.key())).await;
    let snapshot = b.handle.snapshot().await.expect("snapshot");
    assert_eq!(snapshot["static_peers"][0]["key"], a.key().to_hex());
}

#[tokio::test]
async fn wrong_dialled_key_is_refused() {
    subscribe();
    let a = TestNode::start(config(5));
    let impostor = secret(99).public_key();
    let mut cfg = config(6);
    cfg.static_peers.push(StaticPeer {
        addr: a.handle.local_addr(),
        key: Some(impostor),
    });
    let b = TestNode::start(cfg);
    eventually(WAIT, || async {
        b.handle
            .metrics()
            .contains("grove_overlay_link_failures_total{reason=\"tls\"}")
    })
    .await;
    assert!(b.handle.peers().await.expect("peers").is_empty());
    assert!(a.handle.peers().await.expect("peers").is_empty());
}

#[tokio::test]
async fn network_id_mismatch_is_refused_and_counted_on_both_sides() {
    subscribe();
    let mut cfg_a = config(7);
    cfg_a.network_id = Some([1; 32]);
    let a = TestNode::start(cfg_a);
    let mut cfg_b = config(8);
    cfg_b.network_id = Some([2; 32]);
    cfg_b.static_peers.push(StaticPeer {
        addr: a.handle.local_addr(),
        key: Some(a.key()),
    });
    let b = TestNode::start(cfg_b);
    let refused = "grove_overlay_hello_refused_total{reason=\"network_id\"}";
    eventually(WAIT, || async {
        a.handle.metrics().contains(refused) && b.handle.metrics().contains(refused)
    })
    .await;
    assert!(a.handle.peers().await.expect("peers").is_empty());
    assert!(b.handle.peers().await.expect("peers").is_empty());

    // The same id links.
    let mut cfg_c = config(9);
    cfg_c.network_id = Some([1; 32]);
    cfg_c.static_peers.push(StaticPeer {
        addr: a.handle.local_addr(),
        key: Some(a.key()),
    });
    let mut c = TestNode::start(cfg_c);
    c.wait_for(WAIT, is_up(a.key())).await;
}

#[tokio::test]
async fn simultaneous_dials_keep_one_link_chosen_the_same_way_on_both_ends() {
    subscribe();
    // Bind both first so each can name the other.
    let mut a = TestNode::start(config(10));
    let mut b = TestNode::start(config(11));
    let (ka, kb) = (a.key(), b.key());
    let (addr_a, addr_b) = (a.handle.local_addr(), b.handle.local_addr());
    let (ha, hb) = (a.handle.clone(), b.handle.clone());
    let (r1, r2) = tokio::join!(
        ha.add_static_peer(StaticPeer {
            addr: addr_b,
            key: Some(kb)
        }),
        hb.add_static_peer(StaticPeer {
            addr: addr_a,
            key: Some(ka)
        }),
    );
    r1.expect("add");
    r2.expect("add");
    a.wait_for(WAIT, is_up(kb)).await;
    b.wait_for(WAIT, is_up(ka)).await;
    // Let any duplicate settle, then both ends must hold the same single link: the one the
    // higher key dialled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pa = a.handle.peers().await.expect("peers");
    let pb = b.handle.peers().await.expect("peers");
    assert_eq!(pa.len(), 1, "{pa:?}");
    assert_eq!(pb.len(), 1, "{pb:?}");
    let (higher, lower) = if ka > kb { (&pa, &pb) } else { (&pb, &pa) };
    assert_eq!(higher[0].kind, LinkKind::Static);
    assert_eq!(lower[0].kind, LinkKind::Inbound);
}

#[tokio::test]
async fn static_peer_reconnects_after_the_other_side_restarts() {
    subscribe();
    let a = TestNode::start(config(12));
    let addr_a = a.handle.local_addr();
    let key_a = a.key();
    let mut cfg = config(13);
    cfg.static_peers.push(StaticPeer {
        addr: addr_a,
        key: Some(key_a),
    });
    let mut b = TestNode::start(cfg);
    b.wait_for(WAIT, is_up(key_a)).await;

    a.handle.shutdown().await.expect("shutdown");
    b.wait_for(
        WAIT,
        |e| matches!(e, OverlayEvent::PeerDown { key, .. } if *key == key_a),
    )
    .await;
    // Down for a while, so at least one redial fails and backs off.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut cfg_a = config(12);
    cfg_a.bind = addr_a;
    let _a = TestNode::start(cfg_a);
    let up = b.wait_for(Duration::from_secs(20), is_up(key_a)).await;
    assert_eq!(
        up,
        OverlayEvent::PeerUp {
            key: key_a,
            kind: LinkKind::Static
        }
    );
}
