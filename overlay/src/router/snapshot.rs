//! A serialisable view of the router for an admin endpoint, and an estimate of its memory.

use std::mem::size_of;

use serde::Serialize;

use crate::identity::PublicKey;
use crate::router::metrics::Metrics;
use crate::router::{PeerId, Router};

/// One peer in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct PeerSnapshot {
    /// The driver's id for the link.
    pub peer: PeerId,
    /// The peer's key.
    pub key: PublicKey,
    /// Our port toward it.
    pub port: u16,
    /// Its tree coordinates, if it follows our root.
    pub coords: Option<Vec<u16>>,
    /// Last measured round trip, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Whether it is our tree parent.
    pub is_parent: bool,
    /// Frames queued for it: (control, traffic).
    pub queued: (usize, usize),
}

/// The ring part of a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct RingSnapshot {
    /// The closest key below ours that we hold a route to.
    pub predecessor: Option<PublicKey>,
    /// Ring table size.
    pub entries: usize,
    /// Current bootstrap interval, in milliseconds.
    pub bootstrap_interval_ms: u64,
}

/// Peers, tree, ring, table sizes and counters.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// This node.
    pub key: PublicKey,
    /// The root it follows.
    pub root: PublicKey,
    /// The root's sequence.
    pub root_seq: u64,
    /// Its coordinates.
    pub coords: Vec<u16>,
    /// Its peers.
    pub peers: Vec<PeerSnapshot>,
    /// Its ring state.
    pub ring: RingSnapshot,
    /// Source routes installed.
    pub routes: usize,
    /// Remote coordinates cached.
    pub coords_cached: usize,
    /// Path search breadcrumbs held.
    pub breadcrumbs: usize,
    /// Records kept for others.
    pub records: usize,
    /// Estimated routing state, in bytes.
    pub state_bytes: usize,
    /// Counters.
    pub metrics: Metrics,
}

impl Router {
    /// A serialisable view of peers, tree, ring and counters.
    pub fn snapshot(&self) -> Snapshot {
        let peers = self
            .peers
            .iter()
            .map(|(id, p)| PeerSnapshot {
                peer: *id,
                key: p.key,
                port: p.port,
                coords: self.peer_coords(*id).map(<[u16]>::to_vec),
                rtt_ms: p.rtt.map(|r| r.as_secs_f64() * 1000.0),
                is_parent: self.tree.parent == Some(*id),
                queued: self.queues.get(id).map_or((0, 0), |q| q.lens()),
            })
            .collect();
        Snapshot {
            key: self.key,
            root: self.tree.current.root,
            root_seq: self.tree.current.seq,
            coords: self.tree.coords.clone(),
            peers,
            ring: RingSnapshot {
                predecessor: self.ring_predecessor(),
                entries: self.ring.entries.len(),
                bootstrap_interval_ms: self.ring.interval.as_millis() as u64,
            },
            routes: self.paths.routes.len(),
            coords_cached: self.coords_cache.len(),
            breadcrumbs: self.paths.crumbs.len(),
            records: self.records_held(),
            state_bytes: self.state_bytes(),
            metrics: self.metrics.clone(),
        }
    }

    /// Estimated bytes of routing state (tables and held announcements, not queues).
    pub fn state_bytes(&self) -> usize {
        let key = size_of::<PublicKey>();
        let ann_bytes = |hops: usize| 48 + hops * 98;
        let peers: usize = self
            .peers
            .values()
            .map(|p| {
                128 + p.tree.ann.as_ref().map_or(0, |a| ann_bytes(a.hops.len()))
                    + 2 * p.tree.coords.len()
            })
            .sum();
        let ring = self.ring.entries.len() * (key + size_of::<super::ring::RingEntry>());
        let routes: usize = self
            .paths
            .routes
            .values()
            .map(|r| key + 40 + 2 * r.ports.len())
            .sum();
        let crumbs = self.paths.crumbs.len() * (key + 8 + size_of::<super::path::Crumb>())
            + self.paths.meets.len() * (2 * key + 8);
        let coords: usize = self
            .coords_cache
            .values()
            .map(|(c, _)| key + 40 + 2 * c.len())
            .sum();
        peers
            + ann_bytes(self.tree.current.hops.len())
            + ring
            + routes
            + crumbs
            + coords
            + self.records.bytes()
    }
}
