//! Static peers: configured addresses dialled with exponential back-off.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::identity::PublicKey;

/// First retry delay after a failed or lost static peering.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);

/// Longest delay between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Fraction of the delay added or removed at random, so restarted peers do not dial in step.
pub const BACKOFF_JITTER: f64 = 0.2;

/// A peer named in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPeer {
    /// Its UDP address.
    pub addr: SocketAddr,
    /// Its key if known; a dial then refuses any other key. Otherwise the key is learned.
    pub key: Option<PublicKey>,
}

/// Where one static peer stands.
#[derive(Debug)]
pub struct StaticState {
    /// The configured peer (its key filled in once learned).
    pub peer: StaticPeer,
    /// The current back-off delay.
    pub backoff: Duration,
    /// When to dial next; `None` while dialling or linked.
    pub next_dial: Option<Instant>,
    /// A dial is under way.
    pub dialling: bool,
}

impl StaticState {
    /// A peer to dial at once.
    pub fn new(peer: StaticPeer, now: Instant) -> Self {
        Self {
            peer,
            backoff: BACKOFF_INITIAL,
            next_dial: Some(now),
            dialling: false,
        }
    }

    /// Schedules the next attempt after a failure and doubles the delay.
    pub fn failed(&mut self, now: Instant) {
        self.dialling = false;
        self.next_dial = Some(now + jittered(self.backoff));
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// The link is up: stop dialling and reset the delay.
    pub fn linked(&mut self) {
        self.dialling = false;
        self.next_dial = None;
        self.backoff = BACKOFF_INITIAL;
    }

    /// The link went down: dial again soon.
    pub fn lost(&mut self, now: Instant) {
        if !self.dialling && self.next_dial.is_none() {
            self.next_dial = Some(now + jittered(BACKOFF_INITIAL));
        }
    }
}

/// `d` scaled by a random factor in `1 ± BACKOFF_JITTER`.
fn jittered(d: Duration) -> Duration {
    let factor = rand::thread_rng().gen_range((1.0 - BACKOFF_JITTER)..=(1.0 + BACKOFF_JITTER));
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let now = Instant::now();
        let peer = StaticPeer {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            key: None,
        };
        let mut s = StaticState::new(peer, now);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            s.failed(now);
            let wait = s.next_dial.map(|t| t - now).unwrap_or_default();
            assert!(wait <= BACKOFF_MAX.mul_f64(1.0 + BACKOFF_JITTER));
            last = wait;
        }
        assert!(last >= BACKOFF_MAX.mul_f64(1.0 - BACKOFF_JITTER));
        s.linked();
        assert_eq!(s.backoff, BACKOFF_INITIAL);
        assert_eq!(s.next_dial, None);
        s.lost(now);
        assert!(s.next_dial.is_some());
    }
}
