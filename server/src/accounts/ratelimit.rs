//! Token buckets keyed by client address or user, for failed logins and registration attempts.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Keys tracked at most; beyond this, full (idle) buckets are forgotten first, then all.
const MAX_KEYS: usize = 10_000;

/// A refused attempt: the caller should wait this long before the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// How long until one more attempt is allowed.
    pub retry_after: Duration,
}

impl RateLimited {
    /// The wait in milliseconds, as `retry_after_ms` wants it.
    pub fn retry_after_ms(&self) -> u64 {
        u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A set of token buckets with one capacity and refill rate.
#[derive(Clone)]
pub(crate) struct RateLimiter {
    capacity: f64,
    per_second: f64,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl RateLimiter {
    /// Buckets holding `capacity` attempts, refilled at `per_second`.
    pub(crate) fn new(capacity: u32, per_second: f64) -> Self {
        Self {
            capacity: f64::from(capacity.max(1)),
            // A rate of zero (or less) would never refill; the smallest one refills in a day.
            per_second: if per_second > 0.0 {
                per_second
            } else {
                1.0 / 86_400.0
            },
            buckets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether `key`'s bucket holds a token, without taking it (or how long to wait).
    pub(crate) fn peek(&self, key: &str, now: Instant) -> Result<(), RateLimited> {
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(bucket) = buckets.get(key) else {
            return Ok(());
        };
        let tokens = refill(bucket, self.capacity, self.per_second, now);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.wait_for(tokens))
        }
    }

    fn wait_for(&self, tokens: f64) -> RateLimited {
        let wait = (1.0 - tokens) / self.per_second;
        RateLimited {
            retry_after: Duration::from_secs_f64(wait.clamp(0.001, 86_400.0)),
        }
    }

    /// Takes one token from `key`'s bucket, or says how long to wait.
    pub(crate) fn check(&self, key: &str, now: Instant) -> Result<(), RateLimited> {
        // A poisoned lock only means another thread panicked mid-update; the map is still
        // usable, so keep limiting rather than fail open or crash.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let (capacity, rate) = (self.capacity, self.per_second);
            buckets.retain(|_, b| refill(b, capacity, rate, now) < capacity);
            if buckets.len() >= MAX_KEYS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        let tokens = refill(bucket, self.capacity, self.per_second, now);
        bucket.updated = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(self.wait_for(tokens))
        }
    }
}

fn refill(bucket: &Bucket, capacity: f64, per_second: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(capacity)
}
