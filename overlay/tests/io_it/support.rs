//! Test support: verbs to start nodes (with the shipped routing core, tuned to converge in
//! moments) on loopback and wait for what they report.

use std::net::SocketAddr;
use std::time::Duration;

use grove_overlay::driver::{Config, Overlay, OverlayEvent, OverlayHandle};
use grove_overlay::router;
use grove_overlay::tls::keys::{NodeKey, NodeSecret};
use tokio::sync::mpsc;

/// Routing tunables for loopback tests: ring bootstraps and path searches every few hundred
/// milliseconds instead of every few seconds, so a test network converges in moments.
pub(crate) fn fast_routing() -> router::Config {
    router::Config {
        reparent_wait: Duration::from_millis(100),
        default_link_cost_ms: 1,
        bootstrap_min: Duration::from_millis(100),
        bootstrap_fast_period: Duration::from_secs(2),
        bootstrap_max: Duration::from_millis(500),
        ring_entry_ttl: Duration::from_secs(3),
        search_backoff: Duration::from_millis(200),
        breadcrumb_ttl: Duration::from_secs(2),
        ..router::Config::default()
    }
}

/// Installs a subscriber writing to the test output.
pub(crate) fn subscribe() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "grove_overlay=debug".into()),
        )
        .try_init();
}

/// A node key from a one-byte seed, so tests can order keys.
pub(crate) fn secret(seed: u8) -> NodeSecret {
    NodeSecret::from_seed([seed; 32])
}

/// A configuration on a fresh loopback port, with [`fast_routing`].
pub(crate) fn config(seed: u8) -> Config {
    let mut config = Config::new(secret(seed), SocketAddr::from(([127, 0, 0, 1], 0)));
    config.routing = fast_routing();
    config
}

/// A running node and its events.
pub(crate) struct TestNode {
    /// The handle.
    pub(crate) handle: OverlayHandle,
    /// Its events.
    pub(crate) events: mpsc::Receiver<OverlayEvent>,
}

impl TestNode {
    /// Starts a node with the shipped routing core.
    pub(crate) fn start(config: Config) -> Self {
        let (handle, events) = Overlay::start_default(config).expect("overlay starts");
        Self { handle, events }
    }

    /// Waits for an event matching `pred`, failing after `within`.
    pub(crate) async fn wait_for(
        &mut self,
        within: Duration,
        pred: impl Fn(&OverlayEvent) -> bool,
    ) -> OverlayEvent {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if pred(&e) => return e,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("event channel closed"),
                Err(_) => panic!("no matching event within {within:?}"),
            }
        }
    }

    /// This node's key.
    pub(crate) fn key(&self) -> NodeKey {
        self.handle.public_key()
    }
}

/// Polls `check` until it holds, failing after `within`.
pub(crate) async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
