//! Per-origin rate limits on what a remote server can take from this node's users: one-time
//! key claims (each claimed device counts one) and invites. A token bucket per origin, full at
//! the per-minute allowance and refilled evenly over the minute; a request that would overdraw
//! it is refused whole with the time until it would fit. The limiter reads no clock: callers
//! pass `now`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedServerName, ServerName};

/// Origins with a bucket at once, at most; past this, full buckets are forgotten, then all.
const MAX_TRACKED_ORIGINS: usize = 4096;

/// One origin's allowance.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per origin.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<OwnedServerName, Bucket>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` units per origin and minute (at least one).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` units from `origin`'s allowance at `now`; when they are not there, nothing
    /// is taken and the answer is how long until they would be. A cost above the whole
    /// allowance is counted as the whole allowance.
    pub fn take(&self, origin: &ServerName, cost: u32, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let cost = f64::from(cost.min(self.per_minute));
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= MAX_TRACKED_ORIGINS && !buckets.contains_key(origin) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec < capacity
            });
            if buckets.len() >= MAX_TRACKED_ORIGINS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(origin.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.at = now;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - bucket.tokens) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests;
