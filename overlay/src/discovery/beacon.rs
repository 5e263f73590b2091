//! The LAN discovery beacon: who is here and where to dial it.
//!
//! Encoding (big-endian, 120 bytes), to be reconciled with the routing core's wire module at merge:
//! `magic "GRVB" (4) | version u8 | flags u8 (0) | public key (32) | QUIC port u16 |
//! network-id hash (16) | ed25519 signature (64)`. The signature covers [`SIGNING_CONTEXT`]
//! followed by every byte before it, so a beacon cannot be mistaken for any other signed message.

use sha2::{Digest, Sha256};

use crate::tls::keys::{NodeKey, NodeSecret};

/// Magic bytes that open every beacon.
pub const MAGIC: [u8; 4] = *b"GRVB";

/// Beacon format version.
pub const VERSION: u8 = 1;

/// Length of an encoded beacon.
pub const BEACON_LEN: usize = 4 + 1 + 1 + 32 + 2 + 16 + 64;

/// Prefix of the signed message.
pub const SIGNING_CONTEXT: &[u8] = b"grove beacon v1";

/// Length of the signed part.
const SIGNED_LEN: usize = BEACON_LEN - 64;

/// A verified beacon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beacon {
    /// The sender's key.
    pub key: NodeKey,
    /// The UDP port of its peer links.
    pub port: u16,
    /// Hash of its network id (see [`network_hash`]).
    pub network: [u8; 16],
}

/// Why a beacon was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BeaconError {
    /// Wrong length, magic or flags.
    #[error("malformed beacon")]
    Malformed,
    /// A beacon version this build does not read.
    #[error("unknown beacon version")]
    UnknownVersion,
    /// The signature does not verify.
    #[error("bad beacon signature")]
    BadSignature,
}

impl BeaconError {
    /// Short label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownVersion => "unknown_version",
            Self::BadSignature => "bad_signature",
        }
    }
}

/// The 16-byte hash of a network id carried in beacons (all zero for the open network).
pub fn network_hash(id: Option<&[u8; 32]>) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Some(id) = id {
        let digest = Sha256::new()
            .chain_update(b"grove network id")
            .chain_update(id)
            .finalize();
        for (o, d) in out.iter_mut().zip(digest.iter()) {
            *o = *d;
        }
    }
    out
}

/// Builds and signs a beacon.
pub fn encode(secret: &NodeSecret, port: u16, network: [u8; 16]) -> [u8; BEACON_LEN] {
    let mut out = [0u8; BEACON_LEN];
    let mut signed = Vec::with_capacity(SIGNED_LEN);
    signed.extend_from_slice(&MAGIC);
    signed.push(VERSION);
    signed.push(0);
    signed.extend_from_slice(secret.public_key().as_bytes());
    signed.extend_from_slice(&port.to_be_bytes());
    signed.extend_from_slice(&network);
    let signature = secret.sign(&[SIGNING_CONTEXT, &signed].concat());
    for (o, b) in out.iter_mut().zip(signed.iter().chain(signature.iter())) {
        *o = *b;
    }
    out
}

/// Decodes and verifies a beacon.
pub fn decode(bytes: &[u8]) -> Result<Beacon, BeaconError> {
    let bytes: &[u8; BEACON_LEN] = bytes.try_into().map_err(|_| BeaconError::Malformed)?;
    let (signed, signature) = bytes.split_at(SIGNED_LEN);
    let (magic, rest) = signed.split_at(4);
    if magic != MAGIC {
        return Err(BeaconError::Malformed);
    }
    let [version, flags, rest @ ..] = rest else {
        return Err(BeaconError::Malformed);
    };
    if *version != VERSION {
        return Err(BeaconError::UnknownVersion);
    }
    if *flags != 0 {
        return Err(BeaconError::Malformed);
    }
    let (key, rest) = rest.split_at(32);
    let (port, network) = rest.split_at(2);
    let key = NodeKey::from_bytes(key.try_into().map_err(|_| BeaconError::Malformed)?);
    let port = u16::from_be_bytes(port.try_into().map_err(|_| BeaconError::Malformed)?);
    let network: [u8; 16] = network.try_into().map_err(|_| BeaconError::Malformed)?;
    let signature: [u8; 64] = signature.try_into().map_err(|_| BeaconError::Malformed)?;
    if !key.verify(&[SIGNING_CONTEXT, signed].concat(), &signature) {
        return Err(BeaconError::BadSignature);
    }
    Ok(Beacon { key, port, network })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> NodeSecret {
        NodeSecret::from_seed([3; 32])
    }

    #[test]
    fn round_trips() {
        let net = network_hash(Some(&[5; 32]));
        let bytes = encode(&secret(), 60614, net);
        assert_eq!(
            decode(&bytes),
            Ok(Beacon {
                key: secret().public_key(),
                port: 60614,
                network: net
            })
        );
    }

    #[test]
    fn bytes_are_pinned() {
        let bytes = encode(&secret(), 0x1234, network_hash(None));
        let head = hex::encode(&bytes[..SIGNED_LEN]);
        let expected = format!(
            "475256420100{}1234{}",
            secret().public_key().to_hex(),
            "00".repeat(16)
        );
        assert_eq!(head, expected);
        assert_eq!(bytes.len(), 120);
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let bytes = encode(&secret(), 60614, network_hash(None));
        for i in 0..BEACON_LEN {
            for bit in 0..8 {
                let mut b = bytes;
                b[i] ^= 1 << bit;
                assert!(decode(&b).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn wrong_lengths_are_malformed() {
        let bytes = encode(&secret(), 1, network_hash(None));
        for len in 0..BEACON_LEN {
            assert_eq!(decode(&bytes[..len]), Err(BeaconError::Malformed));
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(decode(&long), Err(BeaconError::Malformed));
    }

    #[test]
    fn other_network_hashes_differ() {
        assert_ne!(network_hash(Some(&[1; 32])), network_hash(Some(&[2; 32])));
        assert_eq!(network_hash(None), [0; 16]);
    }
}
