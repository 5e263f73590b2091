//! Wire format tests: byte-pinned hex snapshots built from fixed keys, round-trip property
//! tests, `encoded_len` checks, and refusals of malformed input.

use proptest::prelude::*;

use crate::identity::{NodeKeypair, PublicKey, Signature};
use crate::wire::*;

fn kp(n: u8) -> NodeKeypair {
    NodeKeypair::from_seed([n; 32])
}

/// Encodes `frame`, compares with the pinned hex, and checks decode and `encoded_len`.
#[track_caller]
fn check_frame(frame: &Frame, expected_hex: &str) {
    let bytes = frame.encode();
    assert_eq!(
        hex::encode(&bytes),
        expected_hex,
        "encoding of {frame:?} moved"
    );
    assert_eq!(frame.encoded_len(), bytes.len());
    assert_eq!(Frame::decode(&bytes).as_ref(), Ok(frame));
}

/// Decoding `bytes` fails with `expected`.
#[track_caller]
fn check_refused(bytes: &[u8], expected: WireError) {
    assert_eq!(Frame::decode(bytes), Err(expected));
}

fn sample_announcement() -> Announcement {
    let root = Announcement {
        root: kp(9).public_key(),
        seq: 7,
        hops: Vec::new(),
    };
    root.extend_signed(&kp(9), 3).extend_signed(&kp(2), 1)
}

#[test]
fn announcement_bytes() {
    let a = sample_announcement();
    assert_eq!(a.verify(), Ok(()));
    assert_eq!(a.sender_coords(), vec![3]);
    assert_eq!(a.receiver_coords(), vec![3, 1]);
    check_frame(
        &Frame::Announce(a),
        include_str!("snapshots/announce.hex").trim(),
    );
}

#[test]
fn bootstrap_bytes() {
    let k = kp(1);
    let root = kp(9).public_key();
    let sig = Signature(k.sign(&Bootstrap::signing_bytes(&k.public_key(), 5, &root, 7)));
    let b = Bootstrap {
        origin: k.public_key(),
        seq: 5,
        root,
        root_seq: 7,
        signature: sig,
        hop_limit: 200,
        watermark: Some(Watermark {
            key: kp(3).public_key(),
            seq: 2,
        }),
    };
    assert!(b.verify());
    check_frame(
        &Frame::Bootstrap(b),
        include_str!("snapshots/bootstrap.hex").trim(),
    );
}

#[test]
fn teardown_bytes() {
    let t = Teardown {
        origin: PublicKey([0xab; 32]),
        seq: 0x0102030405060708,
        upstream: true,
    };
    let expected = format!("06{}010203040506070801", "ab".repeat(32));
    check_frame(&Frame::Teardown(t), &expected);
    let mut bad = Frame::Teardown(t).encode();
    if let Some(last) = bad.last_mut() {
        *last = 2;
    }
    check_refused(&bad, WireError::Invalid("teardown direction"));
}

#[test]
fn traffic_bytes() {
    let t = Traffic {
        hop_limit: 64,
        hops: 2,
        broken: false,
        probe: false,
        src: kp(1).public_key(),
        dst: kp(2).public_key(),
        src_coords: vec![1, 2],
        dst_coords: Some(vec![3]),
        watermark: None,
        route: vec![4, 5, 6],
        route_pos: 1,
        reverse: vec![7],
        payload: b"hi".to_vec(),
    };
    check_frame(
        &Frame::Traffic(t),
        include_str!("snapshots/traffic.hex").trim(),
    );
}

#[test]
fn path_find_bytes() {
    let p = PathFind {
        searcher: kp(1).public_key(),
        target: kp(2).public_key(),
        nonce: 42,
        hop_limit: 6,
        hops: 1,
    };
    check_frame(
        &Frame::PathFind(p),
        include_str!("snapshots/path_find.hex").trim(),
    );
}

#[test]
fn path_seek_bytes() {
    let p = PathSeek {
        searcher: kp(1).public_key(),
        target: kp(2).public_key(),
        nonce: 42,
        hop_limit: 6,
        hops: 1,
        width: 4,
        target_coords: vec![3, 258],
    };
    check_frame(
        &Frame::PathSeek(p),
        include_str!("snapshots/path_seek.hex").trim(),
    );
}

#[test]
fn path_seek_with_a_zero_port_in_its_coordinates_is_refused() {
    let mut bytes = Frame::PathSeek(PathSeek {
        searcher: kp(1).public_key(),
        target: kp(2).public_key(),
        nonce: 1,
        hop_limit: 6,
        hops: 1,
        width: 4,
        target_coords: vec![3],
    })
    .encode();
    let n = bytes.len();
    bytes[n - 2..].copy_from_slice(&[0, 0]);
    check_refused(&bytes, WireError::ZeroPort);
}

#[test]
fn path_reply_bytes() {
    let mut r = PathReply {
        searcher: kp(1).public_key(),
        target: kp(2).public_key(),
        nonce: 42,
        hops: Vec::new(),
    };
    r.push_signed(&kp(2), 0, 3);
    r.push_signed(&kp(3), 1, 2);
    assert_eq!(r.verify(), Ok(()));
    check_frame(
        &Frame::PathReply(r),
        include_str!("snapshots/path_reply.hex").trim(),
    );
}

fn sample_answer() -> PathAnswer {
    let mut a = PathAnswer::new(&kp(2), kp(1).public_key(), 42);
    a.hops.push(AnswerHop {
        prefix: key_prefix(&kp(3).public_key()),
        in_port: 1,
    });
    a
}

#[test]
fn path_answer_bytes() {
    let a = sample_answer();
    assert_eq!(a.verify(), Ok(()));
    check_frame(
        &Frame::PathAnswer(a),
        include_str!("snapshots/path_answer.hex").trim(),
    );
}

/// What the searcher checks of a compact answer: the target's signature on this search, and a
/// hop list that starts at the target and never repeats; any other change is refused.
#[test]
fn path_answer_checks() {
    let mut other_nonce = sample_answer();
    other_nonce.nonce = 43;
    assert_eq!(other_nonce.verify(), Err(WireError::BadSignature));
    let mut other_searcher = sample_answer();
    other_searcher.searcher = kp(4).public_key();
    assert_eq!(other_searcher.verify(), Err(WireError::BadSignature));
    // Signed by a relay, not by the target it names.
    let mut by_relay = PathAnswer::new(&kp(3), kp(1).public_key(), 42);
    by_relay.target = kp(2).public_key();
    by_relay.hops[0].prefix = key_prefix(&kp(2).public_key());
    assert_eq!(by_relay.verify(), Err(WireError::BadSignature));
    let mut not_at_target = sample_answer();
    not_at_target.hops.remove(0);
    assert!(matches!(not_at_target.verify(), Err(WireError::Invalid(_))));
    let mut repeated = sample_answer();
    let again = repeated.hops[1];
    repeated.hops.push(again);
    assert!(matches!(repeated.verify(), Err(WireError::Invalid(_))));
    let mut through_searcher = sample_answer();
    through_searcher.hops[1].prefix = key_prefix(&kp(1).public_key());
    assert!(matches!(
        through_searcher.verify(),
        Err(WireError::Invalid(_))
    ));
    let mut zero = sample_answer();
    zero.hops[1].in_port = 0;
    assert_eq!(zero.verify(), Err(WireError::ZeroPort));
    let empty = PathAnswer {
        hops: Vec::new(),
        ..sample_answer()
    };
    assert!(empty.verify().is_err());
    // A hop count past the limit is refused before the hops are read.
    let mut long = Frame::PathAnswer(sample_answer()).encode();
    long[1 + 32 + 32 + 8 + 64] = (MAX_ROUTE_LEN + 1) as u8;
    assert!(matches!(
        Frame::decode(&long),
        Err(WireError::TooLong { .. })
    ));
    let short = Frame::PathAnswer(sample_answer()).encode();
    check_refused(&short[..short.len() - 1], WireError::Truncated);
}

#[test]
fn hello_bytes_and_negotiation() {
    // The snapshot pins the layout; the bits are those of the first build.
    let h = Hello {
        version: 1,
        capabilities: CAP_SOURCE_ROUTING | CAP_PATH_SEARCH,
        network_id: Some([0xab; 32]),
    };
    assert_eq!(CAPABILITIES & h.capabilities, h.capabilities);
    let bytes = h.encode();
    assert_eq!(
        hex::encode(&bytes),
        include_str!("snapshots/hello.hex").trim()
    );
    assert_eq!(h.encoded_len(), bytes.len());
    assert_eq!(Hello::decode(&bytes), Ok(h));

    let old = Hello {
        version: 1,
        capabilities: CAP_SOURCE_ROUTING | (1 << 31),
        network_id: Some([0xab; 32]),
    };
    let newer = Hello { version: 9, ..h };
    assert_eq!(
        negotiate(&newer, &old),
        Ok(Negotiated {
            version: 1,
            capabilities: CAP_SOURCE_ROUTING
        })
    );
    assert_eq!(
        negotiate(&h, &Hello::ours(None)),
        Err(HelloError::NetworkMismatch)
    );
    assert_eq!(
        negotiate(&h, &Hello { version: 0, ..h }),
        Err(HelloError::Version {
            theirs: 0,
            min: MIN_VERSION
        })
    );
    assert_eq!(
        Hello::decode(b"GRVX\x01\0\0\0\0\0"),
        Err(WireError::BadMagic)
    );
    assert_eq!(
        Hello::decode(b"GRVH\x01\0\0\0\0\x02"),
        Err(WireError::Invalid("network id marker"))
    );
    assert_eq!(
        Hello::decode(b"GRVH\x01\0\0\0\0\0\0"),
        Err(WireError::TrailingBytes(1))
    );
}

#[test]
fn beacon_bytes_and_signature() {
    let k = kp(4);
    let b = Beacon::new(k.public_key(), 47114, Some(&[7; 32]));
    let bytes = b.encode_signed(&k).unwrap_or_default();
    assert_eq!(bytes.len(), BEACON_LEN);
    assert_eq!(b.encoded_len(), bytes.len());
    assert_eq!(
        hex::encode(&bytes),
        include_str!("snapshots/beacon.hex").trim()
    );
    assert_eq!(Beacon::decode_verified(&bytes), Ok(b.clone()));
    assert_eq!(b.encode_signed(&kp(5)), Err(WireError::KeyMismatch));
    let mut forged = bytes.clone();
    forged[40] ^= 1;
    assert_eq!(
        Beacon::decode_verified(&forged),
        Err(WireError::BadSignature)
    );
    assert_eq!(
        Beacon::decode_verified(&bytes[..BEACON_LEN - 1]),
        Err(WireError::Truncated)
    );
    assert_ne!(
        Beacon::network_hash(None),
        Beacon::network_hash(Some(&[0; 32]))
    );
}

#[test]
fn malformed_frames_are_refused() {
    check_refused(&[], WireError::Truncated);
    check_refused(&[0x77], WireError::UnknownType(0x77));
    check_refused(
        &vec![3u8; MAX_FRAME_LEN + 1],
        WireError::Oversized(MAX_FRAME_LEN + 1),
    );
    let mut ann = Frame::Announce(sample_announcement()).encode();
    ann.push(0);
    check_refused(&ann, WireError::TrailingBytes(1));
    ann.truncate(ann.len() - 10);
    check_refused(&ann, WireError::Truncated);
    // A traffic frame with an unknown flag bit.
    let mut t = vec![3u8, 0x80];
    t.extend_from_slice(&[0; 80]);
    check_refused(&t, WireError::UnknownFlags(0x80));
    // Port 0 inside coordinates.
    let mut t = vec![3u8, 0, 1, 0];
    t.extend_from_slice(&[0; 64]);
    t.extend_from_slice(&[1, 0, 0]);
    check_refused(&t, WireError::ZeroPort);
    // A route position past the route's end.
    let mut t = vec![3u8, 0, 1, 0];
    t.extend_from_slice(&[0; 64]);
    t.extend_from_slice(&[0, 0, 1, 0]);
    check_refused(&t, WireError::Invalid("source route position past its end"));
    // A path reply claiming more hops than allowed.
    let mut r = vec![5u8];
    r.extend_from_slice(&[0; 72]);
    r.push(200);
    check_refused(
        &r,
        WireError::TooLong {
            what: "path reply",
            len: 200,
            max: MAX_ROUTE_LEN,
        },
    );
}

#[test]
fn forged_announcements_fail_verification() {
    let mut a = sample_announcement();
    a.seq += 1;
    assert_eq!(a.verify(), Err(WireError::BadSignature));
    let mut a = sample_announcement();
    a.hops.remove(0);
    assert_eq!(
        a.verify(),
        Err(WireError::Invalid(
            "first announcement hop not signed by the root"
        ))
    );
    let a = sample_announcement().extend_signed(&kp(9), 4);
    assert_eq!(a.verify(), Err(WireError::Invalid("announcement loops")));
}

fn key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn sig() -> impl Strategy<Value = Signature> {
    prop::collection::vec(any::<u8>(), 64).prop_map(|v| {
        let mut s = [0u8; 64];
        s.copy_from_slice(&v);
        Signature(s)
    })
}

fn ports(max: usize) -> impl Strategy<Value = Vec<u16>> {
    prop::collection::vec(1u16.., 0..max)
}

fn watermark() -> impl Strategy<Value = Option<Watermark>> {
    prop::option::of((key(), any::<u64>()).prop_map(|(key, seq)| Watermark { key, seq }))
}

fn frame() -> impl Strategy<Value = Frame> {
    let ann = (
        key(),
        any::<u64>(),
        prop::collection::vec((1u16.., key(), sig()), 0..6),
    )
        .prop_map(|(root, seq, hops)| {
            Frame::Announce(Announcement {
                root,
                seq,
                hops: hops
                    .into_iter()
                    .map(|(port, signer, signature)| AnnouncementHop {
                        port,
                        signer,
                        signature,
                    })
                    .collect(),
            })
        });
    let boot = (
        key(),
        any::<u64>(),
        key(),
        any::<u64>(),
        sig(),
        any::<u8>(),
        watermark(),
    )
        .prop_map(
            |(origin, seq, root, root_seq, signature, hop_limit, watermark)| {
                Frame::Bootstrap(Bootstrap {
                    origin,
                    seq,
                    root,
                    root_seq,
                    signature,
                    hop_limit,
                    watermark,
                })
            },
        );
    let traffic = (
        (
            any::<u8>(),
            any::<u8>(),
            any::<bool>(),
            any::<bool>(),
            key(),
            key(),
        ),
        (ports(20), prop::option::of(ports(20)), watermark()),
        (
            ports(MAX_ROUTE_LEN),
            any::<u8>(),
            ports(MAX_ROUTE_LEN),
            prop::collection::vec(any::<u8>(), 0..64),
        ),
    )
        .prop_map(
            |(
                (hop_limit, hops, broken, probe, src, dst),
                (src_coords, dst_coords, watermark),
                (route, pos, reverse, payload),
            )| {
                let route_pos = if route.is_empty() {
                    0
                } else {
                    pos % (route.len() as u8 + 1)
                };
                Frame::Traffic(Traffic {
                    hop_limit,
                    hops,
                    broken,
                    probe,
                    src,
                    dst,
                    src_coords,
                    dst_coords,
                    watermark,
                    route,
                    route_pos,
                    reverse,
                    payload,
                })
            },
        );
    let find = (key(), key(), any::<u64>(), any::<u8>(), any::<u8>()).prop_map(
        |(searcher, target, nonce, hop_limit, hops)| {
            Frame::PathFind(PathFind {
                searcher,
                target,
                nonce,
                hop_limit,
                hops,
            })
        },
    );
    let seek = (
        key(),
        key(),
        any::<u64>(),
        (any::<u8>(), any::<u8>(), any::<u8>()),
        ports(MAX_COORDS_LEN),
    )
        .prop_map(
            |(searcher, target, nonce, (hop_limit, hops, width), target_coords)| {
                Frame::PathSeek(PathSeek {
                    searcher,
                    target,
                    nonce,
                    hop_limit,
                    hops,
                    width,
                    target_coords,
                })
            },
        );
    let reply = (
        key(),
        key(),
        any::<u64>(),
        prop::collection::vec((key(), any::<u16>(), any::<u16>(), sig()), 0..8),
    )
        .prop_map(|(searcher, target, nonce, hops)| {
            Frame::PathReply(PathReply {
                searcher,
                target,
                nonce,
                hops: hops
                    .into_iter()
                    .map(|(key, in_port, out_port, signature)| PathHop {
                        key,
                        in_port,
                        out_port,
                        signature,
                    })
                    .collect(),
            })
        });
    let teardown = (key(), any::<u64>(), any::<bool>()).prop_map(|(origin, seq, upstream)| {
        Frame::Teardown(Teardown {
            origin,
            seq,
            upstream,
        })
    });
    let answer = (
        key(),
        key(),
        any::<u64>(),
        sig(),
        prop::collection::vec((any::<[u8; KEY_PREFIX_LEN]>(), any::<u16>()), 0..8),
    )
        .prop_map(|(searcher, target, nonce, signature, hops)| {
            Frame::PathAnswer(PathAnswer {
                searcher,
                target,
                nonce,
                signature,
                hops: hops
                    .into_iter()
                    .map(|(prefix, in_port)| AnswerHop { prefix, in_port })
                    .collect(),
            })
        });
    prop_oneof![ann, boot, traffic, find, seek, reply, teardown, answer]
}

proptest! {
    #[test]
    fn frames_round_trip(f in frame()) {
        let bytes = f.encode();
        prop_assert_eq!(bytes.len(), f.encoded_len());
        prop_assert_eq!(Frame::decode(&bytes), Ok(f));
    }

    #[test]
    fn hellos_round_trip(version in any::<u8>(), capabilities in any::<u32>(), network_id in prop::option::of(any::<[u8; 32]>())) {
        let h = Hello { version, capabilities, network_id };
        let bytes = h.encode();
        prop_assert_eq!(bytes.len(), h.encoded_len());
        prop_assert_eq!(Hello::decode(&bytes), Ok(h));
    }

    #[test]
    fn beacons_round_trip(seed in any::<[u8; 32]>(), port in 1u16.., id in prop::option::of(any::<[u8; 32]>())) {
        let k = NodeKeypair::from_seed(seed);
        let b = Beacon::new(k.public_key(), port, id.as_ref());
        let bytes = b.encode_signed(&k).unwrap_or_default();
        prop_assert_eq!(bytes.len(), b.encoded_len());
        prop_assert_eq!(Beacon::decode_verified(&bytes), Ok(b));
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = Frame::decode(&bytes);
        let _ = Hello::decode(&bytes);
        let _ = Beacon::decode_verified(&bytes);
    }
}

/// The largest header a traffic frame can carry (every list at its limit, a watermark), with a
/// payload of [`MAX_TRAFFIC_PAYLOAD`]: shrinking brings it within [`MAX_TRAFFIC_FRAME`] and keeps
/// what routing by key needs.
#[test]
fn largest_traffic_header_shrinks_to_fit() {
    let full = Traffic {
        hop_limit: 200,
        hops: 3,
        broken: false,
        probe: false,
        src: kp(1).public_key(),
        dst: kp(2).public_key(),
        src_coords: vec![u16::MAX; MAX_COORDS_LEN],
        dst_coords: Some(vec![u16::MAX; MAX_COORDS_LEN]),
        watermark: Some(Watermark {
            key: kp(3).public_key(),
            seq: u64::MAX,
        }),
        route: vec![u16::MAX; MAX_ROUTE_LEN],
        route_pos: 1,
        reverse: vec![u16::MAX; MAX_ROUTE_LEN],
        payload: vec![9; MAX_TRAFFIC_PAYLOAD],
    };
    assert!(Frame::Traffic(full.clone()).encoded_len() > MAX_TRAFFIC_FRAME);
    let mut t = full.clone();
    assert!(t.shrink_to(MAX_TRAFFIC_FRAME));
    let bytes = Frame::Traffic(t.clone()).encode();
    assert_eq!(bytes.len(), MAX_TRAFFIC_FRAME);
    assert_eq!(Frame::decode(&bytes), Ok(Frame::Traffic(t.clone())));
    assert_eq!(
        (t.src, t.dst, t.watermark),
        (full.src, full.dst, full.watermark)
    );
    assert_eq!(t.payload, full.payload);
    // One byte more payload cannot fit whatever is shed.
    let mut over = full;
    over.payload.push(0);
    assert!(!over.shrink_to(MAX_TRAFFIC_FRAME));
}

/// Shedding stops as soon as the frame fits: a modest header loses nothing.
#[test]
fn traffic_that_fits_is_left_alone() {
    let mut t = Traffic {
        hop_limit: 10,
        hops: 0,
        broken: false,
        probe: false,
        src: kp(1).public_key(),
        dst: kp(2).public_key(),
        src_coords: vec![1, 2, 3],
        dst_coords: Some(vec![1, 4]),
        watermark: None,
        route: vec![2, 3, 4],
        route_pos: 0,
        reverse: vec![],
        payload: vec![0; 1200],
    };
    let before = t.clone();
    assert!(t.shrink_to(MAX_TRAFFIC_FRAME));
    assert_eq!(t, before);
}

/// Every input of the `frame` fuzz corpus (frames of every earlier layout among them) still
/// decodes and re-encodes to itself, or is refused with an error; none panics.
#[test]
fn fuzz_corpus_for_frames_decodes_or_is_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let (mut decoded, mut refused) = (0, 0);
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("corpus entry: {e}")).path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match Frame::decode(&bytes) {
            Ok(f) => {
                assert_eq!(f.encode(), bytes, "{}", path.display());
                decoded += 1;
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        decoded > 0 && refused > 0,
        "{decoded} decoded, {refused} refused"
    );
}
