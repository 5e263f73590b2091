//! Grove's peer-to-peer overlay: nodes addressed by their ed25519 public key, routed over a
//! spanning tree and a virtual ring, linked by QUIC.
//!
//! This crate knows nothing of Matrix.

pub mod discovery;
pub mod driver;
pub mod hello;
pub mod link;
pub mod session;
pub mod tls;
