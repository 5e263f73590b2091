//! Records on the ring between real nodes over loopback QUIC: a record published on one node
//! is found from a node two hops away, and the handle refuses what a store would refuse.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grove_overlay::driver::HandleError;
use grove_overlay::driver::statics::StaticPeer;
use grove_overlay::identity::NodeKeypair;
use grove_overlay::wire::{MAX_RECORD_VALUE, Record};

use crate::support::{TestNode, config, eventually, subscribe};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A line a — b — c: b dials a, c dials b.
fn line(first_seed: u8) -> Vec<TestNode> {
    let a = TestNode::start(config(first_seed));
    let mut cb = config(first_seed + 1);
    cb.static_peers.push(StaticPeer {
        addr: a.handle.local_addr(),
        key: Some(a.key()),
    });
    let b = TestNode::start(cb);
    let mut cc = config(first_seed + 2);
    cc.static_peers.push(StaticPeer {
        addr: b.handle.local_addr(),
        key: Some(b.key()),
    });
    let c = TestNode::start(cc);
    vec![a, b, c]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_published_on_one_node_is_found_two_hops_away() {
    subscribe();
    let nodes = line(70);
    let home = NodeKeypair::from_seed([99; 32]);
    let record = Record::signed(
        &home,
        home.public_key(),
        1,
        unix_now() + 600,
        b"replicas".to_vec(),
    )
    .unwrap();
    let (a, c) = (&nodes[0].handle, &nodes[2].handle);
    // Wait until a reaches c, so the ring is whole before publishing.
    eventually(Duration::from_secs(30), || async {
        c.peers().await.is_ok_and(|p| !p.is_empty()) && a.peers().await.is_ok_and(|p| !p.is_empty())
    })
    .await;
    a.publish(record.clone()).await.unwrap();
    let mut found = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while found.is_none() && tokio::time::Instant::now() < deadline {
        found = c
            .lookup(home.public_key(), Duration::from_secs(5))
            .await
            .unwrap();
        if found.is_none() {
            // The ring may still be settling; the publisher sends again at its next round.
            a.publish(record.clone()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(found, Some(record));
    // A key nobody published.
    let nobody = NodeKeypair::from_seed([98; 32]).public_key();
    assert_eq!(
        c.lookup(nobody, Duration::from_secs(5)).await.unwrap(),
        None
    );
    for n in &nodes {
        n.handle.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_refuses_what_no_store_would_keep() {
    subscribe();
    let node = TestNode::start(config(80));
    let h = &node.handle;
    let home = NodeKeypair::from_seed([97; 32]);
    let other = NodeKeypair::from_seed([96; 32]).public_key();
    let expires = unix_now() + 600;
    let refused = |r: Result<(), HandleError>| match r {
        Err(HandleError::Record(e)) => e.reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Someone else's key.
    let r = Record::signed(&home, other, 1, expires, vec![1]).unwrap();
    assert_eq!(refused(h.publish(r).await), "record_forbidden");
    // A forged signature.
    let mut r = Record::signed(&home, home.public_key(), 1, expires, vec![1]).unwrap();
    r.value = vec![2];
    assert_eq!(refused(h.publish(r).await), "record_invalid");
    // An oversized value, signed as if it were allowed.
    let mut r = Record::signed(&home, home.public_key(), 1, expires, vec![]).unwrap();
    r.value = vec![0; MAX_RECORD_VALUE + 1];
    assert_eq!(refused(h.publish(r).await), "record_invalid");
    // A lifetime over a day.
    let r = Record::signed(&home, home.public_key(), 1, expires + 2 * 86_400, vec![]).unwrap();
    assert_eq!(refused(h.publish(r).await), "record_invalid");
    // An older sequence than one published.
    let r = Record::signed(&home, home.public_key(), 5, expires, vec![]).unwrap();
    h.publish(r).await.unwrap();
    let r = Record::signed(&home, home.public_key(), 4, expires, vec![]).unwrap();
    assert_eq!(refused(h.publish(r).await), "record_stale");
    node.handle.shutdown().await.unwrap();
}
