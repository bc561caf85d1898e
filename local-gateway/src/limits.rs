//! Rate limits: a lock-free token bucket for the Management API's account throttle (AWS: 10,000 requests
//! a second with a 5,000-request bucket) and for new connections (AWS: 500 a second).
//!
//! The bucket is the generic cell rate algorithm: one atomic "theoretical arrival time" per bucket, moved
//! forward by one emission interval per admitted request, so a check is a clock read and a
//! compare-and-swap, with no lock on the hot path. The size limits (128 KiB messages, 32 KB frames) are
//! enforced where the bytes arrive: the WebSocket codec in [`crate::front`] and the body limit in
//! [`crate::management`].

use crate::config::RateLimit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A token bucket: `burst` requests at once, refilled at `per_sec`.
#[derive(Debug)]
pub struct TokenBucket {
    origin: Instant,
    /// Nanoseconds between two tokens.
    interval_ns: u64,
    /// How far the theoretical arrival time may run ahead of now: `(burst - 1)` intervals.
    tolerance_ns: u64,
    /// Theoretical arrival time of the next request, in nanoseconds since `origin`.
    tat_ns: AtomicU64,
}

impl TokenBucket {
    pub fn new(limit: RateLimit) -> Self {
        let interval_ns = (1e9 / limit.per_sec).max(1.0) as u64;
        Self {
            origin: Instant::now(),
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(limit.burst.saturating_sub(1))),
            tat_ns: AtomicU64::new(0),
        }
    }

    /// Takes a token if one is available.
    pub fn try_acquire(&self) -> bool {
        self.try_acquire_at(self.origin.elapsed().as_nanos() as u64)
    }

    fn try_acquire_at(&self, now_ns: u64) -> bool {
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now_ns);
            if start - now_ns > self.tolerance_ns {
                return false;
            }
            match self.tat_ns.compare_exchange_weak(
                tat,
                start + self.interval_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let bucket = TokenBucket::new(RateLimit {
            per_sec: 10.0,
            burst: 3,
        });
        let t0 = 1_000_000_000;
        assert!((0..3).all(|_| bucket.try_acquire_at(t0)));
        assert!(!bucket.try_acquire_at(t0));
        // One token comes back every 100 ms.
        assert!(!bucket.try_acquire_at(t0 + 99_000_000));
        assert!(bucket.try_acquire_at(t0 + 100_000_000));
        assert!(!bucket.try_acquire_at(t0 + 100_000_000));
        // After a long pause the bucket is full again, never fuller.
        let later = t0 + 10_000_000_000;
        assert!((0..3).all(|_| bucket.try_acquire_at(later)));
        assert!(!bucket.try_acquire_at(later));
    }

    #[test]
    fn a_burst_of_one_is_a_plain_rate() {
        let bucket = TokenBucket::new(RateLimit {
            per_sec: 1000.0,
            burst: 1,
        });
        assert!(bucket.try_acquire_at(5_000_000));
        assert!(!bucket.try_acquire_at(5_000_000));
        assert!(bucket.try_acquire_at(6_000_000));
    }
}
