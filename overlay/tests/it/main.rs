//! Integration tests of the overlay: real routers wired together in virtual time, hostile
//! frames against a real router, and seeded simulations held to their targets.

mod hostile;
mod network;
mod records;
mod seek;
mod targets;

/// Installs a TRACE subscriber writing to the test output, so a failure shows the dialogue.
pub(crate) fn subscribe() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("grove_overlay=trace"))
        .with_test_writer()
        .try_init();
}
