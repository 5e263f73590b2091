//! Traffic forwarding: a source route when the flow has one, else greedy on the tree when the
//! destination's coordinates are known, else by key on the ring. Each step falls back to the
//! next when it cannot proceed.

use std::time::Instant;

use crate::identity::PublicKey;
use crate::router::metrics::DropReason;
use crate::router::ring::KeyHop;
use crate::router::{Event, PeerId, Router};
use crate::wire::{Frame, MAX_ROUTE_LEN, Traffic};

impl Router {
    /// Builds and routes a datagram (or a route probe) from this node.
    pub(super) fn send_traffic(
        &mut self,
        to: PublicKey,
        payload: Vec<u8>,
        probe: bool,
        now: Instant,
    ) {
        if to == self.key {
            if !probe {
                self.metrics.delivered += 1;
                self.push_event(Event::Delivered {
                    from: to,
                    payload,
                    hops: 0,
                });
            }
            return;
        }
        let route = match self.paths.routes.get_mut(&to) {
            Some(r) => {
                r.used = now;
                r.ports.clone()
            }
            None => Vec::new(),
        };
        let t = Traffic {
            hop_limit: self.config.hop_limit,
            hops: 0,
            broken: false,
            probe,
            src: self.key,
            dst: to,
            src_coords: self.tree.coords.clone(),
            dst_coords: self.coords_cache.get(&to).map(|(c, _)| c.clone()),
            watermark: None,
            route,
            route_pos: 0,
            reverse: Vec::new(),
            payload,
        };
        self.forward_traffic(None, t, now);
    }

    /// Routes a traffic frame that arrived from `from` (or is ours, when `None`).
    pub(super) fn forward_traffic(&mut self, from: Option<PeerId>, mut t: Traffic, now: Instant) {
        if let Some(peer) = from {
            if t.hop_limit == 0 {
                self.metrics.drop(DropReason::HopLimit);
                return;
            }
            t.hop_limit -= 1;
            t.hops = t.hops.saturating_add(1);
            // A stale route is torn down; the frame itself goes on by what is left.
            self.check_watermark(peer, &t.dst, false, t.watermark, now);
            if !t.route.is_empty() && !t.broken {
                match self.peers.get(&peer) {
                    Some(p) if t.reverse.len() < MAX_ROUTE_LEN => t.reverse.push(p.port),
                    _ => t.reverse.clear(),
                }
            }
        }
        if t.dst == self.key {
            self.deliver(t, now);
            return;
        }
        if !t.route.is_empty() && !t.broken {
            let next = t
                .route
                .get(usize::from(t.route_pos))
                .and_then(|port| self.peer_by_port(*port));
            if let Some(next) = next {
                t.route_pos += 1;
                self.enqueue(next, &Frame::Traffic(t));
                return;
            }
            // The route names a link that is gone (or ended early): fall back and tell the
            // receiver, which will search again.
            tracing::trace!(dst = %t.dst, "source route broken");
            t.broken = true;
            t.route.clear();
            t.route_pos = 0;
            t.reverse.clear();
        }
        if let Some(dc) = &t.dst_coords {
            if let Some(next) = self.tree_next_hop(dc) {
                self.enqueue(next, &Frame::Traffic(t));
                return;
            }
            // A dead end on the tree (stale coordinates, or another root): go by key.
            t.dst_coords = None;
        }
        match self.key_next_hop(&t.dst, false, t.watermark, now) {
            KeyHop::Local => self.metrics.drop(DropReason::NoRoute),
            KeyHop::Peer(next, wm) => {
                t.watermark = wm;
                self.enqueue(next, &Frame::Traffic(t));
            }
        }
    }

    /// A frame for this node: learn what it teaches, then hand it to the application.
    fn deliver(&mut self, t: Traffic, now: Instant) {
        let src = t.src;
        // Empty coordinates from a node other than the root were shed on the way (too long
        // to carry); they teach nothing.
        let has_coords = !t.src_coords.is_empty() || src == self.tree.current.root;
        let first_contact = has_coords
            && self.cache_coords(src, &t.src_coords, now)
            && !self.peers.values().any(|p| p.key == src);
        if first_contact {
            self.push_event(Event::NodeReachable(src));
        }
        let source_routed = !t.reverse.is_empty() && !t.broken;
        if source_routed {
            let back: Vec<u16> = t.reverse.iter().rev().copied().collect();
            // Both ends search (each is the receiver of the other's first packets), so a
            // probe often brings a way while the one this node found itself is fresh: the
            // shorter stays. A probe arriving once the route has settled answers a repair (the
            // other end searched again because a datagram came broken), and replaces it.
            let settle = self.config.route_settle;
            let replace = self.paths.routes.get(&src).is_none_or(|r| {
                back.len() <= r.ports.len() || (t.probe && r.installed + settle <= now)
            });
            if replace {
                self.install_route(src, back, now);
            }
        } else {
            if t.broken {
                self.paths.routes.remove(&src);
            }
            // A direct peer is one hop away already; anyone else is worth a search.
            let is_peer = self.peers.values().any(|p| p.key == src);
            if !is_peer && !self.paths.routes.contains_key(&src) {
                self.start_search(src, &t.src_coords, now);
            }
        }
        if !t.probe {
            self.metrics.delivered += 1;
            self.push_event(Event::Delivered {
                from: src,
                payload: t.payload,
                hops: t.hops,
            });
        }
    }
}
