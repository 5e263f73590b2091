//! Grove: a Matrix homeserver that runs on people's own devices.
//!
//! This package wires the crates together: it reads configuration, owns the node key file and
//! the data directory, and starts the client API ([`Node`]). It is the only place that reads
//! configuration files or installs a tracing subscriber (in the `grove` binary).

pub mod config;
mod node;

pub use config::Config;
pub use node::{Node, NodeBuilder, NodeError, reachable_addrs};
