//! Hello encoding and negotiation.

use super::*;

#[track_caller]
fn check_negotiation(ours: Hello, theirs: Hello, expected: Result<Negotiated, HelloError>) {
    assert_eq!(ours.negotiate(&theirs), expected);
    // Negotiation is symmetric: both ends reach the same answer.
    assert_eq!(theirs.negotiate(&ours), expected);
}

fn hello(min: u16, max: u16, caps: u64, id: Option<[u8; 32]>) -> Hello {
    Hello {
        version_min: min,
        version_max: max,
        capabilities: caps,
        network_id: id,
    }
}

#[test]
fn bytes_are_pinned() {
    let h = hello(1, 3, 0x0102, None);
    assert_eq!(
        hex::encode(h.encode()),
        "47525648".to_owned() + "0001" + "0003" + "0000000000000102" + "00"
    );
    let h = hello(1, 1, 0, Some([0xab; 32]));
    let enc = h.encode();
    assert_eq!(enc.len(), BASE_LEN + 32);
    assert_eq!(Hello::decode(&enc), Ok(h));
}

#[test]
fn round_trips_and_refuses_garbage() {
    for h in [
        hello(1, 1, 0, None),
        hello(2, 9, u64::MAX, Some([1; 32])),
        hello(0, 0, 5, None),
    ] {
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
    }
    let good = hello(1, 2, 3, Some([4; 32])).encode();
    for cut in 0..good.len() {
        assert_eq!(Hello::decode(&good[..cut]), Err(HelloError::Malformed));
    }
    let mut extra = good.to_vec();
    extra.push(0);
    assert_eq!(Hello::decode(&extra), Err(HelloError::Malformed));
    let mut bad_flags = hello(1, 1, 0, None).encode().to_vec();
    bad_flags[BASE_LEN - 1] = 0x80;
    assert_eq!(Hello::decode(&bad_flags), Err(HelloError::Malformed));
    assert_eq!(
        Hello::decode(&hello(3, 2, 0, None).encode()),
        Err(HelloError::Malformed)
    );
}

#[test]
fn versions_and_capabilities_intersect() {
    check_negotiation(
        hello(1, 2, 0b1011, None),
        hello(2, 5, 0b0110, None),
        Ok(Negotiated {
            version: 2,
            capabilities: 0b0010,
        }),
    );
    check_negotiation(
        hello(1, 1, 0, None),
        hello(2, 3, 0, None),
        Err(HelloError::Version),
    );
}

#[test]
fn network_ids_must_match() {
    check_negotiation(
        hello(1, 1, 0, Some([1; 32])),
        hello(1, 1, 0, Some([2; 32])),
        Err(HelloError::NetworkId),
    );
    check_negotiation(
        hello(1, 1, 0, Some([1; 32])),
        hello(1, 1, 0, None),
        Err(HelloError::NetworkId),
    );
    check_negotiation(
        hello(1, 1, 0, Some([1; 32])),
        hello(1, 1, 0, Some([1; 32])),
        Ok(Negotiated {
            version: 1,
            capabilities: 0,
        }),
    );
}
