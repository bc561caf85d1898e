//! Pacing arithmetic: how many tokens a worker takes from the shared bucket at once, and how a worker paces
//! itself on its own while the bucket is unreachable.
//!
//! Grants are sized in time, not in calls: a batch is [`GRANT_INTERVAL`] of the fleet's current rate, so
//! the bucket script runs at most about [`GRANTS_PER_SEC`] times a second per busy worker at any rate
//! (fewer at low rates, where a grant is [`MIN_GRANT`] tokens), and a paced worker sleeps until its next
//! grant instead of waking once per delivery.

use std::time::{Duration, Instant};

/// Grants a busy worker asks for per second, whatever the rate.
pub const GRANTS_PER_SEC: u32 = 25;
/// The time one grant covers.
pub const GRANT_INTERVAL: Duration = Duration::from_millis(1000 / GRANTS_PER_SEC as u64);
/// The most tokens one grant carries (at a million a second: 1,000 grants a second fleet-wide).
pub const MAX_BATCH: u32 = 1_000;
/// The fewest tokens one grant carries (unless the burst is smaller): at low rates, and when many workers
/// share a rate, grants are sized in tokens, so one bucket call is spread over at least this many
/// deliveries.
pub const MIN_GRANT: u32 = 20;

/// Tokens taken per round trip at `rate` per second with a bucket of `burst`: [`GRANT_INTERVAL`] of the
/// rate, at least [`MIN_GRANT`], at most [`MAX_BATCH`] and a quarter of the burst (so that a few workers
/// share a burst), and never less than 1.
pub fn batch(rate: u32, burst: u32) -> u32 {
    (rate / GRANTS_PER_SEC)
        .clamp(MIN_GRANT, MAX_BATCH)
        .min(burst / 4)
        .max(1)
}

/// A worker's own token bucket for when the shared one is unreachable: `share` tokens a second, handed
/// out `batch` at a time, the first batch one interval after it starts (a worker that falls back does not
/// burst).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalPace {
    share: f64,
    next: Instant,
}

impl LocalPace {
    /// Pacing at `share` per second from `now`.
    pub fn new(share: f64, now: Instant) -> Self {
        Self { share, next: now }
    }

    /// Tokens a second.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// A new share, keeping the schedule.
    pub fn set_share(&mut self, share: f64) {
        self.share = share;
    }

    /// When `batch` more tokens may be spent, given the time `now`; moves the schedule on by their time.
    /// Time not used is not saved up: after an idle spell the schedule restarts at `now`.
    pub fn next_grant(&mut self, batch: u32, now: Instant) -> Instant {
        let start = self.next.max(now);
        self.next = start + Self::interval(batch, self.share);
        self.next
    }

    /// How long `batch` tokens take at `share` per second (a day when the share is 0).
    pub fn interval(batch: u32, share: f64) -> Duration {
        if share <= 0.0 {
            return Duration::from_secs(86_400);
        }
        Duration::from_secs_f64((f64::from(batch) / share).min(86_400.0))
    }
}

/// The honest share of one worker of `live` when the fleet's rate is `rate`: never more than the fleet's
/// rate in total, however many workers there are.
pub fn honest_share(rate: f64, live: u32) -> f64 {
    rate / f64::from(live.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_follows_the_rate() {
        // 40 ms of the rate.
        assert_eq!(batch(1_000, 500), 40);
        assert_eq!(batch(10_000, 5_000), 400);
        assert_eq!(batch(2_500, 100_000), 100);
        // At low rates, MIN_GRANT tokens (a quarter of the burst if that is less).
        assert_eq!(batch(100, 1_000), MIN_GRANT);
        assert_eq!(batch(500, 1_000), MIN_GRANT);
        assert_eq!(batch(100, 60), 15);
        // Never below one token, never above a quarter of the burst or MAX_BATCH.
        assert_eq!(batch(10, 5), 1);
        assert_eq!(batch(0, 0), 1);
        assert_eq!(batch(10_000, 400), 100);
        assert_eq!(batch(1_000_000, 1_000_000), MAX_BATCH);
        // So the bucket runs GRANTS_PER_SEC times a second at any rate in the batch's range.
        for rate in [500, 1_000, 9_000, 25_000] {
            assert_eq!(rate / batch(rate, rate), GRANTS_PER_SEC, "{rate}");
        }
    }

    #[test]
    fn grants_per_second_of_one_interval_each_make_a_second() {
        assert_eq!(GRANT_INTERVAL * GRANTS_PER_SEC, Duration::from_secs(1));
    }

    #[test]
    fn the_local_pace_spends_the_share_and_no_more() {
        let t0 = Instant::now();
        let mut pace = LocalPace::new(100.0, t0);
        // 10 tokens at 100 a second: one grant every 100 ms, the first after one interval.
        assert_eq!(pace.next_grant(10, t0), t0 + Duration::from_millis(100));
        assert_eq!(pace.next_grant(10, t0), t0 + Duration::from_millis(200));
        assert_eq!(
            pace.next_grant(10, t0 + Duration::from_millis(150)),
            t0 + Duration::from_millis(300)
        );
        // After an idle second, nothing was saved up.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            pace.next_grant(10, later),
            later + Duration::from_millis(100)
        );
        pace.set_share(50.0);
        assert_eq!(pace.share(), 50.0);
        assert_eq!(
            pace.next_grant(10, later),
            later + Duration::from_millis(300)
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(LocalPace::interval(40, 1_000.0), Duration::from_millis(40));
        assert_eq!(LocalPace::interval(1, 0.5), Duration::from_secs(2));
        assert_eq!(LocalPace::interval(1, 0.0), Duration::from_secs(86_400));
    }

    #[test]
    fn twelve_honest_shares_make_the_fleet_rate() {
        let share = honest_share(1_200.0, 12);
        assert_eq!(share, 100.0);
        assert_eq!(honest_share(1_200.0, 0), 1_200.0);
        assert!((share * 12.0 - 1_200.0).abs() < 1e-9);
    }
}
