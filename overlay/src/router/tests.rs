//! Unit tests of the router's state machines: tree distance, parent choice and bad news,
//! key routing, queues and timers. Multi-router stories live in `tests/it/network.rs`.

use std::time::{Duration, Instant};

use crate::identity::{NodeKeypair, PublicKey};
use crate::router::queue::{PeerQueue, TRAFFIC_QUEUE_LIMIT};
use crate::router::ring::KeyHop;
use crate::router::timer::{Timer, TimerTable};
use crate::router::{Config, Event, PeerId, Router, tree_distance};
use crate::wire::{Announcement, Frame, Teardown, Traffic, Watermark};

#[track_caller]
fn check_distance(a: &[u16], b: &[u16], expected: usize) {
    assert_eq!(tree_distance(a, b), expected, "{a:?} to {b:?}");
    assert_eq!(tree_distance(b, a), expected, "{b:?} to {a:?}");
}

#[test]
fn tree_distances() {
    check_distance(&[], &[], 0);
    check_distance(&[], &[1, 2], 2);
    check_distance(&[1, 2], &[1, 3], 2);
    check_distance(&[1, 2, 3], &[1, 2], 1);
    check_distance(&[4], &[5, 1, 1], 4);
}

fn kp(n: u8) -> NodeKeypair {
    NodeKeypair::from_seed([n; 32])
}

/// Keypairs sorted by public key, lowest first.
fn sorted_keys(seeds: &[u8]) -> Vec<NodeKeypair> {
    let mut v: Vec<NodeKeypair> = seeds.iter().map(|s| kp(*s)).collect();
    v.sort_by_key(|k| k.public_key());
    v
}

fn drain(r: &mut Router) -> Vec<Event> {
    while r.poll_transmit().is_some() {}
    std::iter::from_fn(|| r.poll_event()).collect()
}

/// A root's announcement as sent by `root` out of port 1.
fn root_announcement(root: &NodeKeypair, seq: u64) -> Vec<u8> {
    Frame::Announce(
        Announcement {
            root: root.public_key(),
            seq,
            hops: Vec::new(),
        }
        .extend_signed(root, 1),
    )
    .encode()
}

#[test]
fn parent_is_the_peer_with_the_highest_root_and_bad_news_holds() {
    let keys = sorted_keys(&[1, 2, 3, 4]);
    let (me, low, high) = (&keys[1], &keys[0], &keys[3]);
    let now = Instant::now();
    let mut r = Router::new(me.clone(), Config::default(), 1, now);
    r.handle_peer_up(PeerId(1), low.public_key(), now)
        .unwrap_or_default();
    r.handle_peer_up(PeerId(2), high.public_key(), now)
        .unwrap_or_default();
    drain(&mut r);

    // A root below our own key is no parent.
    assert_eq!(
        r.handle_frame(PeerId(1), &root_announcement(low, 1), now),
        Ok(())
    );
    assert_eq!(r.parent(), None);
    assert_eq!(
        r.handle_frame(PeerId(2), &root_announcement(high, 1), now),
        Ok(())
    );
    assert_eq!(r.parent(), Some(high.public_key()));
    assert_eq!(r.coords(), &[1]);
    assert!(drain(&mut r).contains(&Event::TreeParentChanged {
        parent: Some(high.public_key()),
        root: high.public_key()
    }));

    // The parent's link goes: no other candidate, so we are a root and hold.
    r.handle_peer_down(PeerId(2), now);
    assert_eq!(r.parent(), None);
    assert_eq!(r.root(), me.public_key());
    assert!(drain(&mut r).contains(&Event::TreeParentChanged {
        parent: None,
        root: me.public_key()
    }));

    // While holding, a better root is noted but not taken; after the hold, it is.
    r.handle_peer_up(PeerId(3), high.public_key(), now)
        .unwrap_or_default();
    assert_eq!(
        r.handle_frame(PeerId(3), &root_announcement(high, 2), now),
        Ok(())
    );
    assert_eq!(r.parent(), None);
    let later = now + Duration::from_secs(2);
    r.handle_timeout(later);
    assert_eq!(r.parent(), Some(high.public_key()));
}

#[test]
fn key_routing_moves_to_the_closest_key_from_above() {
    let keys = sorted_keys(&[10, 11, 12, 13, 14]);
    let now = Instant::now();
    // We are the middle key; our peers are the two below and the two above.
    let me = &keys[2];
    let mut r = Router::new(me.clone(), Config::default(), 1, now);
    for (i, k) in keys.iter().enumerate() {
        if i != 2 {
            r.handle_peer_up(PeerId(i as u64), k.public_key(), now)
                .unwrap_or_default();
        }
    }
    drain(&mut r);
    #[track_caller]
    fn check(r: &Router, target: PublicKey, expected: KeyHop, now: Instant) {
        assert_eq!(r.key_next_hop(&target, false, None, now), expected);
    }
    // An exact key goes straight to that peer.
    check(&r, keys[0].public_key(), KeyHop::Peer(PeerId(0), None), now);
    check(&r, keys[4].public_key(), KeyHop::Peer(PeerId(4), None), now);
    check(&r, me.public_key(), KeyHop::Local, now);
    // A key just above ours belongs to the next key up.
    let mut above = me.public_key();
    above.0[31] = above.0[31].wrapping_add(1);
    if above > me.public_key() && above < keys[3].public_key() {
        check(&r, above, KeyHop::Peer(PeerId(3), None), now);
    }
    // A bootstrap for our own key skips us and finds our successor.
    assert_eq!(
        r.key_next_hop(&me.public_key(), true, None, now),
        KeyHop::Peer(PeerId(3), None)
    );
}

/// A key-routed frame toward `dst` from `src`, carrying `watermark`, as a peer forwards it.
fn key_routed(src: PublicKey, dst: PublicKey, watermark: Option<Watermark>) -> Vec<u8> {
    Frame::Traffic(Traffic {
        hop_limit: 60,
        hops: 2,
        broken: false,
        probe: false,
        src,
        dst,
        src_coords: Vec::new(),
        dst_coords: None,
        watermark,
        route: Vec::new(),
        route_pos: 0,
        reverse: Vec::new(),
        payload: b"hi".to_vec(),
    })
    .encode()
}

/// Teardowns the router queued, by link.
fn teardowns(r: &mut Router) -> Vec<(PeerId, Teardown)> {
    std::iter::from_fn(|| r.poll_transmit())
        .filter_map(|tx| match Frame::decode(&tx.bytes) {
            Ok(Frame::Teardown(t)) => Some((tx.peer, t)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_frame_following_a_ring_route_we_do_not_hold_tears_that_route_down() {
    let keys = sorted_keys(&[20, 21, 22, 23, 24]);
    let now = Instant::now();
    let (dst, near, me, far, sender) = (&keys[0], &keys[1], &keys[2], &keys[3], &keys[4]);
    let mut r = Router::new(me.clone(), Config::default(), 1, now);
    r.handle_peer_up(PeerId(1), sender.public_key(), now)
        .unwrap_or_default();
    drain(&mut r);
    let frame = |w: &NodeKeypair| {
        key_routed(
            sender.public_key(),
            dst.public_key(),
            Some(Watermark {
                key: w.public_key(),
                seq: 7,
            }),
        )
    };

    // The sender's best route toward `dst` led to `near` through us, and we hold none: its
    // entry is stale, and it hears so over the very link the frame came by.
    assert_eq!(r.handle_frame(PeerId(1), &frame(near), now), Ok(()));
    let expected = Teardown {
        origin: near.public_key(),
        seq: 7,
        upstream: false,
    };
    assert_eq!(teardowns(&mut r), vec![(PeerId(1), expected)]);
    assert_eq!(r.metrics().stale_ring_routes, 1);

    // Our own key is closer to `dst` than `far`: the sender may have chosen us for it, so its
    // entry is not blamed. Nor is anything without a watermark.
    assert_eq!(r.handle_frame(PeerId(1), &frame(far), now), Ok(()));
    let plain = key_routed(sender.public_key(), dst.public_key(), None);
    assert_eq!(r.handle_frame(PeerId(1), &plain, now), Ok(()));
    assert_eq!(teardowns(&mut r), vec![]);

    // A route to our own peer is one we can always finish.
    r.handle_peer_up(PeerId(2), near.public_key(), now)
        .unwrap_or_default();
    drain(&mut r);
    assert_eq!(r.handle_frame(PeerId(1), &frame(near), now), Ok(()));
    assert_eq!(teardowns(&mut r), vec![]);
    assert_eq!(r.metrics().stale_ring_routes, 1);
}

#[test]
fn full_traffic_queue_drops_from_the_heaviest_source() {
    let (heavy, light) = (kp(1).public_key(), kp(2).public_key());
    let mut q = PeerQueue::default();
    for i in 0..TRAFFIC_QUEUE_LIMIT - 1 {
        assert!(!q.push_traffic(heavy, vec![i as u8]));
    }
    assert!(!q.push_traffic(light, vec![0xaa]));
    assert!(q.push_traffic(light, vec![0xbb]));
    assert_eq!(q.lens(), (0, TRAFFIC_QUEUE_LIMIT));
    let frames: Vec<Vec<u8>> = std::iter::from_fn(|| q.pop().map(|(b, _)| b)).collect();
    // The heavy source lost its oldest frame; both light frames survived.
    assert_eq!(frames.first(), Some(&vec![1u8]));
    assert!(frames.contains(&vec![0xaa]) && frames.contains(&vec![0xbb]));
}

#[test]
fn control_frames_go_first_and_reliably() {
    let mut q = PeerQueue::default();
    q.push_traffic(kp(1).public_key(), vec![1]);
    q.push_control(vec![2]);
    assert_eq!(q.pop(), Some((vec![2], true)));
    assert_eq!(q.pop(), Some((vec![1], false)));
    assert_eq!(q.pop(), None);
}

#[test]
fn timers_fire_once_in_order() {
    let now = Instant::now();
    let mut t = TimerTable::default();
    t.set(Timer::Bootstrap, now + Duration::from_secs(2));
    t.set(Timer::Reparent, now + Duration::from_secs(1));
    assert_eq!(t.next(), Some(now + Duration::from_secs(1)));
    assert_eq!(
        t.expired(now + Duration::from_secs(1)),
        vec![Timer::Reparent]
    );
    assert_eq!(t.expired(now + Duration::from_secs(1)), vec![]);
    t.stop(Timer::Bootstrap);
    assert_eq!(t.next(), None);
}

#[test]
fn lone_router_delivers_to_itself_and_asks_for_a_timer() {
    let now = Instant::now();
    let me = kp(5);
    let mut r = Router::new(me.clone(), Config::default(), 1, now);
    assert!(r.poll_timeout().is_some());
    assert_eq!(r.send(me.public_key(), b"self".to_vec(), now), Ok(()));
    assert_eq!(
        r.poll_event(),
        Some(Event::Delivered {
            from: me.public_key(),
            payload: b"self".to_vec(),
            hops: 0
        })
    );
    assert!(
        r.send(kp(6).public_key(), vec![0; super::MAX_PAYLOAD + 1], now)
            .is_err()
    );
}
