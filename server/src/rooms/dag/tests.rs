//! Extremities, gaps and order of the in-memory room graph.

use ruma::{OwnedEventId, owned_event_id};

use super::RoomGraph;

fn ids(list: &[&str]) -> Vec<OwnedEventId> {
    list.iter()
        .map(|s| OwnedEventId::try_from(*s).unwrap_or_else(|_| owned_event_id!("$bad")))
        .collect()
}

#[test]
fn fork_and_merge() {
    let mut g = RoomGraph::new();
    g.add(&owned_event_id!("$a"), &[]);
    g.add(&owned_event_id!("$b"), &ids(&["$a"]));
    g.add(&owned_event_id!("$c"), &ids(&["$a"]));
    assert_eq!(g.extremities(), ids(&["$b", "$c"]));
    g.add(&owned_event_id!("$d"), &ids(&["$b", "$c", "$x"]));
    assert_eq!(g.extremities(), ids(&["$d"]));
    assert_eq!(g.gaps(), ids(&["$x"]));
    let order = g.topological_order();
    assert_eq!(order.first(), Some(&owned_event_id!("$a")));
    assert_eq!(order.last(), Some(&owned_event_id!("$d")));
}

#[test]
fn parents_on_disk_are_not_gaps() {
    let mut g = RoomGraph::new();
    g.add(&owned_event_id!("$b"), &ids(&["$a", "$x"]));
    assert_eq!(g.gaps(), ids(&["$a", "$x"]));
    g.mark_on_disk(&ids(&["$a"]));
    assert_eq!(g.gaps(), ids(&["$x"]));
    assert_eq!(g.extremities(), ids(&["$b"]));
}
