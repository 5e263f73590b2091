//! The virtual ring (SNEK): key-space routing without lookups.
//!
//! Key routing toward `K` moves to the known key closest to `K` from above (the smallest
//! wrapping distance `key - K`): candidates are this node, its peers, its tree ancestors
//! (reached through the parent) and the ring table. Each non-root node periodically sends a
//! signed bootstrap toward its own key, excluding itself: it ends at the node's successor
//! (the next higher key), and every node on the way installs a soft-state entry pointing back
//! to the origin. So every node holds a path to its predecessor, which is what makes greedy
//! key routing always progress. A watermark (best entry used so far) in key-routed frames
//! stops loops through stale entries. The bootstrap interval starts at `bootstrap_min` after
//! any change and doubles up to `bootstrap_max` while nothing changes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::identity::{PublicKey, Signature, ring_distance};
use crate::router::metrics::DropReason;
use crate::router::timer::Timer;
use crate::router::{PeerId, Router};
use crate::wire::{Bootstrap, Frame, Watermark};

/// One soft-state route toward a bootstrap's origin.
#[derive(Debug, Clone)]
pub(crate) struct RingEntry {
    /// The link toward the origin.
    pub(crate) peer: PeerId,
    /// The origin's bootstrap sequence.
    pub(crate) seq: u64,
    /// The root the origin had.
    pub(crate) root: PublicKey,
    /// When the entry was last refreshed.
    pub(crate) seen: Instant,
}

/// Ring state of one node.
#[derive(Debug)]
pub(crate) struct RingState {
    /// Routes toward bootstrap origins, by origin key.
    pub(crate) entries: HashMap<PublicKey, RingEntry>,
    /// Our own bootstrap sequence.
    pub(crate) seq: u64,
    /// The current bootstrap interval.
    pub(crate) interval: Duration,
    /// Until when the interval stays at its minimum.
    pub(crate) fast_until: Option<Instant>,
}

impl RingState {
    /// Empty state, bootstrapping fast.
    pub(crate) fn new(interval: Duration) -> Self {
        RingState {
            entries: HashMap::new(),
            seq: 0,
            interval,
            fast_until: None,
        }
    }
}

/// Where key routing sends a frame next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyHop {
    /// This node is the closest key it knows.
    Local,
    /// Forward to a peer, carrying this watermark.
    Peer(PeerId, Option<Watermark>),
}

impl Router {
    /// Something changed (peers, tree): bootstrap soon and start the interval over.
    pub(super) fn ring_changed(&mut self, now: Instant) {
        self.ring.interval = self.config.bootstrap_min;
        self.ring.fast_until = Some(now + self.config.bootstrap_fast_period);
        // A random delay within half the minimum interval keeps neighbours that saw the same
        // change from bootstrapping in lockstep.
        let half = self.config.bootstrap_min / 2;
        let jitter = half.mul_f64(self.rng.r#gen::<f64>());
        let at = now + half + jitter;
        if self.timers.get(Timer::Bootstrap).is_none_or(|t| t > at) {
            self.timers.set(Timer::Bootstrap, at);
        }
    }

    /// The bootstrap timer: expire stale state, then bootstrap (unless root) and back off.
    pub(super) fn bootstrap_tick(&mut self, now: Instant) {
        let ttl = self.config.ring_entry_ttl;
        let root = self.tree.current.root;
        self.ring
            .entries
            .retain(|_, e| e.root == root && e.seen + ttl > now);
        self.expire_paths(now);
        self.expire_parent(now);
        if self.tree.parent.is_some() {
            self.ring.seq += 1;
            let cur = &self.tree.current;
            let msg = Bootstrap::signing_bytes(&self.key, self.ring.seq, &cur.root, cur.seq);
            let b = Bootstrap {
                origin: self.key,
                seq: self.ring.seq,
                root: cur.root,
                root_seq: cur.seq,
                signature: Signature(self.keypair.sign(&msg)),
                hop_limit: self.config.hop_limit,
                watermark: None,
            };
            // Our own bootstrap cannot be refused by our own checks.
            let _ = self.handle_bootstrap(None, b, now);
        }
        let next = self.ring.interval;
        // Keep bootstrapping fast for a while after a change: each round lets bootstraps
        // reach closer successors; then back off toward the idle interval.
        if self.ring.fast_until.is_none_or(|f| f <= now) {
            self.ring.interval = (next * 2).min(self.config.bootstrap_max);
        }
        self.timers.set(Timer::Bootstrap, now + next);
    }

    /// A bootstrap arrived from `from` (or is ours, when `None`): install the entry, forward.
    pub(super) fn handle_bootstrap(
        &mut self,
        from: Option<PeerId>,
        mut b: Bootstrap,
        now: Instant,
    ) -> Result<(), DropReason> {
        if let Some(peer) = from {
            if b.origin == self.key {
                return Err(DropReason::DuplicateBootstrap);
            }
            if b.root != self.tree.current.root {
                return Err(DropReason::RootMismatch);
            }
            if self
                .ring
                .entries
                .get(&b.origin)
                .is_some_and(|e| e.seq >= b.seq)
            {
                return Err(DropReason::DuplicateBootstrap);
            }
            // A refresh of an entry that already came over this same link needs no new check:
            // the link could only keep alive a route it already carries. A new origin, a new
            // link or a new root must prove itself. This keeps signature checks off the
            // per-hop path of the periodic bootstraps.
            let refresh = self
                .ring
                .entries
                .get(&b.origin)
                .is_some_and(|e| e.peer == peer && e.root == b.root);
            if !refresh && !b.verify() {
                return Err(DropReason::BadSignature);
            }
            if b.hop_limit == 0 {
                return Err(DropReason::HopLimit);
            }
            b.hop_limit -= 1;
            if !self.ring.entries.contains_key(&b.origin)
                && self.ring.entries.len() >= self.config.max_ring_entries
            {
                // Full: evict the stalest entry, so fresh routes win over forgotten ones.
                if let Some(old) = self
                    .ring
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.seen)
                    .map(|(k, _)| *k)
                {
                    self.ring.entries.remove(&old);
                }
            }
            self.ring.entries.insert(
                b.origin,
                RingEntry {
                    peer,
                    seq: b.seq,
                    root: b.root,
                    seen: now,
                },
            );
        }
        match self.key_next_hop(&b.origin, true, b.watermark, now) {
            KeyHop::Local => Ok(()),
            KeyHop::Peer(next, wm) => {
                b.watermark = wm;
                self.enqueue(next, &Frame::Bootstrap(b));
                Ok(())
            }
        }
    }

    /// Key routing toward `target`. With `bootstrap`, the key `target` itself is not a
    /// candidate (a bootstrap looks for the origin's successor).
    pub(super) fn key_next_hop(
        &self,
        target: &PublicKey,
        bootstrap: bool,
        watermark: Option<Watermark>,
        now: Instant,
    ) -> KeyHop {
        let usable = |k: &PublicKey| !(bootstrap && k == target);
        let mut best_key: Option<PublicKey> = None;
        let mut best: KeyHop = KeyHop::Local;
        let mut best_dist = [0xffu8; 32];
        let mut consider =
            |k: PublicKey, hop: KeyHop, best_key: &mut Option<PublicKey>, best: &mut KeyHop| {
                let d = ring_distance(target, &k);
                if best_key.is_none() || d < best_dist {
                    best_dist = d;
                    *best_key = Some(k);
                    *best = hop;
                }
            };
        if usable(&self.key) {
            consider(self.key, KeyHop::Local, &mut best_key, &mut best);
        }
        for (id, p) in &self.peers {
            if usable(&p.key) {
                consider(
                    p.key,
                    KeyHop::Peer(*id, watermark),
                    &mut best_key,
                    &mut best,
                );
            }
        }
        if let Some(parent) = self.tree.parent {
            for h in &self.tree.current.hops {
                if usable(&h.signer) {
                    consider(
                        h.signer,
                        KeyHop::Peer(parent, watermark),
                        &mut best_key,
                        &mut best,
                    );
                }
            }
        }
        // Ancestors of every peer that follows our root, reached through that peer.
        for (id, p) in &self.peers {
            // A peer whose path to the root runs through us would send upward keys back.
            if let Some(ann) = &p.tree.ann
                && ann.root == self.tree.current.root
                && !p.tree.through_us
            {
                for h in &ann.hops {
                    if usable(&h.signer) && h.signer != self.key {
                        consider(
                            h.signer,
                            KeyHop::Peer(*id, watermark),
                            &mut best_key,
                            &mut best,
                        );
                    }
                }
            }
        }
        let ttl = self.config.ring_entry_ttl;
        let root = self.tree.current.root;
        for (k, e) in &self.ring.entries {
            if !usable(k) || e.root != root || e.seen + ttl <= now {
                continue;
            }
            if let Some(w) = watermark {
                let dw = ring_distance(target, &w.key);
                let dk = ring_distance(target, k);
                if dk > dw || (dk == dw && (*k != w.key || e.seq < w.seq)) {
                    continue;
                }
            }
            consider(
                *k,
                KeyHop::Peer(
                    e.peer,
                    Some(Watermark {
                        key: *k,
                        seq: e.seq,
                    }),
                ),
                &mut best_key,
                &mut best,
            );
        }
        if best_key.is_none() {
            return KeyHop::Local;
        }
        best
    }

    /// The ring entry closest below us: our predecessor as far as we know.
    pub(super) fn ring_predecessor(&self) -> Option<PublicKey> {
        self.ring
            .entries
            .keys()
            .min_by_key(|k| ring_distance(k, &self.key))
            .copied()
    }
}
