//! The discrete-event simulator: seeded, in virtual time, driving the very [`Router`] that
//! ships over a topology with a latency per link.
//!
//! [`run`] measures one topology:
//! 1. **cold start**: every link comes up at t = 0; converged once every node of the largest
//!    component follows the highest key as root and holds a ring route to its key-space
//!    predecessor that still leads there, walked hop by hop (checked every 250 ms of virtual
//!    time);
//! 2. **stretch**: sampled pairs (s, d) exchange a ping and its automatic pong (first contact
//!    goes by key on the ring; the receiver searches a path and installs source routes), then
//!    s sends one more datagram: its hops ÷ the BFS shortest hops is the stretch, and the share
//!    delivered is the reachability;
//! 3. **set-up cost**: fresh pairs set a flow up one at a time (see `setup`): bytes and frames
//!    sent network-wide and nodes touched per set-up;
//! 4. **idle**: protocol bytes sent per node per second over a window without traffic;
//! 5. **leave**: a random non-leaf node leaves; re-converged once the remaining largest
//!    component meets the cold-start condition again; then the old pairs that survive send
//!    again (routes broken by the leave must fall back and repair);
//! 6. **traffic** (when asked): flows replaced and nodes churning (see `traffic`);
//! 7. **records** (when asked): records published and looked up, before and after a share
//!    of the nodes churns (see `records`).
//!
//! [`Router`]: crate::router::Router

mod network;
pub mod records;
mod setup;
mod topology;
mod traffic;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::identity::PublicKey;
use crate::router::Config;

pub use network::{
    Delivery, KINDS, LookupResult, Network, PING, PONG, PROBE_KIND, SIM_UNIX_EPOCH, Sent, kind_name,
};
pub use records::{RecordOptions, RecordReport};
pub use setup::SetupCost;
pub use topology::{Topology, TopologySpec};
pub use traffic::{TrafficOptions, TrafficReport};

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// An edge list could not be read.
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, String),
    /// An edge list line is not two node numbers.
    #[error("{0}: line {1} is not an edge")]
    Parse(PathBuf, usize),
    /// The graph has fewer than two nodes.
    #[error("topology too small")]
    TooSmall,
}

/// Knobs of one run.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Pairs sampled for stretch and reachability.
    pub pairs: usize,
    /// One-way link latency is drawn uniformly from this range, in milliseconds.
    pub latency_ms: (u64, u64),
    /// Longest virtual time to wait for convergence.
    pub max_converge: Duration,
    /// Idle measurement window.
    pub idle_window: Duration,
    /// Whether to run the leave phase (re-convergence after a node leaves).
    pub leave: bool,
    /// Flows set up one at a time to measure what a set-up costs (0: skip).
    pub setups: usize,
    /// The traffic run, if wanted.
    pub traffic: Option<TrafficOptions>,
    /// The records run, if wanted.
    pub records: Option<RecordOptions>,
    /// Router configuration for every node.
    pub config: Config,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            pairs: 200,
            latency_ms: (1, 10),
            max_converge: Duration::from_secs(300),
            idle_window: Duration::from_secs(300),
            leave: true,
            setups: 50,
            traffic: None,
            records: None,
            // Crawled graphs have hubs with hundreds of links; simulate them as they are.
            config: Config {
                max_peers: 4096,
                ..Config::default()
            },
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Topology name.
    pub name: String,
    /// Nodes.
    pub nodes: usize,
    /// Edges.
    pub edges: usize,
    /// Pairs sampled.
    pub pairs: usize,
    /// Mean stretch of established flows.
    pub stretch_mean: f64,
    /// 95th percentile stretch of established flows.
    pub stretch_p95: f64,
    /// Mean stretch of the first packet of each flow (key-routed on the ring).
    pub first_stretch_mean: f64,
    /// Share of sampled pairs whose datagram arrived, in percent.
    pub reachability: f64,
    /// Cold-start convergence time (virtual), if reached.
    pub cold_convergence: Option<Duration>,
    /// Re-convergence time after a node left (virtual), if reached.
    pub reconvergence: Option<Duration>,
    /// Share of surviving pairs delivered right after re-convergence, in percent (`None` when
    /// the leave phase did not run).
    pub reachability_after_leave: Option<f64>,
    /// Protocol bytes sent per node per second with no traffic.
    pub idle_bytes_per_node_sec: f64,
    /// Mean routing state per node, in bytes.
    pub state_bytes_per_node: f64,
    /// What setting up one flow costs network-wide.
    pub setup: SetupCost,
    /// The traffic run, if it ran.
    pub traffic: Option<TrafficReport>,
    /// The records run, if it ran.
    pub records: Option<RecordReport>,
    /// Wall-clock time the run took.
    pub wall: Duration,
}

/// Runs the whole measurement on `spec` with default options.
pub fn run(spec: &TopologySpec, seed: u64) -> Result<Report, SimError> {
    run_with(spec, seed, &SimOptions::default())
}

/// Runs the whole measurement on `spec`.
pub fn run_with(spec: &TopologySpec, seed: u64, opts: &SimOptions) -> Result<Report, SimError> {
    let wall = Instant::now();
    let topo = Topology::build(spec, seed)?;
    if topo.nodes < 2 {
        return Err(SimError::TooSmall);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut net = Network::new(seed, opts.config.clone());
    for _ in 0..topo.nodes {
        net.add_node();
    }
    for (a, b) in &topo.edges {
        let lat = Duration::from_millis(rng.gen_range(opts.latency_ms.0..=opts.latency_ms.1));
        net.connect(*a, *b, lat);
    }
    let step = Duration::from_millis(250);

    // 1. Cold start.
    let comp = largest_component(&net);
    let cold = net.wait(step, opts.max_converge, |n| converged(n, &comp));
    net.run_for(Duration::from_secs(2));

    // 2. Stretch and reachability.
    let pairs = sample_pairs(&mut rng, &comp, opts.pairs);
    let (first, measured) = measure_pairs(&mut net, &pairs, true);
    let (stretches, reach) = stretch_of(&net, &pairs, &measured);
    let first_stretch: Vec<f64> = stretch_of(&net, &pairs, &first).0;

    // 3. Set-up cost, one fresh flow at a time.
    // Its own random stream, so the phases after it meet the same choices with or without it.
    let mut setup_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5e70_9c05);
    let fresh = sample_pairs(&mut setup_rng, &comp, opts.setups);
    let setup = setup::measure(&mut net, &fresh);

    // 4. Idle traffic and state.
    net.run_for(Duration::from_secs(60));
    let before: u64 = (0..net.len()).map(|i| net.bytes_out(i)).sum();
    net.run_for(opts.idle_window);
    let after: u64 = (0..net.len()).map(|i| net.bytes_out(i)).sum();
    let idle = (after - before) as f64 / topo.nodes as f64 / opts.idle_window.as_secs_f64();
    let state = (0..net.len())
        .map(|i| net.router(i).state_bytes() as f64)
        .sum::<f64>()
        / topo.nodes as f64;

    // 5. A random non-leaf node leaves.
    let candidates: Vec<usize> = comp
        .iter()
        .copied()
        .filter(|i| net.neighbours(*i).len() >= 2)
        .collect();
    let (reconv, reach_after) = if candidates.is_empty() || !opts.leave {
        (None, None)
    } else {
        let victim = candidates[rng.gen_range(0..candidates.len())];
        net.remove_node(victim);
        let comp2 = largest_component(&net);
        let reconv = net.wait(step, opts.max_converge, |n| converged(n, &comp2));
        let in_comp = |i: &usize| comp2.binary_search(i).is_ok();
        let survivors: Vec<(usize, usize)> = pairs
            .iter()
            .copied()
            .filter(|(s, d)| in_comp(s) && in_comp(d))
            .collect();
        let (_, again) = measure_pairs(&mut net, &survivors, false);
        let got = again.iter().filter(|h| h.is_some()).count();
        let pct = if survivors.is_empty() {
            100.0
        } else {
            100.0 * got as f64 / survivors.len() as f64
        };
        (reconv, Some(pct))
    };

    // 6. Traffic with flows replaced and nodes churning.
    let traffic = opts.traffic.as_ref().map(|t| {
        let comp3 = largest_component(&net);
        traffic::run(&mut net, &comp3, &mut rng, t)
    });

    // 7. Records published, looked up, and looked up again after churn.
    let records = opts.records.as_ref().map(|o| {
        let comp4 = largest_component(&net);
        net.wait(step, opts.max_converge, |n| converged(n, &comp4));
        let mut rec_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x07ec_04d5);
        records::run(&mut net, &comp4, &mut rec_rng, o)
    });

    Ok(Report {
        name: topo.name,
        nodes: topo.nodes,
        edges: topo.edges.len(),
        pairs: pairs.len(),
        stretch_mean: mean(&stretches),
        stretch_p95: percentile(&stretches, 0.95),
        first_stretch_mean: mean(&first_stretch),
        reachability: reach,
        cold_convergence: cold,
        reconvergence: reconv,
        reachability_after_leave: reach_after,
        idle_bytes_per_node_sec: idle,
        state_bytes_per_node: state,
        setup,
        traffic,
        records,
        wall: wall.elapsed(),
    })
}

/// Sends a ping per pair (when `ping`), waits for searches to settle, then one measured
/// datagram per pair. Returns the hops of the first contact and of the measured datagram.
fn measure_pairs(
    net: &mut Network,
    pairs: &[(usize, usize)],
    ping: bool,
) -> (Vec<Option<u8>>, Vec<Option<u8>>) {
    let settle = Duration::from_secs(5);
    let mut first = vec![None; pairs.len()];
    if ping {
        net.deliveries.clear();
        for (i, (s, d)) in pairs.iter().enumerate() {
            net.send(*s, *d, tagged(PING, i));
        }
        net.run_for(settle);
        record(net, PING, &mut first);
    }
    net.deliveries.clear();
    for (i, (s, d)) in pairs.iter().enumerate() {
        net.send(*s, *d, tagged(0x01, i));
    }
    net.run_for(settle);
    let mut measured = vec![None; pairs.len()];
    record(net, 0x01, &mut measured);
    (first, measured)
}

fn tagged(kind: u8, i: usize) -> Vec<u8> {
    let mut p = vec![kind];
    p.extend_from_slice(&(i as u64).to_be_bytes());
    p
}

fn record(net: &Network, kind: u8, out: &mut [Option<u8>]) {
    for d in &net.deliveries {
        if d.payload.first() == Some(&kind)
            && let Some(b) = d.payload.get(1..9)
            && let Ok(arr) = <[u8; 8]>::try_from(b)
            && let Some(slot) = out.get_mut(u64::from_be_bytes(arr) as usize)
            && slot.is_none()
        {
            *slot = Some(d.hops);
        }
    }
}

fn stretch_of(net: &Network, pairs: &[(usize, usize)], hops: &[Option<u8>]) -> (Vec<f64>, f64) {
    let mut out = Vec::new();
    for ((s, d), h) in pairs.iter().zip(hops) {
        if let Some(h) = h
            && let Some(sp) = bfs_hops(net, *s, *d)
            && sp > 0
        {
            out.push(f64::from(*h) / sp as f64);
        }
    }
    let reach = if pairs.is_empty() {
        100.0
    } else {
        100.0 * hops.iter().filter(|h| h.is_some()).count() as f64 / pairs.len() as f64
    };
    (out, reach)
}

/// Shortest hop counts from `s` to every node over live links (`u32::MAX`: unreachable).
fn bfs_all(net: &Network, s: usize) -> Vec<u32> {
    let mut dist = vec![u32::MAX; net.len()];
    let mut q = VecDeque::new();
    dist[s] = 0;
    q.push_back(s);
    while let Some(u) = q.pop_front() {
        for &v in net.neighbours(u) {
            if dist[v] == u32::MAX {
                dist[v] = dist[u] + 1;
                q.push_back(v);
            }
        }
    }
    dist
}

/// Shortest hop count over live links.
fn bfs_hops(net: &Network, s: usize, d: usize) -> Option<usize> {
    let mut dist = vec![usize::MAX; net.len()];
    let mut q = VecDeque::new();
    dist[s] = 0;
    q.push_back(s);
    while let Some(u) = q.pop_front() {
        if u == d {
            return Some(dist[u]);
        }
        for &v in net.neighbours(u) {
            if dist[v] == usize::MAX {
                dist[v] = dist[u] + 1;
                q.push_back(v);
            }
        }
    }
    None
}

/// The largest connected component of live nodes, sorted.
fn largest_component(net: &Network) -> Vec<usize> {
    let n = net.len();
    let adj: Vec<Vec<usize>> = (0..n).map(|i| net.neighbours(i).to_vec()).collect();
    let mut seen = vec![false; n];
    let mut best: Vec<usize> = Vec::new();
    for s in 0..n {
        if seen[s] || !net.is_alive(s) {
            continue;
        }
        let mut comp = vec![s];
        seen[s] = true;
        let mut i = 0;
        while let Some(&u) = comp.get(i) {
            i += 1;
            for &v in &adj[u] {
                if !seen[v] {
                    seen[v] = true;
                    comp.push(v);
                }
            }
        }
        if comp.len() > best.len() {
            best = comp;
        }
    }
    best.sort_unstable();
    best
}

/// One root (the highest key) and a ring route from every node to its predecessor that still
/// leads there (an entry whose way is being torn down does not count).
fn converged(net: &Network, comp: &[usize]) -> bool {
    let mut keys: Vec<(PublicKey, usize)> = comp.iter().map(|i| (net.key(*i), *i)).collect();
    keys.sort_unstable();
    let Some((root, _)) = keys.last().copied() else {
        return true;
    };
    if comp.iter().any(|i| net.router(*i).root() != root) {
        return false;
    }
    keys.windows(2)
        .all(|w| net.ring_route_holds(w[1].1, &w[0].0))
}

fn sample_pairs(rng: &mut ChaCha8Rng, comp: &[usize], n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(n);
    if comp.len() < 2 {
        return out;
    }
    while out.len() < n {
        let s = comp[rng.gen_range(0..comp.len())];
        let d = comp[rng.gen_range(0..comp.len())];
        if s != d {
            out.push((s, d));
        }
    }
    out
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let idx = ((p * s.len() as f64).ceil() as usize)
        .saturating_sub(1)
        .min(s.len() - 1);
    s[idx]
}
