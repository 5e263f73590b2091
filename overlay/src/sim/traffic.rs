//! The traffic run: every node holds flows to random peers, replaces one now and then, and a
//! share of the nodes restarts every minute; what does the network pay, and what arrives?
//!
//! Time moves in one-second ticks. Each node holds `flows_per_node` flows, each sending one
//! datagram every `send_every`; every `replace_every` each node drops one flow and opens one to
//! a new random node (a fresh set-up). Once a minute, `churn_per_minute` of the nodes restart
//! with fresh keys in the same place (they leave, and new nodes join on the same links); flows
//! to and from them are replaced. After a warm-up, the run counts protocol bytes (everything
//! but the datagrams: upkeep, set-ups and repair), the stretch of delivered datagrams from a
//! sample of senders (hops ÷ shortest hops, first packets included), and the share delivered.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::identity::PublicKey;
use crate::sim::network::{KINDS, Network, kind_name};
use crate::sim::{bfs_all, mean, percentile};
use crate::wire::FrameType;

/// Payload kind of traffic-run datagrams (not a ping: nobody answers them).
const DATA: u8 = 0x03;

/// Knobs of a traffic run.
#[derive(Debug, Clone)]
pub struct TrafficOptions {
    /// Flows each node holds (F).
    pub flows_per_node: usize,
    /// Each node replaces one flow this often (T).
    pub replace_every: Duration,
    /// Share of nodes restarting once a minute.
    pub churn_per_minute: f64,
    /// Each flow sends one datagram this often.
    pub send_every: Duration,
    /// Run this long before counting.
    pub warmup: Duration,
    /// Count over this long.
    pub duration: Duration,
    /// Senders whose datagrams' stretch is measured.
    pub stretch_sources: usize,
    /// After a churn batch, datagrams sent within this long are not "between churn events".
    pub churn_quiet: Duration,
}

impl Default for TrafficOptions {
    fn default() -> Self {
        TrafficOptions {
            flows_per_node: 10,
            replace_every: Duration::from_secs(60),
            churn_per_minute: 0.01,
            send_every: Duration::from_secs(10),
            warmup: Duration::from_secs(60),
            duration: Duration::from_secs(300),
            stretch_sources: 100,
            churn_quiet: Duration::from_secs(3),
        }
    }
}

/// What a traffic run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficReport {
    /// Protocol bytes (upkeep, set-up, repair) per node per second.
    pub protocol_bytes_per_node_sec: f64,
    /// The set-up share of it (searches, replies, probes).
    pub setup_bytes_per_node_sec: f64,
    /// Protocol bytes per node per second by kind of frame ([`kind_name`]), largest first.
    pub protocol_by_kind: Vec<(&'static str, f64)>,
    /// Datagrams counted.
    pub datagrams: u64,
    /// Share delivered of those whose destination did not restart under them, in percent.
    pub delivery: f64,
    /// The same, leaving out datagrams sent within `churn_quiet` after a churn batch or in the
    /// second before one, in percent.
    pub delivery_between_churn: f64,
    /// Mean stretch of delivered datagrams from the sampled senders.
    pub stretch_mean: f64,
    /// 95th percentile of the same.
    pub stretch_p95: f64,
    /// Nodes restarted during the run.
    pub restarts: usize,
    /// Wall time of the run.
    pub wall: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    dst: u32,
    key: PublicKey,
}

/// One datagram sent while counting.
#[derive(Debug, Clone, Copy)]
struct Sent {
    src: u32,
    dst: u32,
    /// Virtual second it was sent at.
    at: u32,
    /// Hops it took, once delivered.
    hops: Option<u8>,
}

/// Runs traffic over `comp` (the nodes taking part, a converged component) of `net`.
pub(crate) fn run(
    net: &mut Network,
    comp: &[usize],
    rng: &mut ChaCha8Rng,
    opts: &TrafficOptions,
) -> TrafficReport {
    let wall = Instant::now();
    if comp.len() < 2 || opts.flows_per_node == 0 {
        return TrafficReport::default();
    }
    let pick = |rng: &mut ChaCha8Rng, net: &Network, not: usize| -> Flow {
        loop {
            let d = comp[rng.gen_range(0..comp.len())];
            if d != not {
                return Flow {
                    dst: d as u32,
                    key: net.key(d),
                };
            }
        }
    };
    let mut flows: HashMap<usize, Vec<Flow>> = comp
        .iter()
        .map(|&i| {
            (
                i,
                (0..opts.flows_per_node)
                    .map(|_| pick(rng, net, i))
                    .collect(),
            )
        })
        .collect();
    let sources: Vec<usize> = (0..opts.stretch_sources.min(comp.len()))
        .map(|_| comp[rng.gen_range(0..comp.len())])
        .collect();
    let secs = |d: Duration| d.as_secs().max(1);
    let (replace, every) = (secs(opts.replace_every), secs(opts.send_every));
    let (warmup, total) = (
        opts.warmup.as_secs(),
        opts.warmup.as_secs() + opts.duration.as_secs(),
    );
    let churn_n = ((comp.len() as f64) * opts.churn_per_minute).round() as usize;
    let mut restarted: HashMap<usize, Vec<u64>> = HashMap::new();
    let mut batches: Vec<u64> = Vec::new();
    let mut sent: Vec<Sent> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut next_id: u64 = 0;
    let mut proto_start = (0u64, 0u64);
    let mut rates = (0.0, 0.0);
    let proto = |net: &Network| -> (u64, u64) {
        comp.iter().fold((0, 0), |(p, s), &i| {
            let x = net.sent(i);
            (p + x.protocol_bytes(), s + x.setup_bytes)
        })
    };
    let by_kind = |net: &Network| -> [u64; KINDS] {
        let mut out = [0; KINDS];
        for &i in comp {
            for (o, b) in out.iter_mut().zip(net.sent(i).by_kind) {
                *o += b;
            }
        }
        out
    };
    let mut kinds_start = [0; KINDS];
    let mut protocol_by_kind = Vec::new();
    let mut restarts = 0;
    let drain = 5;
    for t in 0..total + drain {
        if t == warmup {
            proto_start = proto(net);
            kinds_start = by_kind(net);
        }
        let sending = t < total;
        if sending && t % 60 == 30 && churn_n > 0 {
            batches.push(t);
            let mut gone = Vec::with_capacity(churn_n);
            for _ in 0..churn_n {
                let i = comp[rng.gen_range(0..comp.len())];
                net.restart_node(i);
                restarted.entry(i).or_default().push(t);
                gone.push(i);
                restarts += 1;
            }
            for &i in &gone {
                let fresh = (0..opts.flows_per_node)
                    .map(|_| pick(rng, net, i))
                    .collect();
                flows.insert(i, fresh);
            }
            // Flows toward a node that restarted lost their peer: replace them.
            for &i in comp {
                let stale: Vec<usize> = flows[&i]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| net.key(f.dst as usize) != f.key)
                    .map(|(j, _)| j)
                    .collect();
                for j in stale {
                    let f = pick(rng, net, i);
                    if let Some(v) = flows.get_mut(&i) {
                        v[j] = f;
                    }
                }
            }
        }
        if sending {
            for (n, &i) in comp.iter().enumerate() {
                if (t + n as u64).is_multiple_of(replace) {
                    let j = ((t / replace) as usize + n) % opts.flows_per_node;
                    let f = pick(rng, net, i);
                    if let Some(v) = flows.get_mut(&i) {
                        v[j] = f;
                    }
                }
                for j in 0..opts.flows_per_node {
                    if !(t + n as u64 + j as u64).is_multiple_of(every) {
                        continue;
                    }
                    let Some(f) = flows.get(&i).and_then(|v| v.get(j)).copied() else {
                        continue;
                    };
                    let mut payload = vec![DATA];
                    payload.extend_from_slice(&next_id.to_be_bytes());
                    if t >= warmup {
                        index.insert(next_id, sent.len());
                        sent.push(Sent {
                            src: i as u32,
                            dst: f.dst,
                            at: t as u32,
                            hops: None,
                        });
                    }
                    next_id += 1;
                    net.send(i, f.dst as usize, payload);
                }
            }
        }
        net.run_for(Duration::from_secs(1));
        for d in net.deliveries.drain(..) {
            if d.payload.first() == Some(&DATA)
                && let Some(b) = d.payload.get(1..9)
                && let Ok(arr) = <[u8; 8]>::try_from(b)
                && let Some(&k) = index.get(&u64::from_be_bytes(arr))
                && let Some(s) = sent.get_mut(k)
                && s.hops.is_none()
            {
                s.hops = Some(d.hops);
            }
        }
        if t + 1 == total {
            let end = proto(net);
            let per = (comp.len() as f64) * opts.duration.as_secs_f64();
            rates = (
                (end.0 - proto_start.0) as f64 / per,
                (end.1 - proto_start.1) as f64 / per,
            );
            // Datagrams are not protocol; their frame type is traffic, apart from probes.
            let data = FrameType::Traffic.index();
            protocol_by_kind = by_kind(net)
                .iter()
                .zip(kinds_start)
                .enumerate()
                .filter(|(k, _)| *k != data)
                .map(|(k, (e, s))| (kind_name(k), e.saturating_sub(s) as f64 / per))
                .filter(|(_, r)| *r > 0.0)
                .collect();
            protocol_by_kind.sort_by(|a, b| b.1.total_cmp(&a.1));
        }
    }

    // A datagram whose destination restarted before it could arrive had nobody to reach.
    let lost_peer = |s: &Sent| {
        restarted.get(&(s.dst as usize)).is_some_and(|ts| {
            ts.iter()
                .any(|t| *t >= u64::from(s.at) && *t <= u64::from(s.at) + 5)
        })
    };
    let quiet = opts.churn_quiet.as_secs();
    let near_churn = |s: &Sent| {
        let at = u64::from(s.at);
        batches.iter().any(|b| at + 1 >= *b && at <= b + quiet)
    };
    let (mut n_all, mut ok_all, mut n_calm, mut ok_calm) = (0u64, 0u64, 0u64, 0u64);
    for s in sent.iter().filter(|s| !lost_peer(s)) {
        n_all += 1;
        ok_all += u64::from(s.hops.is_some());
        if !near_churn(s) {
            n_calm += 1;
            ok_calm += u64::from(s.hops.is_some());
        }
    }
    let mut dist: HashMap<usize, Vec<u32>> = HashMap::new();
    for &src in &sources {
        dist.entry(src).or_insert_with(|| bfs_all(net, src));
    }
    let mut stretch = Vec::new();
    for s in &sent {
        if let (Some(h), Some(d)) = (s.hops, dist.get(&(s.src as usize)))
            && let Some(&sp) = d.get(s.dst as usize)
            && sp > 0
            && sp != u32::MAX
        {
            stretch.push(f64::from(h) / f64::from(sp));
        }
    }
    let pct = |ok: u64, n: u64| {
        if n == 0 {
            100.0
        } else {
            100.0 * ok as f64 / n as f64
        }
    };
    TrafficReport {
        protocol_bytes_per_node_sec: rates.0,
        setup_bytes_per_node_sec: rates.1,
        protocol_by_kind,
        datagrams: n_all,
        delivery: pct(ok_all, n_all),
        delivery_between_churn: pct(ok_calm, n_calm),
        stretch_mean: mean(&stretch),
        stretch_p95: percentile(&stretch, 0.95),
        restarts,
        wall: wall.elapsed(),
    }
}
