//! Retry schedules: jittered exponential backoff (backon) for calls that may succeed if tried again (429,
//! 5xx, timeouts), per connection, within one job; and the growing delay of a requeued job between its
//! attempts.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// How one connection's call is retried within a job.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The delays before each retry: `retries` of them, doubling from `min_delay` up to `max_delay`, each
    /// with full jitter added so that connections throttled together do not come back together.
    pub fn schedule(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.retries)
            .with_jitter()
            .build()
    }
}

/// Delay before attempt `attempt` (1 for the first requeue) of a requeued job: `base` doubled per attempt,
/// at most 15 minutes (SQS's delay limit).
pub fn requeue_delay(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor)
        .min(Duration::from_secs(15 * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_grow_and_stop() {
        let policy = RetryPolicy {
            retries: 4,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        };
        let delays: Vec<Duration> = policy.schedule().collect();
        assert_eq!(delays.len(), 4);
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(100)),
            "{delays:?}"
        );
        assert_eq!(
            requeue_delay(Duration::from_secs(2), 1),
            Duration::from_secs(2)
        );
        assert_eq!(
            requeue_delay(Duration::from_secs(2), 3),
            Duration::from_secs(8)
        );
        assert_eq!(
            requeue_delay(Duration::from_secs(2), 40),
            Duration::from_secs(900)
        );
    }
}
