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
//!
//! Each entry also remembers the link the bootstrap went on by. When a link goes down, the
//! routes that broke there are torn down at once instead of timing out: a teardown follows
//! them downstream (removing entries that now lead nowhere) and another goes upstream to the
//! origin, which bootstraps again at once and so finds its new successor within seconds.
//!
//! A route that moves to another way leaves its old entries behind until they expire; they
//! still point through nodes that may no longer hold the route. A node that receives a
//! key-routed frame whose watermark names a route it does not hold sends a downstream teardown
//! back, removing the stale part only (see `check_watermark`); a bootstrap that came so, or
//! that went round a loop, also sends its origin to bootstrap again at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::identity::{PublicKey, Signature, ring_distance};
use crate::router::metrics::DropReason;
use crate::router::timer::Timer;
use crate::router::{PeerId, Router};
use crate::wire::{Bootstrap, Frame, Teardown, Watermark};

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
    /// The link the bootstrap went on by (`None`: it ended here). A teardown follows it when
    /// the route breaks behind this node.
    pub(crate) next: Option<PeerId>,
    /// Whether the bootstrap ended here (we are the origin's successor as far as its way
    /// knew), and no closer origin has since superseded that.
    pub(crate) terminal: bool,
}

/// Ring state of one node.
#[derive(Debug)]
pub(crate) struct RingState {
    /// Routes toward bootstrap origins, by origin key, in key order (so the entry nearest a
    /// key is found without a scan).
    pub(crate) entries: BTreeMap<PublicKey, RingEntry>,
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
            entries: BTreeMap::new(),
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
        self.records_ring_changed(now);
    }

    /// The bootstrap timer: expire stale state, then bootstrap (unless root) and back off.
    pub(super) fn bootstrap_tick(&mut self, now: Instant) {
        let ttl = self.config.ring_entry_ttl;
        // Entries laid under another root are kept until they expire (routing ignores them):
        // a node cut off from its parent follows itself for a moment and then usually the old
        // root again, and its routes are as good as before. Dropping them would leave its
        // predecessor's route missing until the next periodic bootstrap, up to a minute away.
        self.ring.entries.retain(|_, e| e.seen + ttl > now);
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
            if let Some(e) = self.ring.entries.get(&b.origin)
                && e.seq >= b.seq
            {
                if e.seq == b.seq && e.peer != peer {
                    // This very bootstrap passed here before: it went round a loop, and is
                    // dropped. Its origin is told, as by a broken route, and bootstraps again
                    // at once instead of at its next periodic round (a minute away once idle);
                    // by then the stale entry that made the loop is usually torn down.
                    let t = Teardown {
                        origin: b.origin,
                        seq: b.seq,
                        upstream: true,
                    };
                    let up = e.peer;
                    self.enqueue(up, &Frame::Teardown(t));
                }
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
            if self.check_watermark(peer, &b.origin, true, b.watermark, now) {
                // This bootstrap came by that stale route, so where it ends need not be the
                // origin's successor (it may stop short of it, with no loop to show). The
                // origin is told, as by a broken route, and bootstraps again at once, by when
                // the stale part is gone.
                let t = Teardown {
                    origin: b.origin,
                    seq: b.seq,
                    upstream: true,
                };
                self.enqueue(peer, &Frame::Teardown(t));
            }
            let was_terminal = self
                .ring
                .entries
                .get(&b.origin)
                .is_some_and(|e| e.terminal && e.root == b.root);
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
                    next: None,
                    terminal: false,
                },
            );
            // Computed again below for the forward; the entry just written is never a
            // candidate (a bootstrap excludes its origin), so both agree.
            let next = match self.key_next_hop(&b.origin, true, b.watermark, now) {
                KeyHop::Local => None,
                KeyHop::Peer(next, _) => Some(next),
            };
            if let Some(e) = self.ring.entries.get_mut(&b.origin) {
                e.next = next;
                e.terminal = next.is_none();
            }
            if next.is_none() {
                self.supersede_overshoots(&b.origin, now);
                if !was_terminal {
                    // A new predecessor: placements between it and us may now be its.
                    self.records_ring_changed(now);
                }
            }
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

    /// The bootstrap of `origin` just ended here, so we are its successor as far as anyone on
    /// its way knew. Every other route that also ended here from an origin below `origin`
    /// overshot: that origin's successor is `origin` or closer. Their origins are told, as by
    /// an upstream teardown, and bootstrap again at once, now finding `origin` through us,
    /// instead of waiting for their next periodic bootstrap (up to `bootstrap_max` away, and a
    /// chain of such waits on large networks). The entries stay: they are still good routes
    /// back to their origins, and other nodes' entries may lead through them.
    fn supersede_overshoots(&mut self, origin: &PublicKey, now: Instant) {
        let ttl = self.config.ring_entry_ttl;
        let root = self.tree.current.root;
        let closer = ring_distance(origin, &self.key);
        let stale: Vec<(PublicKey, PeerId, u64)> = self
            .ring
            .entries
            .iter()
            .filter(|(k, e)| {
                *k != origin
                    && e.terminal
                    && e.root == root
                    && e.seen + ttl > now
                    && ring_distance(k, &self.key) > closer
            })
            .map(|(k, e)| (*k, e.peer, e.seq))
            .collect();
        for (k, peer, seq) in stale {
            if let Some(e) = self.ring.entries.get_mut(&k) {
                e.terminal = false;
            }
            let t = Teardown {
                origin: k,
                seq,
                upstream: true,
            };
            self.enqueue(peer, &Frame::Teardown(t));
        }
    }

    /// A frame key-routed toward `target` came from `from` carrying `watermark` (`bootstrap`:
    /// the target itself is no candidate). If the sender followed its ring entry for the
    /// watermark's key, that entry points through us; if we hold no such route (and are
    /// neither that node nor its peer), the sender's entry is a leftover of a way the route
    /// has since left, and so is every entry below it on that old way: they would send frames
    /// here to loop or die until they expire (`ring_entry_ttl`). A downstream teardown back to
    /// the sender removes exactly that stale part; a sender whose entry does not point
    /// through us ignores it. When our own key or an ancestor we announce is at least as close
    /// to the target, the sender may have picked us for that instead, and nothing is sent: a
    /// periodic bootstrap passing by so would otherwise draw a useless teardown every round.
    /// True when the teardown was sent.
    pub(super) fn check_watermark(
        &mut self,
        from: PeerId,
        target: &PublicKey,
        bootstrap: bool,
        watermark: Option<Watermark>,
        now: Instant,
    ) -> bool {
        let Some(w) = watermark else {
            return false;
        };
        if w.key == self.key || self.peers.values().any(|p| p.key == w.key) {
            return false;
        }
        let ttl = self.config.ring_entry_ttl;
        if self
            .ring
            .entries
            .get(&w.key)
            .is_some_and(|e| e.seen + ttl > now)
        {
            return false;
        }
        let dw = ring_distance(target, &w.key);
        let explains =
            |k: &PublicKey| !(bootstrap && k == target) && ring_distance(target, k) <= dw;
        if explains(&self.key) || self.tree.current.hops.iter().any(|h| explains(&h.signer)) {
            return false;
        }
        self.metrics.stale_ring_routes += 1;
        let t = Teardown {
            origin: w.key,
            seq: w.seq,
            upstream: false,
        };
        self.enqueue(from, &Frame::Teardown(t));
        true
    }

    /// The link `peer` went down: routes that came over it are gone, and so is every route
    /// that went on over it. Downstream nodes learn that their entries lead nowhere; origins
    /// learn that their bootstrap no longer arrives and bootstrap again at once.
    pub(super) fn ring_peer_down(&mut self, peer: PeerId) {
        let mut teardowns = Vec::new();
        self.ring.entries.retain(|origin, e| {
            if e.peer == peer {
                if let Some(next) = e.next.filter(|n| *n != peer) {
                    let t = Teardown {
                        origin: *origin,
                        seq: e.seq,
                        upstream: false,
                    };
                    teardowns.push((next, t));
                }
                return false;
            }
            if e.next == Some(peer) {
                e.next = None;
                let t = Teardown {
                    origin: *origin,
                    seq: e.seq,
                    upstream: true,
                };
                teardowns.push((e.peer, t));
            }
            true
        });
        for (to, t) in teardowns {
            self.enqueue(to, &Frame::Teardown(t));
        }
    }

    /// A teardown arrived from `from`. It only acts on a route that uses that very link.
    pub(super) fn handle_teardown(
        &mut self,
        from: PeerId,
        t: Teardown,
        now: Instant,
    ) -> Result<(), DropReason> {
        if t.upstream {
            if t.origin == self.key {
                self.ring_changed(now);
                return Ok(());
            }
            // The entry itself stays whole, `next` included: it is still a good route back to
            // the origin, and if it breaks later the downstream teardown must still reach every
            // node below that points through us, or they keep routes that lead nowhere.
            if let Some(e) = self.ring.entries.get(&t.origin)
                && e.next == Some(from)
                && e.seq <= t.seq
            {
                let up = e.peer;
                self.enqueue(up, &Frame::Teardown(t));
            }
            return Ok(());
        }
        let ours = self
            .ring
            .entries
            .get(&t.origin)
            .is_some_and(|e| e.peer == from && e.seq <= t.seq);
        if ours
            && let Some(e) = self.ring.entries.remove(&t.origin)
            && let Some(next) = e.next.filter(|n| *n != from)
        {
            self.enqueue(next, &Frame::Teardown(t));
        }
        Ok(())
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
        // Entries in ring order from the target on are in order of distance, so the first
        // that qualifies is the nearest of them all: a hub holding thousands of entries looks
        // at a few, not all of them, for every frame it routes by key.
        let in_ring_order = self
            .ring
            .entries
            .range(*target..)
            .chain(self.ring.entries.range(..*target));
        for (k, e) in in_ring_order {
            if !usable(k) || e.root != root || e.seen + ttl <= now {
                continue;
            }
            if let Some(w) = watermark {
                let dw = ring_distance(target, &w.key);
                let dk = ring_distance(target, k);
                if dk > dw {
                    // Every entry after this one is further still.
                    break;
                }
                if dk == dw && (*k != w.key || e.seq < w.seq) {
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
            break;
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
