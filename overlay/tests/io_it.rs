//! Integration tests of the overlay's IO side: real QUIC over loopback.

#[path = "io_it/discovery.rs"]
mod discovery;
#[path = "io_it/hostile.rs"]
mod hostile;
#[path = "io_it/links.rs"]
mod links;
#[path = "io_it/records.rs"]
mod records;
#[path = "io_it/routed.rs"]
mod routed;
#[path = "io_it/sessions.rs"]
mod sessions;
#[path = "io_it/support.rs"]
mod support;
