//! Certificate round trips and refusals.

use super::*;

#[test]
fn own_certificate_yields_own_key() {
    let secret = NodeKeypair::from_seed([7; 32]);
    let identity = Identity::new(&secret).expect("certificate");
    assert_eq!(cert::node_key_of(&identity.cert), Ok(secret.public_key()));
}

#[test]
fn tampered_certificate_is_refused() {
    let secret = NodeKeypair::from_seed([9; 32]);
    let identity = Identity::new(&secret).expect("certificate");
    let mut der = identity.cert.to_vec();
    // Flip a byte inside the signed part (the subject common name is hex text).
    let pos = der.len() / 2;
    der[pos] ^= 0x01;
    assert!(cert::node_key_of(&der).is_err());
}

#[test]
fn garbage_is_refused_without_panic() {
    for len in 0..64 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        assert!(cert::node_key_of(&bytes).is_err());
    }
    assert!(cert::node_key_of(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    assert!(cert::node_key_of(&[0x30, 0x82, 0xff, 0xff]).is_err());
}
