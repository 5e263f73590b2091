//! The records scenario: nodes publish signed records on the ring, others look them up, then
//! a share of the nodes churns (each leaves and a new node with a fresh key takes its place)
//! and the lookups run again once the ring has converged.
//!
//! Measured: the share of lookups that return the published record, the hops of a lookup
//! (to the answering node and back), and the record bytes sent network-wide per publication
//! (one store per placement) and per lookup (a lookup per placement and its replies).

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::identity::{NodeKeypair, PublicKey};
use crate::sim::Network;
use crate::wire::Record;

/// Knobs of the records scenario.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Records published, each from a random node under a key of its own.
    pub publishers: usize,
    /// Lookups per round, each by a random node for a random published key.
    pub lookups: usize,
    /// Share of the nodes that churn between the two rounds.
    pub churn: f64,
    /// Lifetime of the records published.
    pub ttl: Duration,
    /// Bytes of each record's value.
    pub value_len: usize,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            publishers: 50,
            lookups: 200,
            churn: 0.05,
            ttl: Duration::from_secs(3600),
            value_len: 200,
        }
    }
}

/// One round of lookups.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LookupRound {
    /// Lookups made.
    pub lookups: usize,
    /// Share that returned the published record, in percent.
    pub success: f64,
    /// Mean hops of the successful lookups (there and back).
    pub hops_mean: f64,
    /// 95th percentile of those hops.
    pub hops_p95: f64,
    /// Record bytes sent network-wide per lookup.
    pub bytes_per_lookup: f64,
}

/// What the records scenario measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecordReport {
    /// Records published.
    pub publishers: usize,
    /// Publications the publishing router refused (should be none).
    pub refused: usize,
    /// Record bytes sent network-wide per publication (every placement).
    pub bytes_per_publish: f64,
    /// Lookups once the ring converged.
    pub converged: LookupRound,
    /// Nodes that churned.
    pub churned: usize,
    /// Virtual time the ring took to converge again after the churn, if it did.
    pub reconvergence: Option<Duration>,
    /// Lookups after the churn and re-convergence.
    pub after_churn: LookupRound,
    /// Records kept network-wide per record published, after the churn (replicas held).
    pub copies_per_record: f64,
}

fn record_bytes(net: &Network) -> u64 {
    (0..net.len()).map(|i| net.sent(i).record_bytes).sum()
}

/// Runs the scenario on a converged network; `comp` is its largest component.
pub fn run(
    net: &mut Network,
    comp: &[usize],
    rng: &mut ChaCha8Rng,
    opts: &RecordOptions,
) -> RecordReport {
    let mut report = RecordReport {
        publishers: opts.publishers,
        ..RecordReport::default()
    };
    if comp.len() < 2 {
        return report;
    }
    // Publish.
    let before = record_bytes(net);
    let mut published: Vec<(PublicKey, u64)> = Vec::new();
    for n in 0..opts.publishers {
        let home = NodeKeypair::from_seed(rng.r#gen());
        let node = comp[rng.gen_range(0..comp.len())];
        let expires = net.unix_time() + opts.ttl.as_secs();
        let value = vec![n as u8; opts.value_len];
        let seq = 1 + n as u64;
        let Ok(record) = Record::signed(&home, home.public_key(), seq, expires, value) else {
            report.refused += 1;
            continue;
        };
        match net.publish(node, record) {
            Ok(()) => published.push((home.public_key(), seq)),
            Err(_) => report.refused += 1,
        }
    }
    net.run_for(Duration::from_secs(5));
    if !published.is_empty() {
        report.bytes_per_publish = (record_bytes(net) - before) as f64 / published.len() as f64;
    }
    report.converged = lookup_round(net, comp, rng, &published, opts.lookups);

    // Churn: each chosen node leaves and a new node with a fresh key takes its place.
    let churn = ((comp.len() as f64) * opts.churn).round() as usize;
    let mut victims: Vec<usize> = Vec::new();
    while victims.len() < churn.min(comp.len()) {
        let v = comp[rng.gen_range(0..comp.len())];
        if !victims.contains(&v) {
            victims.push(v);
        }
    }
    for v in &victims {
        net.restart_node(*v);
    }
    report.churned = victims.len();
    let comp2 = super::largest_component(net);
    report.reconvergence = net.wait(Duration::from_millis(250), Duration::from_secs(300), |n| {
        super::converged(n, &comp2)
    });
    // Let keepers hand placements over to the newcomers.
    net.run_for(Duration::from_secs(30));
    report.after_churn = lookup_round(net, &comp2, rng, &published, opts.lookups);
    let held: usize = comp2.iter().map(|i| net.router(*i).records_held()).sum();
    if !published.is_empty() {
        report.copies_per_record = held as f64 / published.len() as f64;
    }
    report
}

/// `n` lookups by random nodes of `comp` for random published keys.
fn lookup_round(
    net: &mut Network,
    comp: &[usize],
    rng: &mut ChaCha8Rng,
    published: &[(PublicKey, u64)],
    n: usize,
) -> LookupRound {
    if published.is_empty() || comp.is_empty() {
        return LookupRound::default();
    }
    net.lookups.clear();
    let before = record_bytes(net);
    let mut asked = Vec::with_capacity(n);
    for _ in 0..n {
        let (key, seq) = published[rng.gen_range(0..published.len())];
        let node = comp[rng.gen_range(0..comp.len())];
        let id = net.lookup(node, key);
        asked.push((node, id, seq));
    }
    net.run_for(Duration::from_secs(10));
    let mut hops = Vec::new();
    for (node, id, seq) in &asked {
        let found = net.lookups.iter().find(|l| l.node == *node && l.id == *id);
        if let Some(l) = found
            && l.record.as_ref().is_some_and(|r| r.seq == *seq)
        {
            hops.push(f64::from(l.hops));
        }
    }
    LookupRound {
        lookups: n,
        success: 100.0 * hops.len() as f64 / n as f64,
        hops_mean: super::mean(&hops),
        hops_p95: super::percentile(&hops, 0.95),
        bytes_per_lookup: (record_bytes(net) - before) as f64 / n as f64,
    }
}
