//! Grove: a Matrix homeserver that runs on people's own devices.
//!
//! This package wires the crates together: it reads configuration, owns the key files (home and
//! node key, [`identity`]) and the data directory, and starts the client API ([`Node`]). It is the only place that reads
//! configuration files or installs a tracing subscriber (in the `grove` binary).

pub mod config;
pub mod identity;
mod node;

pub use config::Config;
pub use identity::{Custody, IdentityError, IdentityInfo};
pub use node::{Node, NodeBuilder, NodeError, reachable_addrs};
