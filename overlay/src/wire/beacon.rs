//! The LAN discovery beacon: magic, version, public key, QUIC port and network-id hash, signed
//! by the key it names so nobody can advertise another node's key.

use sha2::{Digest, Sha256};

use crate::identity::{NodeKeypair, PublicKey, SIGNATURE_LEN};
use crate::wire::WireError;
use crate::wire::codec::Reader;

/// Magic at the start of a beacon.
pub const BEACON_MAGIC: [u8; 4] = *b"GRVB";
/// Beacon layout version.
pub const BEACON_VERSION: u8 = 1;
/// Length of a signed beacon.
pub const BEACON_LEN: usize = 4 + 1 + 32 + 2 + 32 + SIGNATURE_LEN;
/// Domain separation for beacon signatures.
const BEACON_DOMAIN: &[u8] = b"grove-beacon-v1";

/// A node's announcement of itself on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beacon {
    /// Beacon layout version.
    pub version: u8,
    /// The advertising node.
    pub public_key: PublicKey,
    /// UDP port its QUIC endpoint listens on.
    pub quic_port: u16,
    /// [`Beacon::network_hash`] of its network id.
    pub network_hash: [u8; 32],
}

impl Beacon {
    /// A beacon for `keypair`'s node.
    pub fn new(public_key: PublicKey, quic_port: u16, network_id: Option<&[u8; 32]>) -> Self {
        Beacon {
            version: BEACON_VERSION,
            public_key,
            quic_port,
            network_hash: Self::network_hash(network_id),
        }
    }

    /// Hash of a network id as beacons carry it (the id itself stays secret); all zeros for
    /// the open network.
    pub fn network_hash(network_id: Option<&[u8; 32]>) -> [u8; 32] {
        match network_id {
            None => [0; 32],
            Some(id) => {
                let mut h = Sha256::new();
                h.update(b"grove-network-id");
                h.update(id);
                h.finalize().into()
            }
        }
    }

    fn unsigned_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BEACON_LEN);
        out.extend_from_slice(&BEACON_MAGIC);
        out.push(self.version);
        out.extend_from_slice(&self.public_key.0);
        out.extend_from_slice(&self.quic_port.to_be_bytes());
        out.extend_from_slice(&self.network_hash);
        out
    }

    fn signing_bytes(unsigned: &[u8]) -> Vec<u8> {
        let mut msg = Vec::with_capacity(BEACON_DOMAIN.len() + unsigned.len());
        msg.extend_from_slice(BEACON_DOMAIN);
        msg.extend_from_slice(unsigned);
        msg
    }

    /// Length of [`Beacon::encode_signed`]'s output.
    pub fn encoded_len(&self) -> usize {
        BEACON_LEN
    }

    /// The signed wire bytes; `keypair` must be the beacon's key.
    pub fn encode_signed(&self, keypair: &NodeKeypair) -> Result<Vec<u8>, WireError> {
        if keypair.public_key() != self.public_key {
            return Err(WireError::KeyMismatch);
        }
        let mut out = self.unsigned_bytes();
        let sig = keypair.sign(&Self::signing_bytes(&out));
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// Parses a beacon and checks its signature against the key it carries.
    pub fn decode_verified(bytes: &[u8]) -> Result<Beacon, WireError> {
        let mut r = Reader::new(bytes);
        if r.array::<4>()? != BEACON_MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = r.u8()?;
        if version != BEACON_VERSION {
            return Err(WireError::Invalid("beacon version"));
        }
        let public_key = r.key()?;
        let quic_port = r.u16()?;
        if quic_port == 0 {
            return Err(WireError::ZeroPort);
        }
        let network_hash = r.array::<32>()?;
        let sig = r.sig()?;
        r.finish()?;
        let beacon = Beacon {
            version,
            public_key,
            quic_port,
            network_hash,
        };
        if !public_key.verify(&Self::signing_bytes(&beacon.unsigned_bytes()), &sig) {
            return Err(WireError::BadSignature);
        }
        Ok(beacon)
    }
}
