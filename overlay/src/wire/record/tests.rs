//! Record frames: pinned bytes from fixed keys, round trips, signatures and refusals.

use proptest::prelude::*;

use crate::identity::{NodeKeypair, PublicKey, Signature};
use crate::wire::*;

fn kp(n: u8) -> NodeKeypair {
    NodeKeypair::from_seed([n; 32])
}

fn sample_record() -> Record {
    let k = kp(4);
    Record::signed(&k, k.public_key(), 3, 1_800_000_000, b"home".to_vec()).unwrap()
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

#[test]
fn store_bytes() {
    let f = Frame::Store(Store {
        hop_limit: 9,
        hops: 1,
        watermark: None,
        replica: 2,
        origin: kp(1).public_key(),
        record: sample_record(),
    });
    check_frame(&f, STORE_HEX);
}

#[test]
fn lookup_bytes() {
    let f = Frame::Lookup(Lookup {
        hop_limit: 9,
        hops: 0,
        watermark: Some(Watermark {
            key: kp(2).public_key(),
            seq: 5,
        }),
        replica: 1,
        origin: kp(1).public_key(),
        nonce: 0x0102_0304_0506_0708,
        key: kp(4).public_key(),
    });
    check_frame(&f, LOOKUP_HEX);
}

#[test]
fn lookup_reply_bytes() {
    let f = Frame::LookupReply(LookupReply {
        hop_limit: 9,
        hops: 2,
        lookup_hops: 3,
        watermark: None,
        asker: kp(1).public_key(),
        nonce: 7,
        key: kp(4).public_key(),
        record: Some(sample_record()),
    });
    check_frame(&f, REPLY_HEX);
    let empty = Frame::LookupReply(LookupReply {
        record: None,
        hop_limit: 1,
        hops: 0,
        lookup_hops: 0,
        watermark: None,
        asker: kp(1).public_key(),
        nonce: 7,
        key: kp(4).public_key(),
    });
    let bytes = empty.encode();
    assert_eq!(Frame::decode(&bytes), Ok(empty));
}

#[test]
fn record_signature_covers_every_field() {
    let r = sample_record();
    assert!(r.verify());
    let mut bad = r.clone();
    bad.expires += 1;
    assert!(!bad.verify());
    let mut bad = r.clone();
    bad.key = kp(5).public_key();
    assert!(!bad.verify());
    let mut bad = r;
    bad.publisher = kp(5).public_key();
    assert!(!bad.verify());
}

#[test]
fn placements_differ_and_replica_zero_is_the_key() {
    let k = kp(4).public_key();
    assert_eq!(placement(&k, 0), k);
    let p: Vec<PublicKey> = (0..MAX_REPLICAS).map(|i| placement(&k, i)).collect();
    for (i, a) in p.iter().enumerate() {
        assert!(p.iter().skip(i + 1).all(|b| a != b));
    }
}

#[test]
fn malformed_record_frames_are_refused() {
    let store = Frame::Store(Store {
        hop_limit: 9,
        hops: 1,
        watermark: None,
        replica: 2,
        origin: kp(1).public_key(),
        record: sample_record(),
    })
    .encode();
    // Replica index: type, hop limit, hops, watermark marker, then the index.
    let mut b = store.clone();
    b[4] = MAX_REPLICAS;
    assert_eq!(Frame::decode(&b), Err(WireError::Invalid("replica index")));
    // A value length over the limit, before any value byte is read.
    let mut b = store.clone();
    let len_at = 5 + 32 + 32 + 32 + 8 + 8;
    b[len_at..len_at + 2].copy_from_slice(&((MAX_RECORD_VALUE + 1) as u16).to_be_bytes());
    assert!(matches!(
        Frame::decode(&b),
        Err(WireError::TooLong {
            what: "record value",
            ..
        })
    ));
    // Truncated, and a trailing byte.
    assert_eq!(
        Frame::decode(&store[..store.len() - 1]),
        Err(WireError::Truncated)
    );
    let mut b = store;
    b.push(0);
    assert_eq!(Frame::decode(&b), Err(WireError::TrailingBytes(1)));
}

fn key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn record() -> impl Strategy<Value = Record> {
    (
        (key(), key(), any::<u64>(), any::<u64>()),
        prop::collection::vec(any::<u8>(), 0..=MAX_RECORD_VALUE),
        prop::collection::vec(any::<u8>(), 64),
    )
        .prop_map(|((key, publisher, seq, expires), value, sig)| Record {
            key,
            publisher,
            seq,
            expires,
            value,
            signature: Signature(sig.try_into().unwrap_or([0; 64])),
        })
}

fn watermark() -> impl Strategy<Value = Option<Watermark>> {
    prop::option::of((key(), any::<u64>()).prop_map(|(key, seq)| Watermark { key, seq }))
}

fn record_frame() -> impl Strategy<Value = Frame> {
    let store = (
        (any::<u8>(), any::<u8>(), 0..MAX_REPLICAS),
        watermark(),
        key(),
        record(),
    )
        .prop_map(|((hop_limit, hops, replica), watermark, origin, record)| {
            Frame::Store(Store {
                hop_limit,
                hops,
                watermark,
                replica,
                origin,
                record,
            })
        });
    let lookup = (
        (any::<u8>(), any::<u8>(), 0..MAX_REPLICAS),
        watermark(),
        key(),
        any::<u64>(),
        key(),
    )
        .prop_map(
            |((hop_limit, hops, replica), watermark, origin, nonce, key)| {
                Frame::Lookup(Lookup {
                    hop_limit,
                    hops,
                    watermark,
                    replica,
                    origin,
                    nonce,
                    key,
                })
            },
        );
    let reply = (
        (any::<u8>(), any::<u8>(), any::<u8>()),
        watermark(),
        key(),
        any::<u64>(),
        key(),
        prop::option::of(record()),
    )
        .prop_map(
            |((hop_limit, hops, lookup_hops), watermark, asker, nonce, key, record)| {
                Frame::LookupReply(LookupReply {
                    hop_limit,
                    hops,
                    lookup_hops,
                    watermark,
                    asker,
                    nonce,
                    key,
                    record,
                })
            },
        );
    prop_oneof![store, lookup, reply]
}

proptest! {
    #[test]
    fn record_frames_round_trip(f in record_frame()) {
        let bytes = f.encode();
        prop_assert_eq!(bytes.len(), f.encoded_len());
        prop_assert_eq!(Frame::decode(&bytes), Ok(f));
    }

    #[test]
    fn record_frame_garbage_never_panics(
        ty in 8u8..=10,
        bytes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut b = vec![ty];
        b.extend_from_slice(&bytes);
        let _ = Frame::decode(&b);
    }
}

// Pinned encodings, from the fixed keys above.
const STORE_HEX: &str = concat!(
    "08090100028a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5cca93ac17051870",
    "71d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7cca93ac1705187071d67b83c7ff0efe8108e8ec",
    "4530575d7726879333dbdabe7c0000000000000003000000006b49d2000004686f6d65bcd69591f391a68b83",
    "cfcb0b156b8d6fe3d4707c0a643bf4c5c9aa2542cb33df35428577f2c507df859e90db37feff1bcb5574b1dd",
    "6c80a7e28c3949e7e6700d",
);
const LOOKUP_HEX: &str = concat!(
    "090900018139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b3940000000000000005",
    "018a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c0102030405060708ca93ac",
    "1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c",
);
const REPLY_HEX: &str = concat!(
    "0a090203008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c00000000000000",
    "07ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c01ca93ac1705187071d67b",
    "83c7ff0efe8108e8ec4530575d7726879333dbdabe7cca93ac1705187071d67b83c7ff0efe8108e8ec453057",
    "5d7726879333dbdabe7c0000000000000003000000006b49d2000004686f6d65bcd69591f391a68b83cfcb0b",
    "156b8d6fe3d4707c0a643bf4c5c9aa2542cb33df35428577f2c507df859e90db37feff1bcb5574b1dd6c80a7",
    "e28c3949e7e6700d",
);
