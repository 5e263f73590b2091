//! Test support: a routing core that only reaches direct neighbours, and verbs to start nodes
//! on loopback and wait for what they report.
//!
//! `DirectCore` is test scaffolding, not shipped: it lets the IO layers (links, datagrams,
//! sessions) be tested over real sockets before the real routing core is plugged in.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use grove_overlay::driver::core::{
    CoreEvent, FrameRejected, RoutingCore, SendRejected, Transmit, Verdict,
};
use grove_overlay::driver::{Config, Overlay, OverlayEvent, OverlayHandle};
use grove_overlay::link::PeerId;
use grove_overlay::tls::keys::{NodeKey, NodeSecret};
use tokio::sync::mpsc;

/// Tag of a traffic frame of the direct core.
const TRAFFIC: u8 = 0x01;

/// Routes to direct neighbours only.
#[derive(Debug, Default)]
pub(crate) struct DirectCore {
    peers: HashMap<PeerId, NodeKey>,
    by_key: HashMap<NodeKey, PeerId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<CoreEvent>,
    /// The highest neighbour key seen, reported as a stand-in tree parent so the driver's
    /// forwarding of parent changes can be observed.
    parent: Option<NodeKey>,
}

impl RoutingCore for DirectCore {
    fn handle_peer_up(&mut self, peer: PeerId, key: NodeKey, _now: Instant) {
        self.peers.insert(peer, key);
        self.by_key.insert(key, peer);
        self.events.push_back(CoreEvent::NodeReachable(key));
        if self.parent.is_none_or(|p| key > p) {
            self.parent = Some(key);
            self.events
                .push_back(CoreEvent::TreeParentChanged(Some(key)));
        }
    }

    fn handle_peer_down(&mut self, peer: PeerId, _now: Instant) {
        if let Some(key) = self.peers.remove(&peer)
            && self.by_key.get(&key) == Some(&peer)
        {
            self.by_key.remove(&key);
        }
    }

    fn handle_frame(
        &mut self,
        peer: PeerId,
        frame: &[u8],
        _now: Instant,
    ) -> Result<(), FrameRejected> {
        let reject = FrameRejected {
            reason: "unknown_frame",
            verdict: Verdict::DropPeer,
        };
        let (&tag, payload) = frame.split_first().ok_or(reject)?;
        if tag != TRAFFIC {
            return Err(reject);
        }
        let from = *self.peers.get(&peer).ok_or(reject)?;
        self.events.push_back(CoreEvent::Delivered {
            from,
            payload: Bytes::copy_from_slice(payload),
        });
        Ok(())
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn send(&mut self, to: NodeKey, payload: Bytes, _now: Instant) -> Result<(), SendRejected> {
        let peer = *self
            .by_key
            .get(&to)
            .ok_or(SendRejected { reason: "no_route" })?;
        let mut bytes = BytesMut::with_capacity(payload.len() + 1);
        bytes.put_u8(TRAFFIC);
        bytes.put_slice(&payload);
        self.transmits.push_back(Transmit {
            peer,
            bytes: bytes.freeze(),
            reliable: false,
        });
        Ok(())
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({ "direct_peers": self.peers.len() })
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

/// A configuration on a fresh loopback port.
pub(crate) fn config(seed: u8) -> Config {
    Config::new(secret(seed), SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// A running node and its events.
pub(crate) struct TestNode {
    /// The handle.
    pub(crate) handle: OverlayHandle,
    /// Its events.
    pub(crate) events: mpsc::Receiver<OverlayEvent>,
}

impl TestNode {
    /// Starts a node with the direct core.
    pub(crate) fn start(config: Config) -> Self {
        let (handle, events) =
            Overlay::start(config, DirectCore::default()).expect("overlay starts");
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
