//! Per-peer outgoing queues with named bounds. Control frames and traffic are queued apart;
//! when the traffic queue is full the frame dropped belongs to the source with the most frames
//! queued, so one busy flow cannot starve the others.

use std::collections::VecDeque;

use crate::identity::PublicKey;

/// Most control frames queued for one peer; beyond it the oldest is dropped (a newer
/// announcement or bootstrap supersedes it).
pub const CONTROL_QUEUE_LIMIT: usize = 256;
/// Most traffic frames queued for one peer; beyond it the longest flow loses its oldest frame.
pub const TRAFFIC_QUEUE_LIMIT: usize = 256;

/// The two queues of one peer.
#[derive(Debug, Default)]
pub(crate) struct PeerQueue {
    control: VecDeque<Vec<u8>>,
    traffic: VecDeque<(PublicKey, Vec<u8>)>,
}

impl PeerQueue {
    /// Queues a control frame; true if an older one had to be dropped.
    pub(crate) fn push_control(&mut self, bytes: Vec<u8>) -> bool {
        let dropped = if self.control.len() >= CONTROL_QUEUE_LIMIT {
            self.control.pop_front();
            true
        } else {
            false
        };
        self.control.push_back(bytes);
        dropped
    }

    /// Queues a traffic frame from `src`; true if a frame had to be dropped.
    pub(crate) fn push_traffic(&mut self, src: PublicKey, bytes: Vec<u8>) -> bool {
        let mut dropped = false;
        if self.traffic.len() >= TRAFFIC_QUEUE_LIMIT {
            // Fair drop: the oldest frame of the source with the most frames queued.
            let mut counts: Vec<(PublicKey, usize)> = Vec::new();
            for (s, _) in &self.traffic {
                match counts.iter_mut().find(|(k, _)| k == s) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((*s, 1)),
                }
            }
            if let Some((heavy, _)) = counts.iter().max_by_key(|(_, n)| *n)
                && let Some(i) = self.traffic.iter().position(|(s, _)| s == heavy)
            {
                self.traffic.remove(i);
            }
            dropped = true;
        }
        self.traffic.push_back((src, bytes));
        dropped
    }

    /// The next frame to send: control first. The flag is true for control (reliable).
    pub(crate) fn pop(&mut self) -> Option<(Vec<u8>, bool)> {
        if let Some(c) = self.control.pop_front() {
            return Some((c, true));
        }
        self.traffic.pop_front().map(|(_, b)| (b, false))
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.control.is_empty() && self.traffic.is_empty()
    }

    /// Queued frame counts (control, traffic).
    pub(crate) fn lens(&self) -> (usize, usize) {
        (self.control.len(), self.traffic.len())
    }
}
