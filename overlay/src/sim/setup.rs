//! What setting up one flow costs the whole network, measured one flow at a time.
//!
//! For each sampled pair (s, d) with no flow yet, s sends a ping (the first contact, by key on
//! the ring), d answers with a pong, and s sends one more datagram; in between, whatever the
//! flow's set-up takes (path searches, their replies, route probes) runs. Every frame of those
//! kinds any node sends in that window is counted, and every node that sent one is touched.
//! Upkeep (announcements, bootstraps, teardowns) runs on meanwhile and is not counted.

use std::time::Duration;

use serde::Serialize;

use crate::sim::network::{Network, PING};
use crate::sim::{mean, percentile};

/// Network-wide cost of setting up one flow.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupCost {
    /// Flows measured.
    pub samples: usize,
    /// Bytes sent network-wide per set-up: mean.
    pub bytes_mean: f64,
    /// Bytes sent network-wide per set-up: 95th percentile.
    pub bytes_p95: f64,
    /// Frames sent network-wide per set-up: mean.
    pub frames_mean: f64,
    /// Frames sent network-wide per set-up: 95th percentile.
    pub frames_p95: f64,
    /// Nodes that sent a frame for the set-up: mean.
    pub touched_mean: f64,
    /// Nodes that sent a frame for the set-up: 95th percentile.
    pub touched_p95: f64,
}

/// Sets up one flow per pair, one after the other, and reports what each cost.
pub(crate) fn measure(net: &mut Network, pairs: &[(usize, usize)]) -> SetupCost {
    let mut bytes = Vec::with_capacity(pairs.len());
    let mut frames = Vec::with_capacity(pairs.len());
    let mut touched = Vec::with_capacity(pairs.len());
    let snapshot = |net: &Network| -> Vec<(u64, u64)> {
        (0..net.len())
            .map(|i| {
                let s = net.sent(i);
                (s.setup_bytes + s.data_bytes, s.setup_frames + s.data_frames)
            })
            .collect()
    };
    for (s, d) in pairs {
        let before = snapshot(net);
        net.send(*s, *d, vec![PING, 0x5e]);
        net.run_for(Duration::from_secs(2));
        net.send(*s, *d, vec![0x02, 0x5e]);
        net.run_for(Duration::from_secs(1));
        let after = snapshot(net);
        let (mut b, mut f, mut t) = (0u64, 0u64, 0usize);
        for (x, y) in before.iter().zip(&after) {
            if y.1 > x.1 {
                b += y.0 - x.0;
                f += y.1 - x.1;
                t += 1;
            }
        }
        bytes.push(b as f64);
        frames.push(f as f64);
        touched.push(t as f64);
    }
    SetupCost {
        samples: pairs.len(),
        bytes_mean: mean(&bytes),
        bytes_p95: percentile(&bytes, 0.95),
        frames_mean: mean(&frames),
        frames_p95: percentile(&frames, 0.95),
        touched_mean: mean(&touched),
        touched_p95: percentile(&touched, 0.95),
    }
}
