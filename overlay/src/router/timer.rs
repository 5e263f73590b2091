//! The router's timers: an enum and a table of deadlines, not scattered sleeps.

use std::time::Instant;

/// One kind of timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// As root: re-announce with a new sequence number.
    RootRefresh,
    /// After losing the parent: the hold before choosing a new one ends.
    Reparent,
    /// Send the next ring bootstrap and expire stale ring, breadcrumb and cache entries.
    Bootstrap,
    /// Records: expire, republish our own, hand over to closer nodes, end lookups.
    Records,
}

impl Timer {
    const ALL: [Timer; 4] = [
        Timer::RootRefresh,
        Timer::Reparent,
        Timer::Bootstrap,
        Timer::Records,
    ];
}

/// Deadlines per [`Timer`].
#[derive(Debug, Default, Clone)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; 4],
}

impl TimerTable {
    /// Arms (or re-arms) `timer`.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    /// Disarms `timer`.
    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// The deadline of `timer`, if armed.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the timers due at `now`.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Timer> {
        let mut out = Vec::new();
        for t in Timer::ALL {
            if self.deadlines[t as usize].is_some_and(|d| d <= now) {
                self.deadlines[t as usize] = None;
                out.push(t);
            }
        }
        out
    }
}
