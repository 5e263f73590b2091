//! Grove's peer-to-peer overlay: nodes addressed by their ed25519 public key, routed over a
//! spanning tree and a virtual ring, linked by QUIC.
//!
//! Besides datagrams and sessions between nodes, it keeps small signed records on the ring
//! (see `router::records` and [`wire::Record`]): a record under a 32-byte key is kept at the
//! nodes closest to that key's placements, and any node can look it up
//! ([`driver::OverlayHandle::publish`], [`driver::OverlayHandle::lookup`]). Who may publish
//! under a key is the user's [`router::RecordPolicy`] (which may read the value, too); the
//! default is the key itself.
//!
//! This crate knows nothing of Matrix. The routing core ([`router::Router`]) is sans-IO: it
//! never reads a clock, a socket or the OS random source; callers pass `now` and a seed, feed
//! it frames and poll it for frames to send, events and its next timeout. The simulator
//! ([`sim`]) drives the very same `Router` in virtual time. The IO side ([`driver`], [`link`],
//! [`tls`], [`discovery`], [`session`]) owns sockets and timers and drives a routing core.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod discovery;
pub mod driver;
pub mod hello;
pub mod identity;
pub mod link;
pub mod router;
pub mod session;
pub mod sim;
pub mod tls;
pub mod wire;
