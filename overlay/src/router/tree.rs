//! The spanning tree: the root is the highest key; announcements signed hop by hop flow down
//! from it; a node's coordinates are the ports on the path from the root.
//!
//! Parent choice: highest root key, then highest root sequence, then lowest cost (depth ×
//! link latency) among the candidates at the moment a choice is made. Once chosen, the parent
//! stays while it offers the best (root, sequence): that is the hysteresis, and it keeps the
//! tree loop-free (announcements of one sequence spread outward from the root, so a node never
//! hears the sequence from its own subtree first). Bad news from the parent (a weaker root, an
//! older sequence, a path through us) makes the node a root at once, tells its peers (so the
//! subtree drops the stale path), and holds for `reparent_wait` before choosing again. Losing
//! the parent link moves at once to another peer whose path avoids the lost parent, if any.

use std::time::Instant;

use crate::identity::PublicKey;
use crate::router::metrics::DropReason;
use crate::router::timer::Timer;
use crate::router::{Event, PeerId, Router, tree_distance};
use crate::wire::{Announcement, Frame, WireError};

/// What the tree knows of one peer.
#[derive(Debug, Default)]
pub(crate) struct PeerTree {
    /// The last verified announcement from the peer.
    pub(crate) ann: Option<Announcement>,
    /// When it arrived.
    pub(crate) at: Option<Instant>,
    /// The peer's coordinates according to it.
    pub(crate) coords: Vec<u16>,
    /// Whether our key is on the announcement's path (the peer is below us).
    pub(crate) through_us: bool,
}

/// This node's place in the tree.
#[derive(Debug)]
pub(crate) struct TreeState {
    /// The parent link, `None` when this node is a root.
    pub(crate) parent: Option<PeerId>,
    /// The announcement we hold: the parent's, or our own as root (no hops).
    pub(crate) current: Announcement,
    /// Our coordinates.
    pub(crate) coords: Vec<u16>,
    /// Our sequence as a root; grows each time we (re)announce as root.
    pub(crate) own_seq: u64,
    /// After bad news: not choosing a parent until the reparent timer fires.
    pub(crate) holding: bool,
}

impl TreeState {
    /// A lone node: its own root.
    pub(crate) fn new(key: PublicKey) -> Self {
        TreeState {
            parent: None,
            current: Announcement {
                root: key,
                seq: 1,
                hops: Vec::new(),
            },
            coords: Vec::new(),
            own_seq: 1,
            holding: false,
        }
    }
}

impl Router {
    /// A peer's announcement arrived.
    pub(super) fn handle_announce(
        &mut self,
        peer: PeerId,
        ann: Announcement,
        now: Instant,
    ) -> Result<(), DropReason> {
        let Some(p) = self.peers.get(&peer) else {
            return Err(DropReason::UnknownPeer);
        };
        if ann.sender() != Some(p.key) {
            return Err(DropReason::BadAnnouncement);
        }
        if let Some(prev) = &p.tree.ann
            && prev.root == ann.root
            && prev.seq > ann.seq
        {
            return Err(DropReason::BadAnnouncement);
        }
        ann.verify_cached(&mut self.sig_cache)
            .map_err(|e| match e {
                WireError::BadSignature => DropReason::BadSignature,
                _ => DropReason::BadAnnouncement,
            })?;
        let through_us = ann.hops.iter().any(|h| h.signer == self.key);
        let coords = ann.sender_coords();
        if let Some(p) = self.peers.get_mut(&peer) {
            p.tree = PeerTree {
                ann: Some(ann.clone()),
                at: Some(now),
                coords,
                through_us,
            };
        }
        if self.tree.parent == Some(peer) {
            let cur = &self.tree.current;
            let bad =
                through_us || ann.root < cur.root || (ann.root == cur.root && ann.seq < cur.seq);
            if bad {
                tracing::debug!(?peer, "bad news from parent");
                self.become_root(now, true);
                return Ok(());
            }
            if ann != self.tree.current {
                self.adopt(peer, now);
            }
        }
        self.select_parent(now);
        Ok(())
    }

    /// The parent is gone or sent bad news: move at once to another peer whose path avoids
    /// it, or else become a root and hold (so the bad news reaches the subtree first).
    pub(super) fn parent_lost(&mut self, parent_key: Option<PublicKey>, now: Instant) {
        if let Some(id) = self.best_candidate(now, parent_key).map(|(id, ..)| id) {
            self.adopt(id, now);
        } else {
            self.become_root(now, true);
        }
    }

    /// The best parent candidate: (link, root, seq, cost). Skips peers below us, peers with
    /// a weaker root than our own key, expired announcements and paths through `avoid`.
    fn best_candidate(
        &self,
        now: Instant,
        avoid: Option<PublicKey>,
    ) -> Option<(PeerId, PublicKey, u64, u64)> {
        let expiry = self.config.announcement_expiry;
        let mut best: Option<(PeerId, PublicKey, u64, u64)> = None;
        for (id, p) in &self.peers {
            let (Some(ann), Some(at)) = (&p.tree.ann, p.tree.at) else {
                continue;
            };
            if p.tree.through_us || ann.root <= self.key || at + expiry < now {
                continue;
            }
            if let Some(a) = avoid
                && ann.hops.iter().any(|h| h.signer == a)
            {
                continue;
            }
            let cost = self.parent_cost(*id);
            let better = match &best {
                None => true,
                Some((_, root, seq, c)) => {
                    (ann.root, ann.seq) > (*root, *seq)
                        || ((ann.root, ann.seq) == (*root, *seq) && cost < *c)
                }
            };
            if better {
                best = Some((*id, ann.root, ann.seq, cost));
            }
        }
        best
    }

    /// Cost of reaching the root through `peer`: its depth times the link latency.
    fn parent_cost(&self, peer: PeerId) -> u64 {
        let Some(p) = self.peers.get(&peer) else {
            return u64::MAX;
        };
        let depth = p.tree.ann.as_ref().map_or(0, |a| a.hops.len()) as u64;
        let link = p.rtt.map_or(self.config.default_link_cost_ms, |r| {
            (r.as_millis() as u64).max(1)
        });
        depth.saturating_mul(link)
    }

    /// Picks the best parent, switching only when the choice is clearly better.
    pub(super) fn select_parent(&mut self, now: Instant) {
        if self.tree.holding {
            return;
        }
        let best = self.best_candidate(now, None);
        let Some((id, root, seq, _)) = best else {
            if self.tree.parent.is_some() {
                self.become_root(now, false);
            }
            return;
        };
        let cur = (self.tree.current.root, self.tree.current.seq);
        match self.tree.parent {
            Some(parent) if parent == id => {}
            // Same root and sequence: keep the parent. Moving for a cheaper link on
            // announcements that may be stale can close a loop (a peer that has meanwhile moved
            // below us), so cost only decides among candidates when a choice is made anyway.
            Some(_) if (root, seq) == cur => {}
            _ => {
                if (root, seq) > cur || self.tree.parent.is_none() {
                    self.adopt(id, now);
                }
            }
        }
    }

    /// Makes `peer` our parent and takes its announcement as ours.
    fn adopt(&mut self, peer: PeerId, now: Instant) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let Some(ann) = p.tree.ann.clone() else {
            return;
        };
        let parent_key = p.key;
        let parent_changed = self.tree.parent != Some(peer);
        let root_changed = ann.root != self.tree.current.root;
        let coords = ann.receiver_coords();
        let coords_changed = coords != self.tree.coords;
        self.tree.parent = Some(peer);
        self.tree.coords = coords;
        self.tree.current = ann;
        self.timers.stop(Timer::RootRefresh);
        if root_changed {
            self.coords_cache.clear();
        }
        if parent_changed || root_changed {
            self.push_event(Event::TreeParentChanged {
                parent: Some(parent_key),
                root: self.tree.current.root,
            });
        }
        self.announce_to_all();
        if root_changed || coords_changed {
            self.ring_changed(now);
        }
    }

    /// Becomes a root; with `hold`, waits before choosing a parent again.
    pub(super) fn become_root(&mut self, now: Instant, hold: bool) {
        let was_root = self.tree.parent.is_none() && self.tree.current.root == self.key;
        self.tree.parent = None;
        self.tree.own_seq += 1;
        self.tree.current = Announcement {
            root: self.key,
            seq: self.tree.own_seq,
            hops: Vec::new(),
        };
        self.tree.coords.clear();
        self.coords_cache.clear();
        self.timers
            .set(Timer::RootRefresh, now + self.config.root_refresh);
        if hold {
            self.tree.holding = true;
            self.timers
                .set(Timer::Reparent, now + self.config.reparent_wait);
        }
        if !was_root {
            self.push_event(Event::TreeParentChanged {
                parent: None,
                root: self.key,
            });
        }
        self.announce_to_all();
        self.ring_changed(now);
    }

    /// As root: a fresh sequence number, announced to every peer.
    pub(super) fn root_refresh(&mut self, now: Instant) {
        if self.tree.parent.is_none() {
            self.tree.own_seq += 1;
            self.tree.current.seq = self.tree.own_seq;
            self.announce_to_all();
            self.timers
                .set(Timer::RootRefresh, now + self.config.root_refresh);
        }
    }

    /// Drops the parent if its announcement expired.
    pub(super) fn expire_parent(&mut self, now: Instant) {
        if let Some(parent) = self.tree.parent {
            let stale = self
                .peers
                .get(&parent)
                .and_then(|p| p.tree.at)
                .is_none_or(|at| at + self.config.announcement_expiry < now);
            if stale {
                self.become_root(now, true);
            }
        }
    }

    /// Sends our announcement, extended with our signed hop, to one peer.
    pub(super) fn announce_to(&mut self, peer: PeerId) {
        let Some(port) = self.peers.get(&peer).map(|p| p.port) else {
            return;
        };
        let ann = self.tree.current.extend_signed(&self.keypair, port);
        self.enqueue(peer, &Frame::Announce(ann));
    }

    fn announce_to_all(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.announce_to(id);
        }
    }

    /// Coordinates of a peer, if it follows our root.
    pub(super) fn peer_coords(&self, peer: PeerId) -> Option<&[u16]> {
        let p = self.peers.get(&peer)?;
        let ann = p.tree.ann.as_ref()?;
        (ann.root == self.tree.current.root).then_some(p.tree.coords.as_slice())
    }

    /// Greedy tree routing: the peer strictly closer to `dst` in tree distance, closest first,
    /// then the lowest latency.
    pub(super) fn tree_next_hop(&self, dst: &[u16]) -> Option<PeerId> {
        let mine = tree_distance(&self.tree.coords, dst);
        let mut best: Option<(usize, u128, PeerId)> = None;
        for (id, p) in &self.peers {
            let Some(c) = self.peer_coords(*id) else {
                continue;
            };
            let d = tree_distance(c, dst);
            if d >= mine {
                continue;
            }
            let rtt = p.rtt.map_or(u128::MAX, |r| r.as_micros());
            if best.is_none_or(|(bd, br, _)| (d, rtt) < (bd, br)) {
                best = Some((d, rtt, *id));
            }
        }
        best.map(|(_, _, id)| id)
    }
}
