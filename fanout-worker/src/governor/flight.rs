//! The in-flight cap: how many calls one worker may have awaiting an answer, sized like a congestion
//! controller's window (BBR's two bandwidth-delay products), so that a fleet that starts into a budget far
//! below its configured one (a full bucket grants at once) has few calls in flight when the first 429s
//! come back, and every one of those is a 429.
//!
//! The cap is [`GAIN`] × this worker's share of the fleet's rate × the least round trip seen in the last
//! [`RTT_WINDOW`] (the least, not the mean: a gateway that queues calls answers slower, and a cap that
//! followed would grow with the queue), and never under [`FLOOR`]. The delivery path's own limit
//! (`FANOUT_MAX_IN_FLIGHT`) stays the ceiling. While paced, a worker has about one product in flight, so
//! the cap does not bind.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Bandwidth-delay products a worker may have in flight.
pub const GAIN: f64 = 2.0;
/// The least cap: room for the round trips of a busy machine at low rates.
pub const FLOOR: u32 = 32;
/// How long a least round trip is remembered.
pub const RTT_WINDOW: Duration = Duration::from_secs(10);

/// The least round trip over a sliding window: the least of this window and the one before.
#[derive(Debug, Clone, Copy)]
pub struct MinRtt {
    current: Option<Duration>,
    previous: Option<Duration>,
    since: Instant,
}

impl MinRtt {
    /// No round trip seen yet, the window starting at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            current: None,
            previous: None,
            since: now,
        }
    }

    /// Takes in a round trip seen at `now`.
    pub fn record(&mut self, rtt: Duration, now: Instant) {
        if now.duration_since(self.since) >= RTT_WINDOW {
            self.previous = self.current;
            self.current = None;
            self.since = now;
        }
        self.current = Some(self.current.map_or(rtt, |c| c.min(rtt)));
    }

    /// The least round trip of this window and the one before, if any was seen.
    pub fn get(&self) -> Option<Duration> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The cap for a worker whose share of the fleet's rate is `share` per second, given the least round
/// trip seen.
pub fn cap(share: f64, min_rtt: Option<Duration>) -> u32 {
    let Some(rtt) = min_rtt else { return FLOOR };
    let window = (GAIN * share * rtt.as_secs_f64()).ceil();
    (window.min(f64::from(u32::MAX)) as u32).max(FLOOR)
}

/// Calls in flight and the round trips they took.
#[derive(Debug)]
pub struct Flight {
    outstanding: AtomicU32,
    room: Notify,
    rtt: Mutex<MinRtt>,
}

impl Default for Flight {
    fn default() -> Self {
        Self {
            outstanding: AtomicU32::new(0),
            room: Notify::new(),
            rtt: Mutex::new(MinRtt::new(Instant::now())),
        }
    }
}

/// One call in flight: leaves the count when dropped.
#[derive(Debug)]
pub struct Seat {
    flight: Arc<Flight>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.flight.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.flight.room.notify_one();
    }
}

impl Flight {
    /// Waits until fewer than the cap for `share` per second are in flight, and takes a seat.
    pub async fn enter(self: &Arc<Self>, share: f64) -> Seat {
        loop {
            let room = self.room.notified();
            let cap = cap(share, self.min_rtt());
            let now = self.outstanding.load(Ordering::Acquire);
            if now < cap {
                if self
                    .outstanding
                    .compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Seat {
                        flight: self.clone(),
                    };
                }
                continue;
            }
            room.await;
        }
    }

    /// Takes in a call's round trip.
    pub fn record(&self, rtt: Duration) {
        self.record_at(rtt, Instant::now());
    }

    /// Takes in a call's round trip, answered at `now`.
    pub fn record_at(&self, rtt: Duration, now: Instant) {
        self.rtt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(rtt, now);
    }

    /// The least round trip seen lately.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.rtt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get()
    }

    /// Calls in flight now.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_cap_is_two_bandwidth_delay_products_and_never_under_the_floor() {
        // 10,000/s at 30 ms: 300 a product, 600 in flight.
        assert_eq!(cap(10_000.0, Some(30 * MS)), 600);
        assert_eq!(cap(2_500.0, Some(30 * MS)), 150);
        // A fast gateway or a low rate: the floor.
        assert_eq!(cap(1_000.0, Some(MS)), FLOOR);
        assert_eq!(cap(1_000.0, None), FLOOR);
        assert_eq!(cap(1.0e12, Some(Duration::from_secs(10))), u32::MAX);
        // Just over the floor, rounded up.
        assert_eq!(cap(1_700.0, Some(10 * MS)), 34);
    }

    #[test]
    fn the_least_round_trip_is_remembered_for_a_window_and_then_forgotten() {
        let t0 = Instant::now();
        let mut m = MinRtt::new(t0);
        assert_eq!(m.get(), None);
        m.record(5 * MS, t0);
        m.record(9 * MS, t0 + MS);
        assert_eq!(m.get(), Some(5 * MS));
        // The next window: the last one's least still counts.
        m.record(8 * MS, t0 + RTT_WINDOW);
        assert_eq!(m.get(), Some(5 * MS));
        m.record(2 * MS, t0 + RTT_WINDOW + MS);
        assert_eq!(m.get(), Some(2 * MS));
        // Two windows on, only the latest counts.
        m.record(7 * MS, t0 + 2 * RTT_WINDOW + MS);
        assert_eq!(m.get(), Some(2 * MS));
        m.record(7 * MS, t0 + 3 * RTT_WINDOW + MS);
        assert_eq!(m.get(), Some(7 * MS));
    }

    #[test]
    fn a_seat_is_given_back_when_dropped_and_wakes_a_waiter() {
        let flight = Arc::new(Flight::default());
        // Below the cap a seat is taken at once.
        let seats: Vec<Seat> = (0..FLOOR)
            .map(|_| {
                flight
                    .enter(1.0)
                    .now_or_never()
                    .expect("a free seat at once")
            })
            .collect();
        assert_eq!(flight.outstanding(), FLOOR);
        // At the cap a caller waits, until a seat is given back.
        let mut waiting = Box::pin(flight.enter(1.0));
        assert!((&mut waiting).now_or_never().is_none());
        drop(seats);
        assert_eq!(flight.outstanding(), 0);
        let seat = waiting.now_or_never().expect("a seat given back");
        assert_eq!(flight.outstanding(), 1);
        drop(seat);
        assert_eq!(flight.outstanding(), 0);
        // A higher rate with a slow gateway: more room, 2 × 1,000/s × 100 ms.
        flight.record(100 * MS);
        assert_eq!(flight.min_rtt(), Some(100 * MS));
        let many: Vec<Seat> = (0..200)
            .map(|_| {
                flight
                    .enter(1_000.0)
                    .now_or_never()
                    .expect("within the cap")
            })
            .collect();
        assert_eq!(flight.outstanding(), 200);
        assert!(flight.enter(1_000.0).now_or_never().is_none());
        drop(many);
        assert_eq!(flight.outstanding(), 0);
    }
}
