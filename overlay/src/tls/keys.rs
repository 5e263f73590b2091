//! Node keys used by the IO layers: a public key (the node's address) and its secret half.
//!
//! These are the IO side's own types until the routing core's identity module is merged; both
//! wrap a 32-byte ed25519 key, so reconciling them is a rename.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::RngCore;

/// A node's ed25519 public key: its address on the overlay.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey([u8; 32]);

impl NodeKey {
    /// Wraps 32 raw bytes (not checked to be a valid curve point; see [`NodeKey::verify`]).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the 64-character lower-case hex display form.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }

    /// The 64-character lower-case hex display form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Checks an ed25519 signature by this key over `message` (strict verification).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits tell nodes apart in logs without drowning them.
        write!(f, "NodeKey({})", &self.to_hex()[..8])
    }
}

impl serde::Serialize for NodeKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// A node's ed25519 secret key.
#[derive(Clone)]
pub struct NodeSecret(SigningKey);

impl NodeSecret {
    /// A fresh key from the operating system's entropy.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// The key for a 32-byte seed (the form stored in the data directory).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed.
    pub fn to_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public_key(&self) -> NodeKey {
        NodeKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeSecret(public {:?})", self.public_key())
    }
}
