//! A stalled gateway: calls time out or fail at the network level and nothing answers. One stall is one
//! WARN with its counts when it starts (after [`STALL_AFTER`] without an answer and at least
//! [`STALL_TIMEOUTS`] failed calls), one INFO when the first answer comes back, the
//! `fanout_gateway_stalled` gauge at 1 in between and `fanout_gateway_stalls_total` counting stalls, so a
//! stall is one line and one alert, not a log line per call.

use std::time::{Duration, Instant};

/// How long without any answer, with calls failing, makes a stall.
pub const STALL_AFTER: Duration = Duration::from_secs(2);
/// Failed calls (timeouts, network errors) without an answer in between that make a stall.
pub const STALL_TIMEOUTS: u64 = 3;

/// What changed with one call's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallEvent {
    /// Nothing to report.
    None,
    /// The gateway stalled: `failures` calls failed over `silent` without an answer.
    Started { failures: u64, silent: Duration },
    /// An answer came back after a stall of `lasted`, during which `failures` calls failed.
    Ended { failures: u64, lasted: Duration },
}

/// Tracks answers and failures of Management API calls.
#[derive(Debug)]
pub struct StallWatch {
    last_answer: Instant,
    failures: u64,
    stalled_since: Option<Instant>,
}

impl StallWatch {
    pub fn new(now: Instant) -> Self {
        Self {
            last_answer: now,
            failures: 0,
            stalled_since: None,
        }
    }

    /// Whether the gateway is stalled now.
    pub fn stalled(&self) -> bool {
        self.stalled_since.is_some()
    }

    /// An HTTP answer (any status) at `now`.
    pub fn answer(&mut self, now: Instant) -> StallEvent {
        let failures = std::mem::take(&mut self.failures);
        self.last_answer = now;
        match self.stalled_since.take() {
            Some(since) => StallEvent::Ended {
                failures,
                lasted: now.saturating_duration_since(since),
            },
            None => StallEvent::None,
        }
    }

    /// A call that got no answer (timeout, network failure) at `now`.
    pub fn failure(&mut self, now: Instant) -> StallEvent {
        self.failures += 1;
        let silent = now.saturating_duration_since(self.last_answer);
        if self.stalled_since.is_none() && self.failures >= STALL_TIMEOUTS && silent >= STALL_AFTER
        {
            self.stalled_since = Some(now);
            return StallEvent::Started {
                failures: self.failures,
                silent,
            };
        }
        StallEvent::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_reported_once_and_its_end_once() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(w.answer(at(10)), StallEvent::None);
        // Failures soon after an answer are not a stall yet, nor too few failures after a long silence.
        assert_eq!(w.failure(at(100)), StallEvent::None);
        assert_eq!(w.failure(at(2_009)), StallEvent::None);
        assert!(!w.stalled());
        // The third failure, 2 s after the last answer: a stall.
        assert_eq!(
            w.failure(at(2_010)),
            StallEvent::Started {
                failures: 3,
                silent: STALL_AFTER
            }
        );
        assert!(w.stalled());
        for ms in 2_011..2_100 {
            assert_eq!(w.failure(at(ms)), StallEvent::None);
        }
        assert_eq!(
            w.answer(at(5_010)),
            StallEvent::Ended {
                failures: 92,
                lasted: Duration::from_secs(3)
            }
        );
        assert!(!w.stalled());
        // An answer resets the count: a new stall needs its own failures.
        assert_eq!(w.failure(at(8_000)), StallEvent::None);
        assert_eq!(w.failure(at(8_001)), StallEvent::None);
        assert_eq!(w.answer(at(8_002)), StallEvent::None);
        assert_eq!(w.failure(at(11_000)), StallEvent::None);
    }

    #[test]
    fn many_failures_while_answers_still_come_are_no_stall() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(t0);
        for s in 0..10u64 {
            for _ in 0..10 {
                assert_eq!(w.failure(t0 + Duration::from_secs(s)), StallEvent::None);
            }
            assert_eq!(w.answer(t0 + Duration::from_secs(s)), StallEvent::None);
        }
    }
}
