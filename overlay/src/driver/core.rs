//! The interface between the driver and the sans-IO routing state machine.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::identity::PublicKey;
use crate::link::PeerId;
use crate::wire::Record;

/// A routing state machine the driver can run.
///
/// The driver calls the `handle_*` methods as inputs arrive, then drains the outputs in this
/// order until each returns `None`: [`poll_transmit`](Self::poll_transmit),
/// [`poll_event`](Self::poll_event); finally it asks [`poll_timeout`](Self::poll_timeout) when to
/// call [`handle_timeout`](Self::handle_timeout) next. The machine never reads a clock or a
/// socket: `now` is always passed in.
pub trait RoutingCore: Send + 'static {
    /// A link to `key` came up under the id `peer` (after TLS and the hello).
    fn handle_peer_up(&mut self, peer: PeerId, key: PublicKey, now: Instant);

    /// As [`handle_peer_up`](Self::handle_peer_up), with the capability bits the hello
    /// negotiated (`wire::CAP_*`): a core must send nothing beyond the base protocol that the
    /// link lacks. The default ignores them, for cores that only speak the base protocol.
    fn handle_peer_up_negotiated(&mut self, peer: PeerId, key: PublicKey, caps: u32, now: Instant) {
        let _ = caps;
        self.handle_peer_up(peer, key, now);
    }

    /// The link `peer` went down; frames for it are no longer delivered.
    fn handle_peer_down(&mut self, peer: PeerId, now: Instant);

    /// A fresh round-trip estimate for the link `peer` (link cost for parent choice).
    fn handle_peer_rtt(&mut self, peer: PeerId, rtt: Duration, now: Instant) {
        let _ = (peer, rtt, now);
    }

    /// A frame arrived from `peer`, on the control stream or as a datagram.
    fn handle_frame(
        &mut self,
        peer: PeerId,
        frame: &[u8],
        now: Instant,
    ) -> Result<(), FrameRejected>;

    /// The time given by [`poll_timeout`](Self::poll_timeout) has come.
    fn handle_timeout(&mut self, now: Instant);

    /// Sends `payload` to the node `to` through the overlay.
    fn send(&mut self, to: PublicKey, payload: Bytes, now: Instant) -> Result<(), SendRejected>;

    /// The next frame to put on a link.
    fn poll_transmit(&mut self) -> Option<Transmit>;

    /// The next event for the application.
    fn poll_event(&mut self) -> Option<CoreEvent>;

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Publishes a signed record on the ring (see `Router::publish`). The default refuses:
    /// a core without records.
    fn publish(&mut self, record: Record, now: Instant) -> Result<(), RecordRejected> {
        let _ = (record, now);
        Err(RecordRejected {
            reason: "unsupported",
        })
    }

    /// Starts a lookup of the record under `key`; its result comes as
    /// [`CoreEvent::LookupDone`] with the returned id. `None`: this core has no records.
    fn lookup(&mut self, key: PublicKey, now: Instant) -> Option<u64> {
        let _ = (key, now);
        None
    }

    /// Frames and payloads the core dropped so far, by reason (cumulative counts; reasons
    /// with none may be left out). The driver exports them as metrics.
    fn drop_counts(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// The routing state as JSON for the admin view (tree, ring, tables).
    fn snapshot(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// A frame for one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The link to send on.
    pub peer: PeerId,
    /// The frame.
    pub bytes: Bytes,
    /// `true` for the reliable control stream, `false` for a datagram.
    pub reliable: bool,
}

/// Output of the routing core for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEvent {
    /// A payload addressed to this node arrived from `from`.
    Delivered {
        /// The sending node.
        from: PublicKey,
        /// The payload given to [`RoutingCore::send`] at the other end.
        payload: Bytes,
    },
    /// The node became reachable through the overlay.
    NodeReachable(PublicKey),
    /// The spanning-tree parent changed (`None`: this node is a root).
    TreeParentChanged(Option<PublicKey>),
    /// A lookup started with [`RoutingCore::lookup`] ended.
    LookupDone {
        /// The id `lookup` returned.
        id: u64,
        /// The newest valid record found, if any.
        record: Option<Record>,
    },
}

/// What the driver does with the peer after a refused frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Drop the frame only (stale or harmless).
    DropFrame,
    /// Drop the frame and the link: the peer misbehaves.
    DropPeer,
}

/// A frame the routing core refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame refused: {reason}")]
pub struct FrameRejected {
    /// Short label, counted in the drop metrics.
    pub reason: &'static str,
    /// What to do with the peer.
    pub verdict: Verdict,
}

/// A record the routing core would not publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record refused: {reason}")]
pub struct RecordRejected {
    /// Short label (a drop reason of the core, or `too_many`, `unsupported`).
    pub reason: &'static str,
}

/// A payload the routing core could not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("send refused: {reason}")]
pub struct SendRejected {
    /// Short label, counted in the drop metrics.
    pub reason: &'static str,
}
