//! Interop with Synapse: a Grove node and a Synapse federating over TLS on loopback, each
//! side's users joining the other's rooms, inviting, redacting, leaving, being kicked and
//! banned, and exchanging device keys and to-device messages, all seen through both client
//! APIs.
//!
//! Synapse comes from PyPI (`scripts/synapse-install`, run by `scripts/test`); without it every
//! test here fails, saying how to install it. `cargo test` runs these only when asked for
//! (`cargo test --test synapse`), so a machine without Python still runs the rest.

mod api;
mod e2ee;
mod harness;
mod invites;
mod joins;
mod redactions;
mod rejoins;
// The node verbs of the main test binary; these tests use a part of them.
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;
#[path = "../it/tls_ca.rs"]
mod tls_ca;

/// A localpart no other test of this process takes on the shared Synapse.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// The `next_batch` of a sync response.
fn next_batch(sync: &serde_json::Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}
