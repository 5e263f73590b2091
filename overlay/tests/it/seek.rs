//! Guided path search in virtual time: setting a flow up costs in proportion to its path, not
//! to the network, and a node flooding searches costs the network a bounded, counted amount
//! while everyone else's traffic goes on.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use grove_overlay::identity::NodeKeypair;
use grove_overlay::router::{Config, DropReason, tree_distance};
use grove_overlay::sim::{Network, PING, Topology, TopologySpec};
use grove_overlay::wire::{Frame, FrameType, MAX_ROUTE_LEN, MAX_SEEK_WIDTH, PathSeek};

const LINK: Duration = Duration::from_millis(5);

/// A converged 200-node scale-free network.
fn scale_free() -> Network {
    super::subscribe();
    let topo = Topology::build(&TopologySpec::ScaleFree(200, 2), 5)
        .unwrap_or_else(|e| panic!("topology: {e}"));
    let mut net = Network::new(5, Config::default());
    for _ in 0..topo.nodes {
        net.add_node();
    }
    for (a, b) in &topo.edges {
        net.connect(*a, *b, LINK);
    }
    let took = net.wait(Duration::from_millis(250), Duration::from_secs(120), |n| {
        let mut keys: Vec<_> = (0..n.len()).map(|i| (n.key(i), i)).collect();
        keys.sort();
        let root = keys.last().map(|k| k.0);
        keys.iter().all(|(_, i)| Some(n.router(*i).root()) == root)
            && keys.windows(2).all(|w| n.ring_route_holds(w[1].1, &w[0].0))
    });
    assert!(took.is_some(), "no convergence in 120 s of virtual time");
    net
}

fn seek_frames(net: &Network, skip: Option<usize>) -> u64 {
    (0..net.len())
        .filter(|i| Some(*i) != skip)
        .map(|i| net.router(i).metrics().frames_out(FrameType::PathSeek))
        .sum()
}

#[test]
fn a_flow_set_up_costs_in_proportion_to_its_path() {
    let mut net = scale_free();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let width = u64::from(Config::default().search_width);
    for _ in 0..20 {
        let (s, d) = (rng.gen_range(0..200), rng.gen_range(0..200));
        if s == d || net.neighbours(s).contains(&d) {
            continue;
        }
        let tree = tree_distance(net.router(s).coords(), net.router(d).coords()) as u64;
        let before = seek_frames(&net, None);
        net.send(s, d, vec![PING, 1]);
        net.run_for(Duration::from_secs(2));
        let seeks = seek_frames(&net, None) - before;
        // One search each way at most (the receiver of the ping, and the sender if its
        // route has not arrived by the pong), each at most width × hop limit frames.
        assert!(
            seeks <= 2 * width * tree,
            "{seeks} search frames for a tree distance of {tree}"
        );
        assert!(net.router(d).has_route(&net.key(s)), "no route installed");
        net.deliveries.clear();
        net.send(s, d, vec![0x01]);
        net.run_for(Duration::from_secs(1));
        let hops = net.deliveries.iter().find(|x| x.to == d).map(|x| x.hops);
        let hops = hops.unwrap_or_else(|| panic!("{s} → {d} not delivered"));
        assert!(
            u64::from(hops) <= tree,
            "{hops} hops where the tree takes {tree}"
        );
    }
}

#[test]
fn a_node_flooding_searches_costs_a_bounded_counted_amount() {
    let mut net = scale_free();
    // The best-linked node turns hostile: it reaches the most peers.
    let hostile = (0..net.len())
        .max_by_key(|i| net.neighbours(*i).len())
        .unwrap_or(0);
    let neighbours = net.neighbours(hostile).to_vec();
    let me = net.key(hostile);
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let honest: Vec<(usize, usize)> = (0..40)
        .map(|_| {
            loop {
                let (s, d) = (rng.gen_range(0..200), rng.gen_range(0..200));
                if s != d && s != hostile && d != hostile {
                    break (s, d);
                }
            }
        })
        .collect();
    let before = seek_frames(&net, Some(hostile));
    let sent_before = net.deliveries.len();
    let mut sent = 0u64;
    let mut nonce = 0u64;
    let secs = 2u64;
    let mut honest_sent = 0;
    // 50 ticks a second: each neighbour gets 10 searches in the hostile node's own name and
    // 10 in forged names a tick, all as wide and as long as the wire allows, toward random
    // keys at random coordinates: 1,000 frames a second per neighbour.
    for tick in 0..secs * 50 {
        for &n in &neighbours {
            for k in 0..20 {
                nonce += 1;
                let forged = k >= 10;
                let searcher = if forged {
                    NodeKeypair::from_seed(rng.r#gen()).public_key()
                } else {
                    me
                };
                let coords: Vec<u16> = (0..rng.gen_range(1..6))
                    .map(|_| rng.gen_range(1..5))
                    .collect();
                let s = PathSeek {
                    searcher,
                    target: NodeKeypair::from_seed(rng.r#gen()).public_key(),
                    nonce,
                    hop_limit: MAX_ROUTE_LEN as u8,
                    hops: if forged { 3 } else { 1 },
                    width: MAX_SEEK_WIDTH,
                    target_coords: coords,
                };
                net.inject(hostile, n, Frame::PathSeek(s).encode());
                sent += 1;
            }
        }
        if tick % 5 == 0 {
            for (s, d) in &honest {
                net.send(*s, *d, vec![0x01]);
                honest_sent += 1;
            }
        }
        net.run_for(Duration::from_millis(20));
    }
    net.run_for(Duration::from_secs(2));
    let caused = seek_frames(&net, Some(hostile)) - before;
    let dropped: u64 = neighbours
        .iter()
        .map(|n| {
            let m = net.router(*n).metrics();
            m.drops(DropReason::RateLimited) + m.drops(DropReason::OriginRateLimited)
        })
        .sum();
    let delivered = net.deliveries[sent_before..]
        .iter()
        .filter(|d| d.payload.first() == Some(&0x01))
        .count();
    println!(
        "hostile sent {sent}, neighbours dropped {dropped}, the network sent {caused} search \
         frames, {delivered} of {honest_sent} honest datagrams arrived"
    );
    // What the neighbours may accept from it: per second, the per-peer budget in width units,
    // each unit going on along one way of at most the hop limit.
    let units = neighbours.len() as u64 * u64::from(Config::default().path_finds_per_peer_per_sec);
    assert!(
        caused <= (secs + 1) * units * MAX_ROUTE_LEN as u64,
        "{caused} frames caused"
    );
    // Not an amplifier: the network as a whole sends fewer search frames than the hostile node
    // does (about a third with these numbers), and nearly all of those are refused at its
    // first hop, counted (the count also holds searches the neighbours refused one another,
    // hence no exact match).
    assert!(
        caused * 2 < sent,
        "{caused} caused by {sent} hostile frames"
    );
    assert!(dropped * 10 >= sent * 9, "{dropped} of {sent} dropped");
    // Everyone else's traffic goes on.
    assert!(
        delivered as u64 * 100 >= honest_sent * 99,
        "{delivered} of {honest_sent} honest datagrams"
    );
}
