//! The shipped routing core: the sans-IO [`Router`] behind the driver's [`RoutingCore`]
//! interface. The driver and the router share key and link types, so this only maps errors
//! and events.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::core::{
    CoreEvent, FrameRejected, RecordRejected, RoutingCore, SendRejected, Transmit, Verdict,
};
use crate::identity::{NodeKeypair, PublicKey};
use crate::router::{self, Event, FrameError, PeerId, PublishError, Router, SendError};
use crate::wire::Record;

/// The overlay's routing core: spanning tree, virtual ring and source routes.
pub struct RouterCore {
    router: Router,
}

impl RouterCore {
    /// A core for `secret`'s node with the default tunables. `rng_seed` only varies timer
    /// jitter and tie-breaks; any value is correct.
    pub fn new(secret: &NodeKeypair, rng_seed: u64, now: Instant) -> Self {
        Self::with_config(secret, router::Config::default(), rng_seed, now)
    }

    /// A core with explicit tunables.
    pub fn with_config(
        secret: &NodeKeypair,
        config: router::Config,
        rng_seed: u64,
        now: Instant,
    ) -> Self {
        let mut router = Router::new(secret.clone(), config, rng_seed, now);
        // Record expiries are wall-clock times; a clock before 1970 reads as 1970.
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        router.set_unix_time(now, unix);
        Self { router }
    }

    /// A core with `config`, its jitter seeded from the OS random source, starting now.
    pub fn from_entropy(secret: &NodeKeypair, config: router::Config) -> Self {
        use rand::RngCore;
        let seed = rand::rngs::OsRng.next_u64();
        Self::with_config(secret, config, seed, Instant::now())
    }

    /// The router inside, for inspection.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The router inside, to set its record policy before the driver starts.
    pub fn router_mut(&mut self) -> &mut Router {
        &mut self.router
    }
}

impl std::fmt::Debug for RouterCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterCore")
            .field("key", &self.router.public_key())
            .finish_non_exhaustive()
    }
}

impl RoutingCore for RouterCore {
    fn handle_peer_up(&mut self, peer: PeerId, key: PublicKey, now: Instant) {
        if let Err(e) = self.router.handle_peer_up(peer, key, now) {
            // The link stays open but carries nothing; the driver's table limits make this
            // rare (duplicate ids are a driver bug, too many peers a configured limit).
            tracing::warn!(?peer, %key, error = %e, "router refused a peer");
        }
    }

    fn handle_peer_up_negotiated(&mut self, peer: PeerId, key: PublicKey, caps: u32, now: Instant) {
        if let Err(e) = self.router.handle_peer_up_with(peer, key, caps, now) {
            tracing::warn!(?peer, %key, error = %e, "router refused a peer");
        }
    }

    fn handle_peer_down(&mut self, peer: PeerId, now: Instant) {
        self.router.handle_peer_down(peer, now);
    }

    fn handle_peer_rtt(&mut self, peer: PeerId, rtt: Duration, now: Instant) {
        self.router.handle_peer_latency(peer, rtt, now);
    }

    fn handle_frame(
        &mut self,
        peer: PeerId,
        frame: &[u8],
        now: Instant,
    ) -> Result<(), FrameRejected> {
        match self.router.handle_frame(peer, frame, now) {
            Ok(()) => Ok(()),
            Err(FrameError::UnknownPeer) => Err(FrameRejected {
                reason: "unknown_peer",
                verdict: Verdict::DropFrame,
            }),
            Err(FrameError::Malformed(e)) => Err(FrameRejected {
                reason: match e {
                    crate::wire::WireError::Oversized(_) => "oversized",
                    _ => "malformed",
                },
                verdict: Verdict::DropPeer,
            }),
            Err(FrameError::Refused(reason)) => Err(FrameRejected {
                reason: reason.as_str(),
                verdict: Verdict::DropPeer,
            }),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.router.handle_timeout(now);
    }

    fn send(&mut self, to: PublicKey, payload: Bytes, now: Instant) -> Result<(), SendRejected> {
        self.router
            // No copy: the session socket's buffer is not shared.
            .send(to, Vec::from(payload), now)
            .map_err(|e| match e {
                SendError::TooLarge(_) => SendRejected {
                    reason: "payload_too_large",
                },
            })
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.router.poll_transmit().map(|t| Transmit {
            peer: t.peer,
            bytes: Bytes::from(t.bytes),
            reliable: t.reliable,
        })
    }

    fn poll_event(&mut self) -> Option<CoreEvent> {
        // Misbehaviour was already answered through `handle_frame`'s verdict; skip it here.
        loop {
            match self.router.poll_event()? {
                Event::Delivered { from, payload, .. } => {
                    return Some(CoreEvent::Delivered {
                        from,
                        payload: Bytes::from(payload),
                    });
                }
                Event::TreeParentChanged { parent, .. } => {
                    return Some(CoreEvent::TreeParentChanged(parent));
                }
                Event::NodeReachable(key) => return Some(CoreEvent::NodeReachable(key)),
                Event::LookupDone { id, record, .. } => {
                    return Some(CoreEvent::LookupDone { id: id.0, record });
                }
                Event::Misbehaving { .. } => continue,
            }
        }
    }

    fn publish(&mut self, record: Record, now: Instant) -> Result<(), RecordRejected> {
        self.router
            .publish(record, now)
            .map_err(|e| RecordRejected {
                reason: match e {
                    PublishError::Refused(reason) => reason.as_str(),
                    PublishError::TooMany => "too_many",
                },
            })
    }

    fn lookup(&mut self, key: PublicKey, now: Instant) -> Option<u64> {
        Some(self.router.lookup(key, now).0)
    }

    fn drop_counts(&self) -> Vec<(&'static str, u64)> {
        let metrics = self.router.metrics();
        router::DropReason::ALL
            .iter()
            .map(|r| (r.as_str(), metrics.drops(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.router.poll_timeout()
    }

    fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(self.router.snapshot()).unwrap_or(serde_json::Value::Null)
    }
}
