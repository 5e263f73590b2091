//! Path search and source routes for established flows.
//!
//! Greedy tree routing takes detours (stretch 1.3–1.6 on random graphs and grids), so the
//! receiver of a flow's first packets searches for a short path back to the sender: a
//! `PathFind` flood bounded by a hop limit equal to the tree distance between the two (the tree
//! path is a valid path, so no shorter path lies beyond it). Each node keeps a breadcrumb
//! (searcher, nonce) → (hops, upstream link) and floods on only when it sees the search with
//! fewer hops than before, so the breadcrumbs end up on shortest paths. The target answers
//! each improvement with a `PathReply` that walks the breadcrumbs back; every hop on the way
//! records the ports it used and signs. The searcher checks the chain (starts at the target,
//! no repeated hop, bounded length, every signature), installs the source route and sends a
//! probe along it, from which the other side learns the reverse route. A hop that cannot
//! follow a source route falls back to tree or ring routing and marks the frame broken; the
//! receiver then searches again.

use std::collections::HashMap;
use std::time::Instant;

use rand::RngCore;

use crate::identity::PublicKey;
use crate::router::metrics::DropReason;
use crate::router::{PeerId, Router, tree_distance};
use crate::wire::{Frame, MAX_ROUTE_LEN, PathFind, PathReply};

/// A source route: the port each hop leaves by, starting with ours.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Ports hop by hop.
    pub(crate) ports: Vec<u16>,
    /// When it was last installed or used.
    pub(crate) used: Instant,
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
}

impl PathState {
    /// Forgets routes leaving by a port that is gone.
    pub(crate) fn forget_port(&mut self, port: u16) {
        self.routes.retain(|_, r| r.ports.first() != Some(&port));
    }
}

impl Router {
    /// Starts a search for a short path to `target`, unless one ran recently.
    pub(super) fn start_search(&mut self, target: PublicKey, target_coords: &[u16], now: Instant) {
        if target == self.key || self.peers.is_empty() {
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
        let nonce = self.rng.next_u64();
        self.paths.searches.insert(target, (nonce, now));
        let dist = tree_distance(&self.tree.coords, target_coords).clamp(1, MAX_ROUTE_LEN);
        self.insert_crumb(
            (self.key, nonce),
            Crumb {
                hops: 0,
                upstream: None,
                at: now,
            },
        );
        self.metrics.searches_started += 1;
        tracing::trace!(%target, dist, "path search");
        let pf = PathFind {
            searcher: self.key,
            target,
            nonce,
            hop_limit: dist as u8,
            hops: 1,
        };
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.enqueue(id, &Frame::PathFind(pf.clone()));
        }
    }

    fn insert_crumb(&mut self, key: (PublicKey, u64), crumb: Crumb) -> bool {
        if !self.paths.crumbs.contains_key(&key)
            && self.paths.crumbs.len() >= self.config.max_breadcrumbs
        {
            return false;
        }
        self.paths.crumbs.insert(key, crumb);
        true
    }

    /// A search flood arrived.
    pub(super) fn handle_path_find(
        &mut self,
        from: PeerId,
        mut pf: PathFind,
        now: Instant,
    ) -> Result<(), DropReason> {
        let limit = self.config.path_finds_per_peer_per_sec;
        let Some(p) = self.peers.get_mut(&from) else {
            return Err(DropReason::UnknownPeer);
        };
        let (start, count) = &mut p.path_find_window;
        if start.is_none_or(|s| now.saturating_duration_since(s).as_secs() >= 1) {
            *start = Some(now);
            *count = 0;
        }
        *count += 1;
        if *count > limit {
            return Err(DropReason::RateLimited);
        }
        let from_port = p.port;
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
                .keys()
                .copied()
                .filter(|id| *id != from)
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
        let from_port = self
            .peers
            .get(&from)
            .map(|p| p.port)
            .ok_or(DropReason::UnknownPeer)?;
        if r.hops.is_empty() || r.hops.len() >= MAX_ROUTE_LEN {
            return Err(DropReason::BadPath);
        }
        if r.searcher == self.key {
            if self
                .paths
                .searches
                .get(&r.target)
                .is_none_or(|(n, _)| *n != r.nonce)
            {
                return Err(DropReason::NoBreadcrumb);
            }
            r.verify().map_err(|e| match e {
                crate::wire::WireError::BadSignature => DropReason::BadSignature,
                _ => DropReason::BadPath,
            })?;
            let mut ports = vec![from_port];
            ports.extend(r.hops.iter().skip(1).rev().map(|h| h.in_port));
            let better = self
                .paths
                .routes
                .get(&r.target)
                .is_none_or(|old| ports.len() < old.ports.len());
            if better {
                self.install_route(r.target, ports, now);
                self.send_traffic(r.target, Vec::new(), true, now);
            }
            return Ok(());
        }
        let crumb = self
            .paths
            .crumbs
            .get(&(r.searcher, r.nonce))
            .ok_or(DropReason::NoBreadcrumb)?;
        let up = crumb.upstream.ok_or(DropReason::NoBreadcrumb)?;
        let up_port = self
            .peers
            .get(&up)
            .map(|p| p.port)
            .ok_or(DropReason::NoRoute)?;
        if r.hops.iter().any(|h| h.key == self.key) {
            return Err(DropReason::BadPath);
        }
        r.push_signed(&self.keypair, from_port, up_port);
        self.enqueue(up, &Frame::PathReply(r));
        Ok(())
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
        self.paths.routes.insert(dst, Route { ports, used: now });
    }

    /// Drops expired breadcrumbs, searches, routes and cached coordinates.
    pub(super) fn expire_paths(&mut self, now: Instant) {
        let crumb_ttl = self.config.breadcrumb_ttl;
        self.paths.crumbs.retain(|_, c| c.at + crumb_ttl > now);
        let backoff = self.config.search_backoff.max(crumb_ttl);
        self.paths.searches.retain(|_, (_, s)| *s + backoff > now);
        let route_ttl = self.config.route_ttl;
        self.paths.routes.retain(|_, r| r.used + route_ttl > now);
        let coords_ttl = self.config.coords_ttl;
        self.coords_cache.retain(|_, (_, t)| *t + coords_ttl > now);
    }
}
