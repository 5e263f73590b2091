//! The recent part of a room's event graph, in memory: forward extremities, gaps (parents we do
//! not have) and topological order. The database holds the whole graph; this window keeps the
//! newest [`GRAPH_WINDOW`] events so the hot path never reads edges back from disk.

use std::collections::{HashMap, HashSet, VecDeque};

use petgraph::{
    Direction,
    stable_graph::{NodeIndex, StableDiGraph},
};
use ruma::{EventId, OwnedEventId};

/// Events kept in a room's in-memory graph; older ones are dropped first.
pub const GRAPH_WINDOW: usize = 2_000;

/// A node: an event we have, or a parent we have only heard of (a gap).
#[derive(Debug, Clone)]
struct Node {
    id: OwnedEventId,
    known: bool,
    /// A parent older than the window that the database holds: history, not a gap.
    on_disk: bool,
}

/// The recent DAG of one room. Edges point from an event to its parents.
#[derive(Debug, Default)]
pub struct RoomGraph {
    graph: StableDiGraph<Node, ()>,
    index: HashMap<OwnedEventId, NodeIndex>,
    /// Known events in insertion order, for pruning.
    order: VecDeque<NodeIndex>,
}

impl RoomGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    fn node(&mut self, id: &EventId) -> NodeIndex {
        if let Some(&ix) = self.index.get(id) {
            return ix;
        }
        let ix = self.graph.add_node(Node {
            id: id.to_owned(),
            known: false,
            on_disk: false,
        });
        self.index.insert(id.to_owned(), ix);
        ix
    }

    /// Adds an event with its parents; parents not yet seen become gaps.
    pub fn add(&mut self, id: &EventId, prev_events: &[OwnedEventId]) {
        let ix = self.node(id);
        if let Some(node) = self.graph.node_weight_mut(ix) {
            if node.known {
                return;
            }
            node.known = true;
        }
        for prev in prev_events {
            let p = self.node(prev);
            self.graph.update_edge(ix, p, ());
        }
        self.order.push_back(ix);
        self.prune();
    }

    fn prune(&mut self) {
        while self.order.len() > GRAPH_WINDOW {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            // Parents of the dropped event that are only gaps go with it.
            let parents: Vec<NodeIndex> = self
                .graph
                .neighbors_directed(old, Direction::Outgoing)
                .collect();
            if let Some(node) = self.graph.remove_node(old) {
                self.index.remove(&node.id);
            }
            for p in parents {
                let orphan_gap = self.graph.node_weight(p).is_some_and(|n| !n.known)
                    && self
                        .graph
                        .neighbors_directed(p, Direction::Incoming)
                        .next()
                        .is_none();
                if orphan_gap && let Some(node) = self.graph.remove_node(p) {
                    self.index.remove(&node.id);
                }
            }
        }
    }

    /// Marks parents outside the window as stored history rather than gaps.
    pub fn mark_on_disk(&mut self, ids: &[OwnedEventId]) {
        for id in ids {
            if let Some(node) = self
                .index
                .get(id)
                .and_then(|ix| self.graph.node_weight_mut(*ix))
            {
                node.on_disk = true;
            }
        }
    }

    /// Whether the event is in the window.
    pub fn contains(&self, id: &EventId) -> bool {
        self.index
            .get(id)
            .and_then(|ix| self.graph.node_weight(*ix))
            .is_some_and(|n| n.known)
    }

    /// Known events that no known event names as a parent: the forward extremities.
    pub fn extremities(&self) -> Vec<OwnedEventId> {
        let mut out: Vec<OwnedEventId> = self
            .graph
            .node_indices()
            .filter(|&ix| self.graph.node_weight(ix).is_some_and(|n| n.known))
            .filter(|&ix| {
                !self
                    .graph
                    .neighbors_directed(ix, Direction::Incoming)
                    .any(|c| self.graph.node_weight(c).is_some_and(|n| n.known))
            })
            .filter_map(|ix| self.graph.node_weight(ix).map(|n| n.id.clone()))
            .collect();
        out.sort();
        out
    }

    /// Parents named by events in the window that we do not have (older ones than the window's
    /// oldest events are not gaps, just history on disk; callers check the database).
    pub fn gaps(&self) -> Vec<OwnedEventId> {
        let mut out: Vec<OwnedEventId> = self
            .graph
            .node_indices()
            .filter_map(|ix| self.graph.node_weight(ix))
            .filter(|n| !n.known && !n.on_disk)
            .map(|n| n.id.clone())
            .collect();
        out.sort();
        out
    }

    /// Known events, parents before children (Kahn's algorithm, loop-based).
    pub fn topological_order(&self) -> Vec<OwnedEventId> {
        let known: HashSet<NodeIndex> = self
            .graph
            .node_indices()
            .filter(|&ix| self.graph.node_weight(ix).is_some_and(|n| n.known))
            .collect();
        let mut pending: HashMap<NodeIndex, usize> = known
            .iter()
            .map(|&ix| {
                let parents = self
                    .graph
                    .neighbors_directed(ix, Direction::Outgoing)
                    .filter(|p| known.contains(p))
                    .count();
                (ix, parents)
            })
            .collect();
        let mut ready: Vec<NodeIndex> = pending
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(ix, _)| *ix)
            .collect();
        ready.sort_by(|a, b| self.id(*b).cmp(&self.id(*a)));
        let mut out = Vec::with_capacity(known.len());
        while let Some(ix) = ready.pop() {
            if let Some(id) = self.id(ix) {
                out.push(id.clone());
            }
            for child in self.graph.neighbors_directed(ix, Direction::Incoming) {
                if let Some(n) = pending.get_mut(&child) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        ready.push(child);
                    }
                }
            }
        }
        out
    }

    fn id(&self, ix: NodeIndex) -> Option<&OwnedEventId> {
        self.graph.node_weight(ix).map(|n| &n.id)
    }

    /// Number of known events in the window.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests;
