//! Path search and source routes for established flows.
//!
//! Greedy tree routing takes detours (stretch 1.3–1.6 on random graphs and grids), so the
//! receiver of a flow's first packets searches for a short path back to the sender. The search
//! costs in proportion to the path, not to the network: a `PathSeek` carries the target's tree
//! coordinates (learnt from the first packet), a hop limit (the tree distance between the two
//! plus `search_slack`: the tree path is a valid path) and a width. Each hop passes it only to
//! the peers closest to the target in tree distance, at most `search_fanout` of them and at
//! most the width, splitting the width among them; a peer that is the target gets it alone.
//! So the search follows at most `search_width` greedy ways toward the target, branching near
//! the searcher, and no hop count ever carries more frames than the width, however many peers
//! a hub has. Each node keeps a breadcrumb (searcher, nonce) → (hops, upstream link) and passes
//! a search on only when it sees it with fewer hops than before. The target answers each
//! improvement with a `PathAnswer` that walks the breadcrumbs back, signed by the target for
//! this search; every hop on the way adds its key prefix and its port toward the target (10
//! bytes, so the answer grows with the path, not its square). A peer without
//! `CAP_COMPACT_REPLY` gets the older `PathReply` instead, where every hop also signs. The
//! searcher checks the answer (the target's signature, starts at the target, no repeated hop,
//! bounded length), installs the source route and sends a probe along it, from which the other
//! side learns the reverse route; the probe is what checks the hops. A hop that cannot follow a
//! source route falls back to tree or ring routing and marks the frame broken; the receiver
//! then searches again.
//!
//! Both ends search: each is the receiver of the other's first packets (ping, then pong). The
//! later search meets the earlier one's breadcrumbs on its way, and where it does, one unit of
//! its width follows them home to the target: the two greedy halves joined are often shorter
//! than either end's greedy way alone. Each end keeps the shorter of the route it found and
//! the one the other end's probe teaches, until the route has settled (`route_settle`); a
//! probe after that answers a repair and replaces the route.
//!
//! Bounds: every node passes on at most `seeks_per_origin_per_sec` searches per origin (the
//! first hop checks that the origin is the peer itself, so no node searches in another's
//! name), and at most `path_finds_per_peer_per_sec` search frames per peer. One accepted search
//! costs at most width × hop limit frames. Nodes of older builds flood `PathFind`; those are
//! answered and passed on only to older peers.

use std::collections::HashMap;
use std::time::Instant;

use rand::RngCore;

use crate::identity::PublicKey;
use crate::router::metrics::DropReason;
use crate::router::{Peer, PeerId, Router, tree_distance};
use crate::wire::{
    AnswerHop, CAP_COMPACT_REPLY, CAP_GUIDED_SEARCH, CAP_SOURCE_ROUTING, Frame, KEY_PREFIX_LEN,
    MAX_ROUTE_LEN, MAX_SEEK_WIDTH, PathAnswer, PathFind, PathReply, PathSeek, WireError,
    key_prefix,
};

/// A hop of an answer as the searcher uses it: the hop's key prefix and its port toward the
/// target.
type HopPort = ([u8; KEY_PREFIX_LEN], u16);

/// A source route: the port each hop leaves by, starting with ours.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Ports hop by hop.
    pub(crate) ports: Vec<u16>,
    /// When it was last installed or used.
    pub(crate) used: Instant,
    /// When it was installed.
    pub(crate) installed: Instant,
}

/// A path search seen passing through.
#[derive(Debug, Clone)]
pub(crate) struct Crumb {
    /// Fewest hops from the searcher seen so far.
    pub(crate) hops: u8,
    /// The link toward the searcher (`None` at the searcher).
    pub(crate) upstream: Option<PeerId>,
    /// When it was last improved.
    pub(crate) at: Instant,
}

/// Path search and source route state.
#[derive(Debug, Default)]
pub(crate) struct PathState {
    /// Source routes by destination.
    pub(crate) routes: HashMap<PublicKey, Route>,
    /// Our own searches by target: (nonce, started).
    pub(crate) searches: HashMap<PublicKey, (u64, Instant)>,
    /// Breadcrumbs by (searcher, nonce).
    pub(crate) crumbs: HashMap<(PublicKey, u64), Crumb>,
    /// The latest search seen by (searcher, target), by its nonce: where a search meets the
    /// other end's search for it, it follows that one's breadcrumbs home.
    pub(crate) meets: HashMap<(PublicKey, PublicKey), u64>,
    /// Search origins seen this second: (window start, searches), for the per-origin limit.
    pub(crate) origins: HashMap<PublicKey, (Instant, u32)>,
}

impl PathState {
    /// Forgets routes leaving by a port that is gone.
    pub(crate) fn forget_port(&mut self, port: u16) {
        self.routes.retain(|_, r| r.ports.first() != Some(&port));
    }
}

impl Router {
    /// Starts a search for a short path to `target`, whose tree coordinates are
    /// `target_coords`, unless one ran recently, the coordinates are unknown, or this node
    /// already started as many searches this second as its peers will pass on.
    pub(super) fn start_search(&mut self, target: PublicKey, target_coords: &[u16], now: Instant) {
        if target == self.key || self.peers.is_empty() {
            return;
        }
        // Empty coordinates name the root; from anyone else they were shed on the way.
        if target_coords.is_empty() && target != self.tree.current.root {
            return;
        }
        if let Some((_, started)) = self.paths.searches.get(&target)
            && *started + self.config.search_backoff > now
        {
            return;
        }
        if self.paths.searches.len() >= self.config.max_routes {
            return;
        }
        if !self.origin_allows(self.key, now) {
            self.metrics.drop(DropReason::OriginRateLimited);
            return;
        }
        let nonce = self.rng.next_u64();
        self.paths.searches.insert(target, (nonce, now));
        let dist = tree_distance(&self.tree.coords, target_coords)
            .saturating_add(usize::from(self.config.search_slack))
            .clamp(1, MAX_ROUTE_LEN);
        self.insert_crumb(
            (self.key, nonce),
            target,
            Crumb {
                hops: 0,
                upstream: None,
                at: now,
            },
        );
        self.metrics.searches_started += 1;
        tracing::trace!(%target, dist, "path search");
        let seek = PathSeek {
            searcher: self.key,
            target,
            nonce,
            hop_limit: dist as u8,
            hops: 0,
            width: self.config.search_width.clamp(1, MAX_SEEK_WIDTH),
            target_coords: target_coords.to_vec(),
        };
        self.seek_onward(None, &seek);
    }

    /// Passes a guided search on: to the target if it is a peer, else to the peers closest to
    /// the target's coordinates, at most `search_fanout` and at most the search's width,
    /// splitting the width among them. So a search never fans out wider than its width at any
    /// hop count, however many peers a node has. Only the hop limit prunes: tree distance
    /// overstates how far a node across a non-tree link is (two ends of a ring cut by the
    /// tree are a whole ring apart in it), so a branch that must first move away from the
    /// target in the tree to reach such a link is still followed.
    fn seek_onward(&mut self, from: Option<PeerId>, seek: &PathSeek) {
        // The tree path from here is a way to the target, so no way on from here longer than
        // it can improve the search: the limit shrinks to it. Honest searches lose nothing
        // (greedy by tree distance always finds a peer one nearer), and a search sent with the
        // longest limit the wire allows toward made-up coordinates dies within a few hops.
        let from_here = tree_distance(&self.tree.coords, &seek.target_coords)
            .saturating_add(usize::from(self.config.search_slack))
            .saturating_add(usize::from(seek.hops));
        let limit = usize::from(seek.hop_limit).min(from_here);
        if usize::from(seek.hops) >= limit {
            return;
        }
        let seek = &PathSeek {
            hop_limit: limit as u8,
            ..seek.clone()
        };
        let hops = seek.hops + 1;
        let guided = |p: &Peer| p.caps & CAP_GUIDED_SEARCH != 0;
        let target_peer = self
            .peers
            .iter()
            .find(|(_, p)| p.key == seek.target && guided(p))
            .map(|(id, _)| *id);
        if let Some(id) = target_peer {
            if Some(id) != from {
                let next = PathSeek {
                    hops,
                    width: 1,
                    ..seek.clone()
                };
                self.enqueue(id, &Frame::PathSeek(next));
            }
            return;
        }
        // The target searched for the searcher already and its search passed here: its
        // breadcrumbs are a way home of known length, and both halves together are often
        // shorter than either end's greedy way alone. That way takes one unit of the width,
        // so no hop count still carries more frames than the width; the rest goes on
        // greedily, as the other end's search may have missed a shorter way.
        let meet = from.and_then(|_| self.meeting(from, seek));
        if let Some(id) = meet {
            let next = PathSeek {
                hops,
                width: 1,
                ..seek.clone()
            };
            self.metrics.search_meetings += 1;
            self.enqueue(id, &Frame::PathSeek(next));
        }
        let mut cands: Vec<(usize, u128, PeerId)> = Vec::new();
        for (id, p) in &self.peers {
            if Some(*id) == from || Some(*id) == meet || !guided(p) {
                continue;
            }
            let Some(c) = self.peer_coords(*id) else {
                continue;
            };
            let d = tree_distance(c, &seek.target_coords);
            cands.push((d, p.rtt.map_or(u128::MAX, |r| r.as_micros()), *id));
        }
        let width = usize::from(seek.width) - usize::from(meet.is_some());
        let n = cands
            .len()
            .min(usize::from(self.config.search_fanout.max(1)))
            .min(width);
        if n == 0 {
            return;
        }
        // Only the n nearest are wanted: a hub with thousands of peers partitions them
        // instead of sorting them all, for every search that passes.
        if n < cands.len() {
            cands.select_nth_unstable(n - 1);
            cands.truncate(n);
        }
        cands.sort_unstable();
        for (i, (_, _, id)) in cands.into_iter().enumerate() {
            let w = width / n + usize::from(i < width % n);
            let next = PathSeek {
                hops,
                width: w as u8,
                ..seek.clone()
            };
            self.enqueue(id, &Frame::PathSeek(next));
        }
    }

    /// Whether `origin` may have one more search passed on this second; counts it if so.
    /// The table of origins is bounded: when full, windows that ended are cleared first, and
    /// if none has, the search is refused.
    fn origin_allows(&mut self, origin: PublicKey, now: Instant) -> bool {
        let limit = self.config.seeks_per_origin_per_sec;
        let second = std::time::Duration::from_secs(1);
        let origins = &mut self.paths.origins;
        if !origins.contains_key(&origin) && origins.len() >= self.config.max_seek_origins {
            origins.retain(|_, (start, _)| *start + second > now);
            if origins.len() >= self.config.max_seek_origins {
                return false;
            }
        }
        let (start, count) = origins.entry(origin).or_insert((now, 0));
        if *start + second <= now {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= limit
    }

    /// Counts `units` of search against its peer's per-second budget (a flood frame is one
    /// unit; a guided search its width, the most ways it can go on).
    fn peer_allows(
        &mut self,
        from: PeerId,
        units: u32,
        now: Instant,
    ) -> Result<(u16, PublicKey), DropReason> {
        let limit = self.config.path_finds_per_peer_per_sec;
        let Some(p) = self.peers.get_mut(&from) else {
            return Err(DropReason::UnknownPeer);
        };
        let (start, count) = &mut p.path_find_window;
        if start.is_none_or(|s| now.saturating_duration_since(s).as_secs() >= 1) {
            *start = Some(now);
            *count = 0;
        }
        *count = count.saturating_add(units);
        if *count > limit {
            return Err(DropReason::RateLimited);
        }
        Ok((p.port, p.key))
    }

    /// A guided search arrived: answer it if it is for us, else pass it on toward the target.
    pub(super) fn handle_path_seek(
        &mut self,
        from: PeerId,
        seek: PathSeek,
        now: Instant,
    ) -> Result<(), DropReason> {
        let (from_port, from_key) = self.peer_allows(from, u32::from(seek.width.max(1)), now)?;
        if seek.hops == 0
            || usize::from(seek.hop_limit) > MAX_ROUTE_LEN
            || seek.hops > seek.hop_limit
            || seek.width == 0
            || seek.width > MAX_SEEK_WIDTH
        {
            return Err(DropReason::BadPath);
        }
        // On its first hop a search comes from its searcher: nobody can start one in another
        // node's name and so escape that node's rate limit.
        if seek.hops == 1 && seek.searcher != from_key {
            return Err(DropReason::BadPath);
        }
        if seek.searcher == self.key {
            return Ok(());
        }
        let key = (seek.searcher, seek.nonce);
        if self
            .paths
            .crumbs
            .get(&key)
            .is_some_and(|c| c.hops <= seek.hops)
        {
            return Ok(());
        }
        // Only a search's first arrival counts against its origin; better ways of the same
        // search are part of what it was allowed.
        if !self.paths.crumbs.contains_key(&key) && !self.origin_allows(seek.searcher, now) {
            return Err(DropReason::OriginRateLimited);
        }
        if !self.insert_crumb(
            key,
            seek.target,
            Crumb {
                hops: seek.hops,
                upstream: Some(from),
                at: now,
            },
        ) {
            return Err(DropReason::RateLimited);
        }
        if seek.target == self.key {
            // A peer of this build takes the compact answer, which grows with the path and not
            // with its square; an older peer the reply signed at every hop.
            let compact = self
                .peers
                .get(&from)
                .is_some_and(|p| p.caps & CAP_COMPACT_REPLY != 0);
            if compact {
                let answer = PathAnswer::new(&self.keypair, seek.searcher, seek.nonce);
                self.enqueue(from, &Frame::PathAnswer(answer));
            } else {
                let mut reply = PathReply {
                    searcher: seek.searcher,
                    target: self.key,
                    nonce: seek.nonce,
                    hops: Vec::new(),
                };
                reply.push_signed(&self.keypair, 0, from_port);
                self.enqueue(from, &Frame::PathReply(reply));
            }
            return Ok(());
        }
        self.seek_onward(Some(from), &seek);
        Ok(())
    }

    fn insert_crumb(&mut self, key: (PublicKey, u64), target: PublicKey, crumb: Crumb) -> bool {
        if !self.paths.crumbs.contains_key(&key)
            && self.paths.crumbs.len() >= self.config.max_breadcrumbs
        {
            return false;
        }
        self.paths.crumbs.insert(key, crumb);
        // Bounded with the crumbs: one entry per (searcher, target), dropped with its crumb.
        self.paths.meets.insert((key.0, target), key.1);
        true
    }

    /// Where `seek` meets the other end's search for its searcher: the link toward the
    /// target along that search's breadcrumbs, if the way through here fits the hop limit.
    fn meeting(&self, from: Option<PeerId>, seek: &PathSeek) -> Option<PeerId> {
        let nonce = self.paths.meets.get(&(seek.target, seek.searcher))?;
        let crumb = self.paths.crumbs.get(&(seek.target, *nonce))?;
        let up = crumb.upstream?;
        let total = usize::from(seek.hops) + usize::from(crumb.hops);
        (Some(up) != from && total <= usize::from(seek.hop_limit)).then_some(up)
    }

    /// A search flood from a node of an older build arrived: answered if it is for us, passed
    /// on only to peers of older builds too (peers that search by [`PathSeek`] never flood).
    pub(super) fn handle_path_find(
        &mut self,
        from: PeerId,
        mut pf: PathFind,
        now: Instant,
    ) -> Result<(), DropReason> {
        let (from_port, _) = self.peer_allows(from, 1, now)?;
        if pf.hops == 0 || usize::from(pf.hops) > MAX_ROUTE_LEN || pf.hops > pf.hop_limit {
            return Err(DropReason::BadPath);
        }
        if pf.searcher == self.key {
            return Ok(());
        }
        let key = (pf.searcher, pf.nonce);
        if self
            .paths
            .crumbs
            .get(&key)
            .is_some_and(|c| c.hops <= pf.hops)
        {
            return Ok(());
        }
        if !self.insert_crumb(
            key,
            pf.target,
            Crumb {
                hops: pf.hops,
                upstream: Some(from),
                at: now,
            },
        ) {
            return Err(DropReason::RateLimited);
        }
        if pf.target == self.key {
            let mut reply = PathReply {
                searcher: pf.searcher,
                target: self.key,
                nonce: pf.nonce,
                hops: Vec::new(),
            };
            reply.push_signed(&self.keypair, 0, from_port);
            self.enqueue(from, &Frame::PathReply(reply));
            return Ok(());
        }
        if pf.hops < pf.hop_limit {
            pf.hops += 1;
            let ids: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(id, p)| **id != from && p.caps & CAP_GUIDED_SEARCH == 0)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                self.enqueue(id, &Frame::PathFind(pf.clone()));
            }
        }
        Ok(())
    }

    /// A search answer arrived: install it if it is ours, else pass it toward the searcher.
    pub(super) fn handle_path_reply(
        &mut self,
        from: PeerId,
        mut r: PathReply,
        now: Instant,
    ) -> Result<(), DropReason> {
        let from_port = self.answer_from(from, r.hops.len())?;
        if r.searcher == self.key {
            self.our_search(&r.target, r.nonce)?;
            r.verify().map_err(answer_error)?;
            let hops: Vec<HopPort> = r
                .hops
                .iter()
                .map(|h| (key_prefix(&h.key), h.in_port))
                .collect();
            self.accept_answer(r.target, from_port, &hops, now);
            return Ok(());
        }
        let (up, upstream) = self.answer_upstream(&r.searcher, r.nonce)?;
        let up_port = upstream.port;
        if r.hops.iter().any(|h| h.key == self.key) {
            return Err(DropReason::BadPath);
        }
        // On-path improvement: when a hop nearer the target is our peer, the way from here
        // goes to it directly and the hops in between are cut (each hop signs only those
        // before it, so the chain that remains still verifies).
        let prefixes: Vec<[u8; KEY_PREFIX_LEN]> =
            r.hops.iter().map(|h| key_prefix(&h.key)).collect();
        let in_port = match self.shortcut(&prefixes) {
            Some((j, port)) => {
                r.hops.truncate(j + 1);
                self.metrics.route_shortcuts += 1;
                port
            }
            None => from_port,
        };
        r.push_signed(&self.keypair, in_port, up_port);
        self.enqueue(up, &Frame::PathReply(r));
        Ok(())
    }

    /// A compact search answer arrived: install it if it is ours, else add our hop and pass
    /// it toward the searcher. Only the target signed it; see the crate README for why a
    /// relay that lies about the hops gains nothing it could not do by misrouting.
    pub(super) fn handle_path_answer(
        &mut self,
        from: PeerId,
        mut a: PathAnswer,
        now: Instant,
    ) -> Result<(), DropReason> {
        let from_port = self.answer_from(from, a.hops.len())?;
        if a.searcher == self.key {
            self.our_search(&a.target, a.nonce)?;
            a.verify().map_err(answer_error)?;
            let hops: Vec<HopPort> = a.hops.iter().map(|h| (h.prefix, h.in_port)).collect();
            self.accept_answer(a.target, from_port, &hops, now);
            return Ok(());
        }
        let (up, upstream) = self.answer_upstream(&a.searcher, a.nonce)?;
        let up_caps = upstream.caps;
        // The search came through an older peer, which cannot read this answer; the searcher
        // keeps the route it has and searches again after its backoff.
        if up_caps & CAP_COMPACT_REPLY == 0 {
            return Err(DropReason::NoRoute);
        }
        let own = key_prefix(&self.key);
        if a.hops.iter().any(|h| h.prefix == own) {
            return Err(DropReason::BadPath);
        }
        let prefixes: Vec<[u8; KEY_PREFIX_LEN]> = a.hops.iter().map(|h| h.prefix).collect();
        let in_port = match self.shortcut(&prefixes) {
            Some((j, port)) => {
                a.hops.truncate(j + 1);
                self.metrics.route_shortcuts += 1;
                port
            }
            None => from_port,
        };
        a.hops.push(AnswerHop {
            prefix: own,
            in_port,
        });
        self.enqueue(up, &Frame::PathAnswer(a));
        Ok(())
    }

    /// The port of the peer an answer came from, once its hop count is within bounds.
    fn answer_from(&self, from: PeerId, hops: usize) -> Result<u16, DropReason> {
        let port = self
            .peers
            .get(&from)
            .map(|p| p.port)
            .ok_or(DropReason::UnknownPeer)?;
        if hops == 0 || hops >= MAX_ROUTE_LEN {
            return Err(DropReason::BadPath);
        }
        Ok(port)
    }

    /// Whether an answer to us is for the search we have under way for `target`.
    fn our_search(&self, target: &PublicKey, nonce: u64) -> Result<(), DropReason> {
        match self.paths.searches.get(target) {
            Some((n, _)) if *n == nonce => Ok(()),
            _ => Err(DropReason::NoBreadcrumb),
        }
    }

    /// The peer a search came from, which its answer goes back to.
    fn answer_upstream(
        &self,
        searcher: &PublicKey,
        nonce: u64,
    ) -> Result<(PeerId, &Peer), DropReason> {
        let crumb = self
            .paths
            .crumbs
            .get(&(*searcher, nonce))
            .ok_or(DropReason::NoBreadcrumb)?;
        let up = crumb.upstream.ok_or(DropReason::NoBreadcrumb)?;
        let peer = self.peers.get(&up).ok_or(DropReason::NoRoute)?;
        Ok((up, peer))
    }

    /// Builds the source route a checked answer describes and installs it if it is shorter
    /// than the one held, then sends a probe along it.
    fn accept_answer(&mut self, target: PublicKey, from_port: u16, hops: &[HopPort], now: Instant) {
        let prefixes: Vec<[u8; KEY_PREFIX_LEN]> = hops.iter().map(|h| h.0).collect();
        // A hop nearer the target may be our own peer: go to it directly.
        let (first, upto) = match self.shortcut(&prefixes) {
            Some((j, port)) => (port, j),
            None => (from_port, hops.len() - 1),
        };
        let mut ports = vec![first];
        ports.extend(hops[1..=upto].iter().rev().map(|h| h.1));
        let better = self
            .paths
            .routes
            .get(&target)
            .is_none_or(|old| ports.len() < old.ports.len());
        if better {
            self.install_route(target, ports, now);
            self.send_traffic(target, Vec::new(), true, now);
        }
    }

    /// The hop of a path reply nearest the target (not the last, which sent it to us) that is
    /// one of our peers able to carry source routes, and our port to it. Hops are named by key
    /// prefix, which tells a node's peers apart.
    fn shortcut(&self, hops: &[[u8; KEY_PREFIX_LEN]]) -> Option<(usize, u16)> {
        let last = hops.len().checked_sub(1)?;
        hops[..last].iter().enumerate().find_map(|(j, h)| {
            self.peers
                .values()
                .find(|p| key_prefix(&p.key) == *h && p.caps & CAP_SOURCE_ROUTING != 0)
                .map(|p| (j, p.port))
        })
    }

    /// Installs (or replaces) the source route to `dst`.
    pub(super) fn install_route(&mut self, dst: PublicKey, ports: Vec<u16>, now: Instant) {
        if ports.is_empty() || ports.len() > MAX_ROUTE_LEN {
            return;
        }
        if !self.paths.routes.contains_key(&dst)
            && self.paths.routes.len() >= self.config.max_routes
        {
            // Full: the route unused longest goes.
            if let Some(old) = self
                .paths
                .routes
                .iter()
                .min_by_key(|(_, r)| r.used)
                .map(|(k, _)| *k)
            {
                self.paths.routes.remove(&old);
            }
        }
        self.metrics.routes_learned += 1;
        self.paths.routes.insert(
            dst,
            Route {
                ports,
                used: now,
                installed: now,
            },
        );
    }

    /// Drops expired breadcrumbs, searches, routes, cached coordinates and search-origin
    /// windows that ended.
    pub(super) fn expire_paths(&mut self, now: Instant) {
        let crumb_ttl = self.config.breadcrumb_ttl;
        self.paths.crumbs.retain(|_, c| c.at + crumb_ttl > now);
        let crumbs = &self.paths.crumbs;
        self.paths
            .meets
            .retain(|(searcher, _), nonce| crumbs.contains_key(&(*searcher, *nonce)));
        let backoff = self.config.search_backoff.max(crumb_ttl);
        self.paths.searches.retain(|_, (_, s)| *s + backoff > now);
        let route_ttl = self.config.route_ttl;
        self.paths.routes.retain(|_, r| r.used + route_ttl > now);
        // Windows that ended say nothing any more: without this the table of search origins
        // only emptied when full, and every node kept up to `max_seek_origins` of them.
        let second = std::time::Duration::from_secs(1);
        self.paths
            .origins
            .retain(|_, (start, _)| *start + second > now);
        let coords_ttl = self.config.coords_ttl;
        self.coords_cache.retain(|_, (_, t)| *t + coords_ttl > now);
    }
}

/// The drop reason for an answer that fails its checks.
fn answer_error(e: WireError) -> DropReason {
    match e {
        WireError::BadSignature => DropReason::BadSignature,
        _ => DropReason::BadPath,
    }
}
