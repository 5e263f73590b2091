//! Node identity: an ed25519 public key is a node's address; its display form is 64 lower-case
//! hex characters (which is also the node's Matrix server name). These are the crate's only key
//! types: the routing core, the wire formats, TLS and the driver all use them
//! (`tls::keys::{NodeKey, NodeSecret}` are aliases).
//!
//! Keys order as big-endian 256-bit numbers: the spanning-tree root is the highest key and the
//! virtual ring walks keys in this order.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Length in bytes of a public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length in bytes of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// An ed25519 public key: a node's address in the overlay.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_LEN]);

/// An ed25519 signature in its 64-byte wire form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

/// Why a string is not a public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// The string is not 64 characters long.
    #[error("a public key is 64 hex characters, got {0}")]
    Length(usize),
    /// The string holds a character that is not lower- or upper-case hex.
    #[error("a public key is hex")]
    NotHex,
}

impl PublicKey {
    /// Wraps 32 raw bytes (not checked to be a curve point; [`PublicKey::verify`] fails for
    /// one that is not).
    pub const fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Checks `sig` over `msg` strictly (no small-order keys, canonical signatures only); false
    /// for a bad signature or a key that is not a curve point.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        let Ok(vk) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        vk.verify_strict(msg, &sig).is_ok()
    }

    /// The 64-character lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the 64-character hex form (either case); `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight characters are enough to tell nodes apart in logs.
        write!(f, "PublicKey({})", &self.to_hex()[..8])
    }
}

impl FromStr for PublicKey {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 2 * PUBLIC_KEY_LEN {
            return Err(KeyParseError::Length(s.len()));
        }
        let mut out = [0u8; PUBLIC_KEY_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| KeyParseError::NotHex)?;
        Ok(PublicKey(out))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..4]))
    }
}

/// A node's signing key pair.
#[derive(Clone)]
pub struct NodeKeypair {
    signing: SigningKey,
    public: PublicKey,
}

impl NodeKeypair {
    /// A fresh key pair from the operating system's entropy.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// The key pair whose secret is `seed` (32 bytes of entropy, or a stored secret key).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let public = PublicKey(signing.verifying_key().to_bytes());
        NodeKeypair { signing, public }
    }

    /// The secret seed, for export.
    pub fn to_seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// This node's address.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs `msg`, giving the 64-byte wire form.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(msg).to_bytes()
    }
}

impl fmt::Debug for NodeKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("NodeKeypair")
            .field("public", &self.public)
            .finish()
    }
}

/// A bounded memory of signatures already verified, so the same signed hop relayed by several
/// peers is checked once. Entries are keyed by a hash of key, signature and message, so a
/// signature cannot be reused for another message. Clones share one memory: routers in one
/// process (the simulator's thousands) may share it, since an entry only ever records a check
/// that passed, and each signature is then checked once for all of them.
#[derive(Debug, Clone)]
pub struct SigCache {
    seen: Arc<Mutex<HashSet<[u8; 32]>>>,
    limit: usize,
}

/// Most entries a [`SigCache`] holds before it starts over.
pub const SIG_CACHE_LIMIT: usize = 8192;

impl Default for SigCache {
    fn default() -> Self {
        SigCache::with_limit(SIG_CACHE_LIMIT)
    }
}

impl SigCache {
    /// An empty memory of at most `limit` entries.
    pub fn with_limit(limit: usize) -> Self {
        SigCache {
            seen: Arc::new(Mutex::new(HashSet::new())),
            limit: limit.max(1),
        }
    }

    /// Checks `sig` over `msg` by `key`, from memory when it was checked before.
    pub fn verify(&mut self, key: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
        let mut h = Sha256::new();
        h.update(key.0);
        h.update(sig.0);
        h.update(msg);
        let id: [u8; 32] = h.finalize().into();
        // A panic elsewhere while the lock was held leaves a set of checks that passed: the
        // memory stays usable.
        if self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
        {
            return true;
        }
        if !key.verify(msg, sig) {
            return false;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= self.limit {
            seen.clear();
        }
        seen.insert(id);
        true
    }
}

/// Wrapping distance `to - from` on the 256-bit ring, as a big-endian number.
pub fn ring_distance(from: &PublicKey, to: &PublicKey) -> [u8; PUBLIC_KEY_LEN] {
    // Four big-endian 64-bit limbs, subtracted from the least significant up with a borrow.
    let limb = |k: &PublicKey, i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&k.0[i * 8..i * 8 + 8]);
        u64::from_be_bytes(b)
    };
    let mut out = [0u8; PUBLIC_KEY_LEN];
    let mut borrow = false;
    for i in (0..4).rev() {
        let (d1, b1) = limb(to, i).overflowing_sub(limb(from, i));
        let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
        borrow = b1 || b2;
        out[i * 8..i * 8 + 8].copy_from_slice(&d2.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let k = NodeKeypair::from_seed([7; 32]).public_key();
        let s = k.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<PublicKey>(), Ok(k));
        assert_eq!("ab".parse::<PublicKey>(), Err(KeyParseError::Length(2)));
        assert_eq!(
            "zz".repeat(32).parse::<PublicKey>(),
            Err(KeyParseError::NotHex)
        );
    }

    #[test]
    fn sign_verify() {
        let kp = NodeKeypair::from_seed([1; 32]);
        let sig = Signature(kp.sign(b"grove"));
        assert!(kp.public_key().verify(b"grove", &sig));
        assert!(!kp.public_key().verify(b"grovE", &sig));
        assert!(
            !NodeKeypair::from_seed([2; 32])
                .public_key()
                .verify(b"grove", &sig)
        );
    }

    /// Clones share one memory, and only checks that passed are in it: a forged signature
    /// over a message another clone verified is still refused.
    #[test]
    fn a_shared_signature_memory_holds_only_checks_that_passed() {
        let kp = NodeKeypair::from_seed([3; 32]);
        let key = kp.public_key();
        let sig = Signature(kp.sign(b"hop"));
        let mut a = SigCache::with_limit(4);
        let mut b = a.clone();
        assert!(a.verify(&key, b"hop", &sig));
        assert_eq!(b.seen.lock().map(|s| s.len()).unwrap_or(0), 1);
        assert!(b.verify(&key, b"hop", &sig));
        let mut forged = sig;
        forged.0[0] ^= 1;
        assert!(!b.verify(&key, b"hop", &forged));
        assert!(!a.verify(&key, b"other", &sig));
        assert_eq!(a.seen.lock().map(|s| s.len()).unwrap_or(0), 1);
    }

    #[test]
    fn ring_distance_wraps() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a[31] = 5;
        b[31] = 3;
        let d = ring_distance(&PublicKey(a), &PublicKey(b));
        assert_eq!(d[31], 254);
        assert!(d[..31].iter().all(|x| *x == 255));
        assert_eq!(ring_distance(&PublicKey(b), &PublicKey(a))[31], 2);
    }
}
