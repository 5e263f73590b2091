//! The record store on its own: what it keeps, what it refuses and why.

use super::store::{Limits, RecordPolicy, RecordStore, SelfCertifying, Stored};
use crate::identity::{NodeKeypair, PublicKey};
use crate::router::DropReason;
use crate::wire::{MAX_RECORD_VALUE, Record};

const NOW: u64 = 1_800_000_000;
const HOUR: u64 = 3600;

fn kp(n: u8) -> NodeKeypair {
    NodeKeypair::from_seed([n; 32])
}

fn limits() -> Limits {
    Limits {
        max_bytes: 64 * 1024,
        max_per_publisher: 4,
        max_ttl_secs: 24 * HOUR,
    }
}

/// A self-certifying record of `signer`'s key.
fn own(signer: u8, seq: u64, expires: u64, value: &[u8]) -> Record {
    let k = kp(signer);
    Record::signed(&k, k.public_key(), seq, expires, value.to_vec()).unwrap()
}

/// Puts `record` as replica 0 at `NOW` under the default policy and checks the outcome.
#[track_caller]
fn check(store: &mut RecordStore, record: Record, expected: Result<Stored, DropReason>) {
    let got = store.put(0, record, NOW, &limits(), &SelfCertifying);
    assert_eq!(got, expected);
}

#[test]
fn newer_sequence_replaces_and_older_is_refused() {
    let mut s = RecordStore::default();
    check(&mut s, own(1, 5, NOW + HOUR, b"v5"), Ok(Stored::New));
    check(&mut s, own(1, 5, NOW + HOUR, b"v5"), Ok(Stored::Same));
    check(&mut s, own(1, 6, NOW + HOUR, b"v6"), Ok(Stored::Replaced));
    // A replay of the old one, and another record with the held sequence.
    check(
        &mut s,
        own(1, 5, NOW + HOUR, b"v5"),
        Err(DropReason::RecordStale),
    );
    check(
        &mut s,
        own(1, 6, NOW + 2 * HOUR, b"x"),
        Err(DropReason::RecordStale),
    );
    let key = kp(1).public_key();
    assert_eq!(
        s.get(&key, NOW).map(|r| r.value.as_slice()),
        Some(&b"v6"[..])
    );
    assert_eq!(s.len(), 1);
}

#[test]
fn expired_records_are_refused_and_swept() {
    let mut s = RecordStore::default();
    check(&mut s, own(1, 1, NOW, b""), Err(DropReason::RecordInvalid));
    check(&mut s, own(1, 1, NOW + 10, b"short"), Ok(Stored::New));
    let key = kp(1).public_key();
    assert!(s.get(&key, NOW + 10).is_none(), "expired but not swept yet");
    s.expire(NOW + 10);
    assert!(s.is_empty());
    assert_eq!(s.bytes(), 0);
    // Its publisher's quota is free again.
    check(&mut s, own(1, 2, NOW + HOUR, b"again"), Ok(Stored::New));
}

#[test]
fn lifetime_beyond_the_maximum_is_refused() {
    let mut s = RecordStore::default();
    let too_long = NOW + 24 * HOUR + super::store::CLOCK_SKEW_SECS + 1;
    check(
        &mut s,
        own(1, 1, too_long, b""),
        Err(DropReason::RecordInvalid),
    );
    check(&mut s, own(1, 1, NOW + 24 * HOUR, b""), Ok(Stored::New));
}

#[test]
fn forged_signature_is_refused() {
    let mut s = RecordStore::default();
    let mut r = own(1, 1, NOW + HOUR, b"honest");
    r.value = b"forged".to_vec();
    check(&mut s, r, Err(DropReason::RecordInvalid));
    let mut r = own(1, 1, NOW + HOUR, b"honest");
    r.seq = 2;
    check(&mut s, r, Err(DropReason::RecordInvalid));
    assert!(s.is_empty());
}

#[test]
fn record_for_someone_elses_key_is_forbidden() {
    let mut s = RecordStore::default();
    // Signed correctly by key 2, but under key 1.
    let r = Record::signed(&kp(2), kp(1).public_key(), 1, NOW + HOUR, vec![1]).unwrap();
    assert!(r.verify());
    check(&mut s, r, Err(DropReason::RecordForbidden));
}

/// A policy letting one key publish under any key (as a home lets its replicas).
struct Delegate(PublicKey);

impl RecordPolicy for Delegate {
    fn may_publish(&self, key: &PublicKey, publisher: &PublicKey) -> bool {
        key == publisher || *publisher == self.0
    }
}

#[test]
fn the_policy_decides_who_publishes() {
    let mut s = RecordStore::default();
    let r = Record::signed(&kp(2), kp(1).public_key(), 1, NOW + HOUR, vec![1]).unwrap();
    let policy = Delegate(kp(2).public_key());
    assert_eq!(s.put(0, r, NOW, &limits(), &policy), Ok(Stored::New));
}

#[test]
fn publisher_quota_and_byte_budget_hold() {
    let mut s = RecordStore::default();
    let policy = Delegate(kp(9).public_key());
    for n in 0..4u8 {
        let r = Record::signed(&kp(9), kp(n).public_key(), 1, NOW + HOUR, vec![n]).unwrap();
        assert_eq!(s.put(0, r, NOW, &limits(), &policy), Ok(Stored::New));
    }
    let r = Record::signed(&kp(9), kp(4).public_key(), 1, NOW + HOUR, vec![4]).unwrap();
    assert_eq!(
        s.put(0, r, NOW, &limits(), &policy),
        Err(DropReason::RecordQuota)
    );
    // Replacing one of its own records is not a new one.
    let r = Record::signed(&kp(9), kp(0).public_key(), 2, NOW + HOUR, vec![7]).unwrap();
    assert_eq!(s.put(0, r, NOW, &limits(), &policy), Ok(Stored::Replaced));

    let mut s = RecordStore::default();
    let big = vec![0u8; MAX_RECORD_VALUE];
    let tight = Limits {
        max_bytes: 3 * (big.len() + 300),
        ..limits()
    };
    let mut kept = 0;
    for n in 10..20u8 {
        if s.put(0, own(n, 1, NOW + HOUR, &big), NOW, &tight, &SelfCertifying) == Ok(Stored::New) {
            kept += 1;
        }
    }
    assert_eq!(kept, 3);
    assert!(s.bytes() <= tight.max_bytes);
}

#[test]
fn oversized_values_cannot_be_signed() {
    let k = kp(1);
    let r = Record::signed(&k, k.public_key(), 1, NOW, vec![0; MAX_RECORD_VALUE + 1]);
    assert!(r.is_err());
}
