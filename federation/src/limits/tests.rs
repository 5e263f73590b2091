//! The token bucket: a burst up to the allowance, then an even refill; origins apart.

use std::time::{Duration, Instant};

use ruma::server_name;

use super::RateLimiter;

#[test]
fn a_burst_is_allowed_up_to_the_allowance_then_refused_until_refilled() {
    let limiter = RateLimiter::new(60);
    let start = Instant::now();
    let origin = server_name!("evil.example");
    for _ in 0..60 {
        assert_eq!(limiter.take(origin, 1, start), Ok(()));
    }
    let wait = limiter.take(origin, 1, start).expect_err("61st refused");
    assert!(
        wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    // Another origin has its own allowance.
    assert_eq!(
        limiter.take(server_name!("other.example"), 1, start),
        Ok(())
    );
    // One second later, one unit has come back, and only one.
    let later = start + Duration::from_secs(1);
    assert_eq!(limiter.take(origin, 1, later), Ok(()));
    assert!(limiter.take(origin, 1, later).is_err());
}

#[test]
fn a_request_over_the_allowance_costs_the_whole_allowance() {
    let limiter = RateLimiter::new(10);
    let now = Instant::now();
    let origin = server_name!("evil.example");
    assert_eq!(limiter.take(origin, 1_000, now), Ok(()));
    assert!(limiter.take(origin, 1, now).is_err());
}
