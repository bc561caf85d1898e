//! Account throttle or slow clients: API Gateway answers 429 both when the account's budget is spent and
//! when one client's outbound buffer is full. An account throttle hits whichever connections are being
//! posted to, so its 429s are spread over many; a slow client's come back from the same few. [`Throttles`]
//! keeps the 429s of the last [`WINDOW`] and calls a 429 the account's once they come from [`SPREAD`] or
//! more distinct connections: three slow connections in one second are not an account throttle.

use std::collections::VecDeque;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::time::{Duration, Instant};

/// Distinct connections throttled within [`WINDOW`] from which a 429 counts as account-wide.
pub const SPREAD: usize = 4;
/// How far back the classification looks.
pub const WINDOW: Duration = Duration::from_secs(1);
/// The most 429s remembered (the oldest are forgotten first).
const REMEMBERED: usize = 1024;

/// Which kind of throttle a 429 is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleKind {
    /// Spread over many connections: the account's budget.
    Account,
    /// Concentrated on few connections: their buffers are full.
    Connection,
}

impl ThrottleKind {
    /// The `kind` label of `fanout_throttles_total`.
    pub fn label(self) -> &'static str {
        match self {
            ThrottleKind::Account => "account",
            ThrottleKind::Connection => "connection",
        }
    }
}

/// The 429s of the last [`WINDOW`], by hashed connection id.
#[derive(Debug, Default)]
pub struct Throttles {
    recent: VecDeque<(Instant, u64)>,
}

impl Throttles {
    /// Records a 429 for `connection_id` at `now` and says which kind it is.
    pub fn classify(&mut self, connection_id: &str, now: Instant) -> ThrottleKind {
        let id = BuildHasherDefault::<DefaultHasher>::default().hash_one(connection_id);
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back((now, id));
        let mut distinct: Vec<u64> = Vec::with_capacity(SPREAD);
        for (_, other) in self.recent.iter().rev() {
            if !distinct.contains(other) {
                distinct.push(*other);
                if distinct.len() >= SPREAD {
                    return ThrottleKind::Account;
                }
            }
        }
        ThrottleKind::Connection
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_slow_connections_are_not_the_account() {
        let mut t = Throttles::default();
        let t0 = Instant::now();
        // Three connections, each answering 429 again and again within one second.
        for round in 0..20u64 {
            for id in ["slow-a", "slow-b", "slow-c"] {
                let at = t0 + Duration::from_millis(round * 10);
                assert_eq!(t.classify(id, at), ThrottleKind::Connection, "{id} {round}");
            }
        }
        // A fourth distinct connection within the window makes it the account's budget.
        assert_eq!(
            t.classify("d", t0 + Duration::from_millis(300)),
            ThrottleKind::Account
        );
    }

    #[test]
    fn spread_is_counted_within_the_window_only() {
        let mut t = Throttles::default();
        let t0 = Instant::now();
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(
                t.classify(id, t0 + Duration::from_millis(i as u64)),
                ThrottleKind::Connection
            );
        }
        // Exactly at the edge of the window the first three still count.
        assert_eq!(t.classify("d", t0 + WINDOW), ThrottleKind::Account);
        // Long after, they are forgotten: a lone 429 is a slow client again.
        let later = t0 + WINDOW * 3;
        assert_eq!(t.classify("e", later), ThrottleKind::Connection);
        assert_eq!(t.classify("f", later), ThrottleKind::Connection);
        assert_eq!(t.classify("g", later), ThrottleKind::Connection);
        assert_eq!(t.classify("h", later), ThrottleKind::Account);
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Throttles::default();
        let t0 = Instant::now();
        for _ in 0..5_000 {
            t.classify("same", t0);
        }
        assert_eq!(t.recent.len(), REMEMBERED);
        assert_eq!(t.classify("same", t0), ThrottleKind::Connection);
    }

    #[test]
    fn labels() {
        assert_eq!(ThrottleKind::Account.label(), "account");
        assert_eq!(ThrottleKind::Connection.label(), "connection");
    }
}
