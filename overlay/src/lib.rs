//! Grove's peer-to-peer overlay: nodes addressed by their ed25519 public key, routed over a
//! spanning tree and a virtual ring, linked by QUIC.
//!
//! This crate knows nothing of Matrix.
