//! Hostile and malformed frames against a real router: each is refused (or dropped), counted
//! under its reason, and never panics.

use std::time::{Duration, Instant};

use grove_overlay::identity::{NodeKeypair, Signature};
use grove_overlay::router::{Config, DropReason, Event, FrameError, PeerId, Router};
use grove_overlay::wire::{
    Announcement, Bootstrap, Frame, MAX_FRAME_LEN, MAX_SEEK_WIDTH, PathAnswer, PathFind, PathReply,
    PathSeek, Traffic, WireError,
};

const PEER: PeerId = PeerId(1);

/// A router with one peer whose key we hold, so we can forge or sign as that peer.
fn setup() -> (Router, NodeKeypair, Instant) {
    super::subscribe();
    let now = Instant::now();
    let mut r = Router::new(NodeKeypair::from_seed([1; 32]), Config::default(), 1, now);
    let peer = NodeKeypair::from_seed([2; 32]);
    r.handle_peer_up(PEER, peer.public_key(), now)
        .unwrap_or_else(|e| panic!("peer up: {e}"));
    while r.poll_transmit().is_some() {}
    while r.poll_event().is_some() {}
    (r, peer, now)
}

/// Feeds `bytes` from the peer and checks the result and the counter for `reason`.
#[track_caller]
fn check(bytes: &[u8], expected: Result<(), FrameError>, reason: DropReason) {
    let (mut r, _, now) = setup();
    assert_eq!(r.handle_frame(PEER, bytes, now), expected);
    assert_eq!(r.metrics().drops(reason), 1, "{reason:?} not counted");
    if expected.is_err() {
        let ev =
            std::iter::from_fn(|| r.poll_event()).find(|e| matches!(e, Event::Misbehaving { .. }));
        assert_eq!(ev, Some(Event::Misbehaving { peer: PEER, reason }));
    }
}

fn refused(reason: DropReason) -> Result<(), FrameError> {
    Err(FrameError::Refused(reason))
}

fn announcement_from(signer: &NodeKeypair, seq: u64) -> Announcement {
    Announcement {
        root: signer.public_key(),
        seq,
        hops: Vec::new(),
    }
    .extend_signed(signer, 1)
}

#[test]
fn garbage_is_malformed() {
    check(
        &[0xee, 1, 2],
        Err(FrameError::Malformed(WireError::UnknownType(0xee))),
        DropReason::Malformed,
    );
    check(
        &[],
        Err(FrameError::Malformed(WireError::Truncated)),
        DropReason::Malformed,
    );
    check(
        &[2, 0, 0],
        Err(FrameError::Malformed(WireError::Truncated)),
        DropReason::Malformed,
    );
}

#[test]
fn oversized_frames_are_refused_before_parsing() {
    let big = vec![3u8; MAX_FRAME_LEN + 1];
    check(
        &big,
        Err(FrameError::Malformed(WireError::Oversized(
            MAX_FRAME_LEN + 1,
        ))),
        DropReason::Oversized,
    );
}

#[test]
fn frames_from_unknown_peers_are_refused() {
    let (mut r, peer, now) = setup();
    let bytes = Frame::Announce(announcement_from(&peer, 1)).encode();
    assert_eq!(
        r.handle_frame(PeerId(99), &bytes, now),
        Err(FrameError::UnknownPeer)
    );
    assert_eq!(r.metrics().drops(DropReason::UnknownPeer), 1);
}

#[test]
fn announcement_with_a_forged_signature() {
    let (_, peer, _) = setup();
    let mut a = announcement_from(&peer, 1);
    a.hops[0].signature = Signature([7; 64]);
    check(
        &Frame::Announce(a).encode(),
        refused(DropReason::BadSignature),
        DropReason::BadSignature,
    );
}

#[test]
fn announcement_not_sent_by_the_peer() {
    let stranger = NodeKeypair::from_seed([3; 32]);
    check(
        &Frame::Announce(announcement_from(&stranger, 1)).encode(),
        refused(DropReason::BadAnnouncement),
        DropReason::BadAnnouncement,
    );
}

#[test]
fn announcement_going_backwards_in_sequence() {
    let (mut r, peer, now) = setup();
    assert_eq!(
        r.handle_frame(
            PEER,
            &Frame::Announce(announcement_from(&peer, 5)).encode(),
            now
        ),
        Ok(())
    );
    let old = Frame::Announce(announcement_from(&peer, 4)).encode();
    assert_eq!(
        r.handle_frame(PEER, &old, now),
        refused(DropReason::BadAnnouncement)
    );
    assert_eq!(r.metrics().drops(DropReason::BadAnnouncement), 1);
}

#[test]
fn bootstrap_with_a_forged_signature() {
    let (r, peer, _) = setup();
    let b = Bootstrap {
        origin: peer.public_key(),
        seq: 1,
        root: r.root(),
        root_seq: 1,
        signature: Signature([9; 64]),
        hop_limit: 10,
        watermark: None,
    };
    check(
        &Frame::Bootstrap(b).encode(),
        refused(DropReason::BadSignature),
        DropReason::BadSignature,
    );
}

#[test]
fn bootstrap_for_another_root_is_dropped() {
    let (_, peer, _) = setup();
    let other = NodeKeypair::from_seed([4; 32]).public_key();
    let sig = peer.sign(&Bootstrap::signing_bytes(&peer.public_key(), 1, &other, 1));
    let b = Bootstrap {
        origin: peer.public_key(),
        seq: 1,
        root: other,
        root_seq: 1,
        signature: Signature(sig),
        hop_limit: 10,
        watermark: None,
    };
    check(
        &Frame::Bootstrap(b).encode(),
        Ok(()),
        DropReason::RootMismatch,
    );
}

#[test]
fn replayed_bootstrap_is_dropped() {
    let (mut r, peer, now) = setup();
    let root = r.root();
    let sig = peer.sign(&Bootstrap::signing_bytes(&peer.public_key(), 3, &root, 1));
    let b = Frame::Bootstrap(Bootstrap {
        origin: peer.public_key(),
        seq: 3,
        root,
        root_seq: 1,
        signature: Signature(sig),
        hop_limit: 10,
        watermark: None,
    })
    .encode();
    assert_eq!(r.handle_frame(PEER, &b, now), Ok(()));
    assert_eq!(r.handle_frame(PEER, &b, now), Ok(()));
    assert_eq!(r.metrics().drops(DropReason::DuplicateBootstrap), 1);
}

#[test]
fn path_find_with_impossible_hops() {
    let (_, peer, _) = setup();
    let target = NodeKeypair::from_seed([5; 32]).public_key();
    let p = PathFind {
        searcher: peer.public_key(),
        target,
        nonce: 1,
        hop_limit: 3,
        hops: 0,
    };
    check(
        &Frame::PathFind(p).encode(),
        refused(DropReason::BadPath),
        DropReason::BadPath,
    );
}

#[test]
fn path_find_flood_is_rate_limited() {
    let (mut r, peer, now) = setup();
    let target = NodeKeypair::from_seed([5; 32]).public_key();
    let limit = Config::default().path_finds_per_peer_per_sec as u64;
    let mut refusals = 0;
    for nonce in 0..=limit {
        let p = PathFind {
            searcher: peer.public_key(),
            target,
            nonce,
            hop_limit: 3,
            hops: 1,
        };
        if r.handle_frame(PEER, &Frame::PathFind(p).encode(), now)
            .is_err()
        {
            refusals += 1;
        }
    }
    assert_eq!(refusals, 1);
    assert_eq!(r.metrics().drops(DropReason::RateLimited), 1);
    // A second later the peer may search again.
    let p = PathFind {
        searcher: peer.public_key(),
        target,
        nonce: 1_000_000,
        hop_limit: 3,
        hops: 1,
    };
    assert_eq!(
        r.handle_frame(
            PEER,
            &Frame::PathFind(p).encode(),
            now + Duration::from_secs(1)
        ),
        Ok(())
    );
}

#[test]
fn path_reply_without_a_search_is_dropped() {
    let (_, peer, _) = setup();
    let mut reply = PathReply {
        searcher: NodeKeypair::from_seed([6; 32]).public_key(),
        target: peer.public_key(),
        nonce: 9,
        hops: Vec::new(),
    };
    reply.push_signed(&peer, 0, 1);
    check(
        &Frame::PathReply(reply).encode(),
        Ok(()),
        DropReason::NoBreadcrumb,
    );
}

#[test]
fn path_answer_without_a_search_is_dropped() {
    let (_, peer, _) = setup();
    let answer = PathAnswer::new(&peer, NodeKeypair::from_seed([6; 32]).public_key(), 9);
    check(
        &Frame::PathAnswer(answer).encode(),
        Ok(()),
        DropReason::NoBreadcrumb,
    );
}

#[test]
fn traffic_out_of_hops_is_dropped() {
    let (r, peer, _) = setup();
    let t = Traffic {
        hop_limit: 0,
        hops: 9,
        broken: false,
        probe: false,
        src: peer.public_key(),
        dst: NodeKeypair::from_seed([8; 32]).public_key(),
        src_coords: Vec::new(),
        dst_coords: None,
        watermark: None,
        route: Vec::new(),
        route_pos: 0,
        reverse: Vec::new(),
        payload: b"x".to_vec(),
    };
    let _ = r;
    check(&Frame::Traffic(t).encode(), Ok(()), DropReason::HopLimit);
}

fn seek(searcher: &NodeKeypair, nonce: u64, hops: u8, width: u8) -> PathSeek {
    PathSeek {
        searcher: searcher.public_key(),
        target: NodeKeypair::from_seed([5; 32]).public_key(),
        nonce,
        hop_limit: 6,
        hops,
        width,
        target_coords: vec![1, 2],
    }
}

#[test]
fn path_seek_in_another_nodes_name_is_refused() {
    let (_, _, _) = setup();
    // On its first hop a search must come from its searcher.
    let other = NodeKeypair::from_seed([7; 32]);
    check(
        &Frame::PathSeek(seek(&other, 1, 1, 4)).encode(),
        refused(DropReason::BadPath),
        DropReason::BadPath,
    );
}

#[test]
fn path_seek_with_impossible_width_or_hops() {
    let (_, peer, _) = setup();
    for bad in [
        seek(&peer, 1, 1, 0),
        seek(&peer, 1, 1, MAX_SEEK_WIDTH + 1),
        seek(&peer, 1, 0, 4),
        seek(&peer, 1, 7, 4),
        PathSeek {
            hop_limit: 200,
            ..seek(&peer, 1, 1, 4)
        },
    ] {
        check(
            &Frame::PathSeek(bad).encode(),
            refused(DropReason::BadPath),
            DropReason::BadPath,
        );
    }
}

#[test]
fn path_seeks_from_one_origin_are_rate_limited_without_blaming_the_peer() {
    let (mut r, peer, now) = setup();
    let limit = u64::from(Config::default().seeks_per_origin_per_sec);
    // Passed on by the peer from a searcher further away: over the origin's limit, the
    // searches are dropped and counted, and the peer that passed them on is not at fault.
    let far = NodeKeypair::from_seed([8; 32]);
    for nonce in 0..limit + 5 {
        assert_eq!(
            r.handle_frame(
                PEER,
                &Frame::PathSeek(seek(&far, nonce, 2, 1)).encode(),
                now
            ),
            Ok(())
        );
    }
    assert_eq!(r.metrics().drops(DropReason::OriginRateLimited), 5);
    assert!(std::iter::from_fn(|| r.poll_event()).all(|e| !matches!(e, Event::Misbehaving { .. })));
    // The peer's own searches have their own allowance.
    assert_eq!(
        r.handle_frame(PEER, &Frame::PathSeek(seek(&peer, 0, 1, 1)).encode(), now),
        Ok(())
    );
    assert_eq!(r.metrics().drops(DropReason::OriginRateLimited), 5);
    // A second later the far origin may search again.
    let later = now + Duration::from_secs(1);
    assert_eq!(
        r.handle_frame(
            PEER,
            &Frame::PathSeek(seek(&far, 999, 2, 1)).encode(),
            later
        ),
        Ok(())
    );
    assert_eq!(r.metrics().drops(DropReason::OriginRateLimited), 5);
}

#[test]
fn wide_path_seeks_use_up_the_peer_budget_faster() {
    let (mut r, _, now) = setup();
    let budget = u64::from(Config::default().path_finds_per_peer_per_sec);
    let width = MAX_SEEK_WIDTH;
    let fit = budget / u64::from(width);
    let mut refused_n = 0;
    for nonce in 0..fit + 1 {
        // Forged origins, each its own, so only the per-peer budget stands in the way.
        let origin = NodeKeypair::from_seed([(nonce % 200) as u8 + 20; 32]);
        let s = seek(&origin, nonce, 2, width);
        if r.handle_frame(PEER, &Frame::PathSeek(s).encode(), now)
            .is_err()
        {
            refused_n += 1;
        }
    }
    assert_eq!(
        refused_n, 1,
        "budget {budget} of width {width} fits {fit} searches"
    );
    assert_eq!(r.metrics().drops(DropReason::RateLimited), 1);
}
