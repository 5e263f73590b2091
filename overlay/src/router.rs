//! The routing state machine: spanning tree, virtual ring (SNEK), source routes and traffic
//! forwarding, written sans-IO.
//!
//! The router owns no socket, no clock and no task. Its driver (the tokio layer, or the
//! simulator) tells it when peer links come and go, hands it each frame a peer sent, calls it
//! back at the deadline it asked for, and takes from it the frames to send and the events for
//! the application. See [`Router`] for the calling order.
//!
//! Concerns live in their own files: `tree` (announcements, parent choice, coordinates),
//! `ring` (bootstraps, ring table, key routing), `path` (path search and source routes),
//! `forward` (traffic), `records` (signed records kept at ring placements), `queue` (per-peer
//! bounded queues), `timer`, `metrics`, `snapshot`.

mod forward;
mod metrics;
mod path;
mod queue;
mod records;
mod ring;
mod snapshot;
#[cfg(test)]
mod tests;
mod timer;
mod tree;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::identity::{NodeKeypair, PublicKey, SigCache};
use crate::wire::{
    CAP_COMPACT_REPLY, CAP_GUIDED_SEARCH, CAP_PATH_SEARCH, CAP_RECORDS, CAP_SOURCE_ROUTING,
    CAP_TEARDOWN, Frame, Record, WireError,
};

pub use metrics::{DropReason, Metrics};
pub use queue::{CONTROL_QUEUE_LIMIT, TRAFFIC_QUEUE_LIMIT};
pub use records::{LookupId, PublishError, RecordPolicy, SelfCertifying};
pub use snapshot::{PeerSnapshot, RingSnapshot, Snapshot};

use path::PathState;
use queue::PeerQueue;
use records::RecordState;
use ring::RingState;
use timer::{Timer, TimerTable};
use tree::TreeState;

/// Largest application payload [`Router::send`] accepts, in bytes: what a traffic frame always
/// carries in one link datagram.
pub const MAX_PAYLOAD: usize = crate::wire::MAX_TRAFFIC_PAYLOAD;
/// Most application events held until polled; beyond it the oldest is dropped.
pub const EVENT_QUEUE_LIMIT: usize = 4096;

/// The driver's name for one peer link (not one node: a node may be re-linked under a new id).
/// The driver allocates them; the router never reuses one on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct PeerId(pub u64);

/// A frame to send to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The link to send on.
    pub peer: PeerId,
    /// The encoded frame.
    pub bytes: Vec<u8>,
    /// Control frames go on the reliable stream; traffic as an unreliable datagram.
    pub reliable: bool,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An application datagram arrived for this node.
    Delivered {
        /// The sender.
        from: PublicKey,
        /// The datagram.
        payload: Vec<u8>,
        /// Overlay hops it took.
        hops: u8,
    },
    /// This node's tree parent changed (`None`: this node is now a root).
    TreeParentChanged {
        /// The new parent's key.
        parent: Option<PublicKey>,
        /// The root this node now follows.
        root: PublicKey,
    },
    /// A node became reachable: a new peer, or a node first heard from.
    NodeReachable(PublicKey),
    /// A peer sent something hostile or malformed; the driver may close the link.
    Misbehaving {
        /// The link.
        peer: PeerId,
        /// What it did.
        reason: DropReason,
    },
    /// A lookup started with [`Router::lookup`] ended.
    LookupDone {
        /// Which lookup.
        id: LookupId,
        /// The key looked up.
        key: PublicKey,
        /// The newest valid record any placement returned, if one did.
        record: Option<Record>,
        /// Hops to the answering node and back, for the record returned.
        hops: u8,
    },
}

/// Tunables; [`Config::default`] suits a real network.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often a root re-announces with a new sequence number.
    pub root_refresh: Duration,
    /// How long a peer's announcement stays usable without a refresh.
    pub announcement_expiry: Duration,
    /// After losing the parent, how long to stay a root before choosing again (lets bad news
    /// reach the subtree first).
    pub reparent_wait: Duration,
    /// Link cost assumed before a latency is measured, in milliseconds.
    pub default_link_cost_ms: u64,
    /// Ring bootstrap interval right after a change.
    pub bootstrap_min: Duration,
    /// How long the bootstrap interval stays at `bootstrap_min` after a change.
    pub bootstrap_fast_period: Duration,
    /// Ring bootstrap interval once stable (the interval doubles up to this).
    pub bootstrap_max: Duration,
    /// How long a ring entry lives without a refresh; keep above twice `bootstrap_max`.
    pub ring_entry_ttl: Duration,
    /// Hop limit of frames this node originates.
    pub hop_limit: u8,
    /// Minimum time between two path searches for the same node.
    pub search_backoff: Duration,
    /// How long a path search breadcrumb is kept.
    pub breadcrumb_ttl: Duration,
    /// How long learned coordinates of a remote node are kept.
    pub coords_ttl: Duration,
    /// How long a source route unused is kept.
    pub route_ttl: Duration,
    /// Most ring table entries.
    pub max_ring_entries: usize,
    /// Most source routes.
    pub max_routes: usize,
    /// Most path search breadcrumbs.
    pub max_breadcrumbs: usize,
    /// Most cached coordinates.
    pub max_coords: usize,
    /// Most simultaneous peers.
    pub max_peers: usize,
    /// Most path search units accepted from one peer per second: a flood frame counts one, a
    /// guided search frame its width.
    pub path_finds_per_peer_per_sec: u32,
    /// Most guided path searches accepted (and started) per origin per second, at every hop.
    pub seeks_per_origin_per_sec: u32,
    /// Most origins whose search rate is tracked at once; a search from an origin beyond it is
    /// dropped until a window ends.
    pub max_seek_origins: usize,
    /// Width a guided path search starts with (at most `wire::MAX_SEEK_WIDTH`): how many
    /// greedy ways toward the target it follows at most.
    pub search_width: u8,
    /// Most peers one hop splits a search among.
    pub search_fanout: u8,
    /// Hops a search may take beyond the tree distance between searcher and target.
    pub search_slack: u8,
    /// How long after a source route is installed a route probe from the other end replaces
    /// it only with a way no longer; after that a probe answers a repair and always replaces.
    pub route_settle: Duration,
    /// Placements (replicas) of each record, at most `wire::MAX_REPLICAS`.
    pub record_replicas: u8,
    /// Bytes of records this node keeps for others at most.
    pub record_store_bytes: usize,
    /// Records kept per publisher at most.
    pub records_per_publisher: usize,
    /// Longest record lifetime accepted (a record expiring later is refused).
    pub record_max_ttl: Duration,
    /// How often this node sends its own records again (at most half their lifetime).
    pub record_republish: Duration,
    /// The records timer's period while records are kept or published.
    pub record_tick: Duration,
    /// Records this node publishes itself at most.
    pub max_own_records: usize,
    /// Lookups in flight at most; a new one ends the oldest.
    pub max_pending_lookups: usize,
    /// How long a lookup waits for its placements.
    pub lookup_timeout: Duration,
    /// How long a lookup that has a record waits for a newer one from the other placements.
    pub lookup_grace: Duration,
    /// Store frames accepted per origin per second.
    pub stores_per_origin_per_sec: u32,
    /// Lookup frames accepted per origin per second.
    pub lookups_per_origin_per_sec: u32,
    /// Origins whose store and lookup rates are tracked at once.
    pub max_record_origins: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root_refresh: Duration::from_secs(30 * 60),
            announcement_expiry: Duration::from_secs(45 * 60),
            reparent_wait: Duration::from_secs(1),
            default_link_cost_ms: 50,
            bootstrap_min: Duration::from_secs(1),
            bootstrap_fast_period: Duration::from_secs(10),
            bootstrap_max: Duration::from_secs(60),
            ring_entry_ttl: Duration::from_secs(150),
            hop_limit: 255,
            search_backoff: Duration::from_secs(5),
            breadcrumb_ttl: Duration::from_secs(10),
            coords_ttl: Duration::from_secs(300),
            route_ttl: Duration::from_secs(600),
            max_ring_entries: 4096,
            max_routes: 1024,
            max_breadcrumbs: 4096,
            max_coords: 4096,
            max_peers: 256,
            path_finds_per_peer_per_sec: 500,
            seeks_per_origin_per_sec: 20,
            max_seek_origins: 4096,
            search_width: 16,
            search_fanout: 4,
            search_slack: 0,
            route_settle: Duration::from_secs(3),
            record_replicas: 3,
            record_store_bytes: 4 << 20,
            records_per_publisher: 8,
            record_max_ttl: Duration::from_secs(24 * 3600),
            record_republish: Duration::from_secs(10 * 60),
            record_tick: Duration::from_secs(15),
            max_own_records: 64,
            max_pending_lookups: 256,
            lookup_timeout: Duration::from_secs(3),
            lookup_grace: Duration::from_millis(300),
            stores_per_origin_per_sec: 20,
            lookups_per_origin_per_sec: 50,
            max_record_origins: 4096,
        }
    }
}

/// Why a peer could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The peer id is already up.
    #[error("peer id already in use")]
    Duplicate,
    /// [`Config::max_peers`] reached.
    #[error("too many peers")]
    TooMany,
    /// Every port number is in use.
    #[error("no free port")]
    NoPort,
}

/// Why a frame from a peer was refused. Only the peer's faults are errors; ordinary drops
/// (no route, hop limit) are counted in [`Metrics`] and return `Ok`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The peer is not up.
    #[error("frame from an unknown peer")]
    UnknownPeer,
    /// The bytes do not decode.
    #[error("malformed frame: {0}")]
    Malformed(#[from] WireError),
    /// The frame decoded but is hostile or invalid.
    #[error("frame refused: {}", .0.as_str())]
    Refused(DropReason),
}

/// Why an application datagram could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Over [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// One peer link as the router sees it.
#[derive(Debug)]
struct Peer {
    key: PublicKey,
    port: u16,
    /// Capability bits negotiated on the link (`wire::CAP_*`).
    caps: u32,
    rtt: Option<Duration>,
    tree: tree::PeerTree,
    path_find_window: (Option<Instant>, u32),
}

/// The routing state machine of one node.
///
/// # Calling order
///
/// Getters (`public_key`, `root`, `parent`, `coords`, `metrics`, `snapshot`) may be called at
/// any time. Inputs, each with the current time:
/// - [`handle_peer_up`](Self::handle_peer_up) when a link is established and the hello
///   negotiated, [`handle_peer_down`](Self::handle_peer_down) when it is gone,
///   [`handle_peer_latency`](Self::handle_peer_latency) whenever a new RTT is measured;
/// - [`handle_frame`](Self::handle_frame) for every frame a peer sent (control stream or
///   datagram alike);
/// - [`handle_timeout`](Self::handle_timeout) once the deadline from
///   [`poll_timeout`](Self::poll_timeout) has passed (calling it early is harmless);
/// - [`send`](Self::send) to send an application datagram to a node by key;
/// - [`publish`](Self::publish) and [`lookup`](Self::lookup) for records on the ring (call
///   [`set_unix_time`](Self::set_unix_time) first: record expiries are wall-clock times).
///
/// After any input, drain the outputs in this order: [`poll_transmit`](Self::poll_transmit)
/// until `None` (send each on its link: `reliable` on the control stream, otherwise as a
/// datagram), [`poll_event`](Self::poll_event) until `None`, then
/// [`poll_timeout`](Self::poll_timeout) to re-arm the single timer.
pub struct Router {
    keypair: NodeKeypair,
    key: PublicKey,
    config: Config,
    rng: ChaCha8Rng,
    peers: BTreeMap<PeerId, Peer>,
    ports: BTreeMap<u16, PeerId>,
    next_port: u16,
    queues: BTreeMap<PeerId, PeerQueue>,
    rr_cursor: Option<PeerId>,
    events: VecDeque<Event>,
    timers: TimerTable,
    metrics: Metrics,
    tree: TreeState,
    ring: RingState,
    paths: PathState,
    records: RecordState,
    coords_cache: HashMap<PublicKey, (Vec<u16>, Instant)>,
    sig_cache: SigCache,
}

impl Router {
    /// A router for `keypair`'s node, alone (its own root) until peers come up.
    pub fn new(keypair: NodeKeypair, config: Config, rng_seed: u64, now: Instant) -> Self {
        let key = keypair.public_key();
        let mut r = Router {
            tree: TreeState::new(key),
            ring: RingState::new(config.bootstrap_min),
            keypair,
            key,
            config,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            peers: BTreeMap::new(),
            ports: BTreeMap::new(),
            next_port: 1,
            queues: BTreeMap::new(),
            rr_cursor: None,
            events: VecDeque::new(),
            timers: TimerTable::default(),
            metrics: Metrics::default(),
            paths: PathState::default(),
            records: RecordState::new(now),
            coords_cache: HashMap::new(),
            sig_cache: SigCache::default(),
        };
        r.timers
            .set(Timer::RootRefresh, now + r.config.root_refresh);
        r.timers.set(Timer::Bootstrap, now + r.config.bootstrap_min);
        r
    }

    /// This node's key.
    pub fn public_key(&self) -> PublicKey {
        self.key
    }

    /// The root this node follows (itself when it is a root).
    pub fn root(&self) -> PublicKey {
        self.tree.current.root
    }

    /// The parent's key, if this node is not a root.
    pub fn parent(&self) -> Option<PublicKey> {
        self.tree
            .parent
            .and_then(|p| self.peers.get(&p))
            .map(|p| p.key)
    }

    /// This node's tree coordinates (ports from the root).
    pub fn coords(&self) -> &[u16] {
        &self.tree.coords
    }

    /// Checks announcement signatures against `cache` from now on, which other routers in
    /// this process may share (see [`SigCache`]).
    pub fn share_sig_cache(&mut self, cache: SigCache) {
        self.sig_cache = cache;
    }

    /// Counters since start.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether the ring table holds a live route toward `key`.
    pub fn ring_knows(&self, key: &PublicKey) -> bool {
        self.ring
            .entries
            .get(key)
            .is_some_and(|e| e.root == self.tree.current.root)
    }

    /// The node a live ring route toward `key` leads to next (`key` itself on the last hop),
    /// if one is held under the current root.
    pub fn ring_via(&self, key: &PublicKey) -> Option<PublicKey> {
        let e = self.ring.entries.get(key)?;
        if e.root != self.tree.current.root {
            return None;
        }
        self.peers.get(&e.peer).map(|p| p.key)
    }

    /// Whether a source route to `key` is installed.
    pub fn has_route(&self, key: &PublicKey) -> bool {
        self.paths.routes.contains_key(key)
    }

    /// A link came up to the node `key`, its hello negotiated with every capability this
    /// build has.
    pub fn handle_peer_up(
        &mut self,
        peer: PeerId,
        key: PublicKey,
        now: Instant,
    ) -> Result<(), PeerError> {
        self.handle_peer_up_with(peer, key, crate::wire::CAPABILITIES, now)
    }

    /// A link came up to the node `key`; its hello negotiated the capability bits `caps`
    /// (`wire::CAP_*`). Nothing beyond the base protocol that `caps` lacks is ever sent on it.
    pub fn handle_peer_up_with(
        &mut self,
        peer: PeerId,
        key: PublicKey,
        caps: u32,
        now: Instant,
    ) -> Result<(), PeerError> {
        if self.peers.contains_key(&peer) {
            return Err(PeerError::Duplicate);
        }
        if self.peers.len() >= self.config.max_peers {
            return Err(PeerError::TooMany);
        }
        let port = self.allocate_port().ok_or(PeerError::NoPort)?;
        tracing::debug!(?peer, %key, port, "peer up");
        self.peers.insert(
            peer,
            Peer {
                key,
                port,
                caps,
                rtt: None,
                tree: tree::PeerTree::default(),
                path_find_window: (None, 0),
            },
        );
        self.ports.insert(port, peer);
        self.queues.insert(peer, PeerQueue::default());
        self.announce_to(peer);
        self.push_event(Event::NodeReachable(key));
        self.ring_changed(now);
        Ok(())
    }

    /// A link went down.
    pub fn handle_peer_down(&mut self, peer: PeerId, now: Instant) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        tracing::debug!(?peer, key = %p.key, "peer down");
        self.ports.remove(&p.port);
        self.queues.remove(&peer);
        self.ring_peer_down(peer);
        self.paths.forget_port(p.port);
        if self.tree.parent == Some(peer) {
            self.parent_lost(Some(p.key), now);
        }
        self.ring_changed(now);
    }

    /// A new round-trip time was measured on a link.
    pub fn handle_peer_latency(&mut self, peer: PeerId, rtt: Duration, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.rtt = Some(rtt);
            self.select_parent(now);
        }
    }

    /// A frame arrived from `peer`.
    pub fn handle_frame(
        &mut self,
        peer: PeerId,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), FrameError> {
        if !self.peers.contains_key(&peer) {
            self.metrics.drop(DropReason::UnknownPeer);
            return Err(FrameError::UnknownPeer);
        }
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                let reason = match e {
                    WireError::Oversized(_) => DropReason::Oversized,
                    _ => DropReason::Malformed,
                };
                self.metrics.drop(reason);
                self.push_event(Event::Misbehaving { peer, reason });
                tracing::debug!(?peer, error = %e, "malformed frame");
                return Err(FrameError::Malformed(e));
            }
        };
        self.metrics.frame_in(frame.frame_type(), bytes.len());
        let result = match frame {
            Frame::Announce(a) => self.handle_announce(peer, a, now),
            Frame::Bootstrap(b) => self.handle_bootstrap(Some(peer), b, now),
            Frame::Traffic(t) => {
                self.forward_traffic(Some(peer), t, now);
                Ok(())
            }
            Frame::PathFind(p) => self.handle_path_find(peer, p, now),
            Frame::PathReply(r) => self.handle_path_reply(peer, r, now),
            Frame::PathSeek(p) => self.handle_path_seek(peer, p, now),
            Frame::Teardown(t) => self.handle_teardown(peer, t, now),
            Frame::Store(s) => self.handle_store(peer, s, now),
            Frame::Lookup(l) => self.handle_lookup(peer, l, now),
            Frame::LookupReply(r) => self.handle_lookup_reply(peer, r, now),
            Frame::PathAnswer(a) => self.handle_path_answer(peer, a, now),
        };
        match result {
            Ok(()) => Ok(()),
            Err(reason) => {
                self.metrics.drop(reason);
                if is_peer_fault(reason) {
                    self.push_event(Event::Misbehaving { peer, reason });
                    Err(FrameError::Refused(reason))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.timers.expired(now) {
            match t {
                Timer::RootRefresh => self.root_refresh(now),
                Timer::Reparent => {
                    self.tree.holding = false;
                    self.select_parent(now);
                }
                Timer::Bootstrap => self.bootstrap_tick(now),
                Timer::Records => self.records_tick(now),
            }
        }
    }

    /// Sends an application datagram to the node `to`.
    pub fn send(&mut self, to: PublicKey, payload: Vec<u8>, now: Instant) -> Result<(), SendError> {
        if payload.len() > MAX_PAYLOAD {
            self.metrics.drop(DropReason::PayloadTooLarge);
            return Err(SendError::TooLarge(payload.len()));
        }
        self.send_traffic(to, payload, false, now);
        Ok(())
    }

    /// The next frame to send, if any; peers are served in turn, control before traffic.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let ready = |(id, q): (&PeerId, &PeerQueue)| (!q.is_empty()).then_some(*id);
        let id = match self.rr_cursor {
            Some(s) => self
                .queues
                .range((std::ops::Bound::Excluded(s), std::ops::Bound::Unbounded))
                .chain(self.queues.range(..=s))
                .find_map(ready),
            None => self.queues.iter().find_map(ready),
        }?;
        let (bytes, reliable) = self.queues.get_mut(&id)?.pop()?;
        self.rr_cursor = Some(id);
        Some(Transmit {
            peer: id,
            bytes,
            reliable,
        })
    }

    /// The next application event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    fn allocate_port(&mut self) -> Option<u16> {
        // Ports advance instead of taking the lowest free one, so a port just released is not
        // handed to a new peer while stale coordinates still name it.
        for _ in 0..u16::MAX {
            let p = self.next_port;
            self.next_port = if self.next_port == u16::MAX {
                1
            } else {
                self.next_port + 1
            };
            if !self.ports.contains_key(&p) {
                return Some(p);
            }
        }
        None
    }

    fn push_event(&mut self, ev: Event) {
        if self.events.len() >= EVENT_QUEUE_LIMIT {
            self.events.pop_front();
            self.metrics.drop(DropReason::EventOverflow);
        }
        self.events.push_back(ev);
    }

    /// Queues a frame for `peer`: announcements, bootstraps and path frames on the control
    /// stream, traffic as datagrams.
    fn enqueue(&mut self, peer: PeerId, frame: &Frame) {
        let Some(caps) = self.peers.get(&peer).map(|p| p.caps) else {
            self.metrics.drop(DropReason::NoRoute);
            return;
        };
        let gated;
        let frame = match frame {
            Frame::PathFind(_) | Frame::PathReply(_) if caps & CAP_PATH_SEARCH == 0 => return,
            Frame::PathSeek(_) if caps & CAP_GUIDED_SEARCH == 0 => return,
            Frame::PathAnswer(_) if caps & CAP_COMPACT_REPLY == 0 => return,
            Frame::Teardown(_) if caps & CAP_TEARDOWN == 0 => return,
            Frame::Store(_) | Frame::Lookup(_) | Frame::LookupReply(_)
                if caps & CAP_RECORDS == 0 =>
            {
                // A record frame taken to a peer that cannot carry it is lost here; the
                // lookup times out or the next republish tries again.
                self.metrics.drop(DropReason::NoRoute);
                return;
            }
            Frame::Traffic(t) if caps & CAP_SOURCE_ROUTING == 0 => {
                // A probe only teaches a source route; the rest travels on by tree or key,
                // without the route (not broken: only this link cannot carry it).
                if t.probe {
                    return;
                }
                if t.route.is_empty() && t.reverse.is_empty() {
                    frame
                } else {
                    let mut t = t.clone();
                    t.route.clear();
                    t.route_pos = 0;
                    t.reverse.clear();
                    gated = Frame::Traffic(t);
                    &gated
                }
            }
            _ => frame,
        };
        let shrunk;
        let frame = match frame {
            Frame::Traffic(t) if frame.encoded_len() > crate::wire::MAX_TRAFFIC_FRAME => {
                let mut t = t.clone();
                if !t.shrink_to(crate::wire::MAX_TRAFFIC_FRAME) {
                    self.metrics.drop(DropReason::PayloadTooLarge);
                    return;
                }
                shrunk = Frame::Traffic(t);
                &shrunk
            }
            _ => frame,
        };
        let Some(q) = self.queues.get_mut(&peer) else {
            self.metrics.drop(DropReason::NoRoute);
            return;
        };
        let bytes = frame.encode();
        let (ty, len) = (frame.frame_type(), bytes.len());
        let dropped = match frame {
            Frame::Traffic(t) => q.push_traffic(t.src, bytes),
            _ => q.push_control(bytes),
        };
        if dropped {
            self.metrics.drop(DropReason::QueueFull);
        }
        self.metrics.frame_out(ty, len);
    }

    fn peer_by_port(&self, port: u16) -> Option<PeerId> {
        self.ports.get(&port).copied()
    }

    fn cache_coords(&mut self, key: PublicKey, coords: &[u16], now: Instant) -> bool {
        // The common case on a busy flow: the same coordinates again, only the time moves.
        if let Some((held, seen)) = self.coords_cache.get_mut(&key)
            && held.as_slice() == coords
        {
            *seen = now;
            return false;
        }
        let fresh = !self.coords_cache.contains_key(&key);
        if fresh && self.coords_cache.len() >= self.config.max_coords {
            // Evict the stalest entry: bounded work for a bounded table.
            if let Some(old) = self
                .coords_cache
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
            {
                self.coords_cache.remove(&old);
            }
        }
        self.coords_cache.insert(key, (coords.to_vec(), now));
        fresh
    }
}

/// Drop reasons that mean the peer sent something it never should have.
fn is_peer_fault(reason: DropReason) -> bool {
    matches!(
        reason,
        DropReason::Malformed
            | DropReason::Oversized
            | DropReason::BadSignature
            | DropReason::BadAnnouncement
            | DropReason::BadPath
            | DropReason::RateLimited
    )
}

/// Tree distance between two coordinates: hops up to the common ancestor and down again.
pub fn tree_distance(a: &[u16], b: &[u16]) -> usize {
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    a.len() + b.len() - 2 * common
}
