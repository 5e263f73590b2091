//! The names the IO side and embedders have long used for node keys. They are aliases of the
//! crate's one key pair of types in [`crate::identity`], kept so code written against them
//! goes on compiling.

/// A node's ed25519 public key: its address on the overlay.
pub type NodeKey = crate::identity::PublicKey;

/// A node's ed25519 secret key.
pub type NodeSecret = crate::identity::NodeKeypair;
